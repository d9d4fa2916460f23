"""Real dumps with capabilities no QEMU dump carries patched in (MANIFEST.md lists what each
dump has): the capability's bytes are written at an offset the dump leaves zero and linked at
the end of its list, the rest of the dump untouched."""

from __future__ import annotations

from pciback.sim.device import SimDevice

from .test_physical_reads import dump_named

ADDRESS = "0000:03:00.0"


def dump_config(prefix: str) -> bytearray:
    """The bytes of the fixture dump named `prefix*` (the test skips without it)."""
    return bytearray(SimDevice(ADDRESS, dump_named(prefix)).initial)


def _u32(config: bytearray, at: int) -> int:
    return int.from_bytes(config[at : at + 4], "little")


def add_extended(config: bytearray, ident: int, at: int, body: bytes, version: int = 1) -> None:
    """An extended capability at `at` (header, then `body` from +4), last in the list; the
    first when the dump has none (its 0x100 reads 0)."""
    assert not any(config[at : at + 4 + len(body)]), f"{at:#x} is not free in this dump"
    if _u32(config, 0x100) == 0:
        assert at == 0x100, "the first extended capability is at 0x100"
    else:
        last = 0x100
        while (nxt := _u32(config, last) >> 20) != 0:
            last = nxt
        config[last : last + 4] = (_u32(config, last) | at << 20).to_bytes(4, "little")
    config[at : at + 4] = (ident | version << 16).to_bytes(4, "little")
    config[at + 4 : at + 4 + len(body)] = body


def add_standard(config: bytearray, ident: int, at: int, body: bytes) -> None:
    """A standard capability at `at` (ID, next, then `body` from +2), last in the list; the
    status register's capability-list bit set."""
    assert not any(config[at : at + 2 + len(body)]), f"{at:#x} is not free in this dump"
    if config[0x06] & 0x10 and config[0x34]:
        last = config[0x34]
        while config[last + 1]:
            last = config[last + 1]
        config[last + 1] = at
    else:
        config[0x06] |= 0x10
        config[0x34] = at
    config[at], config[at + 1] = ident, 0
    config[at + 2 : at + 2 + len(body)] = body


def pcie_offset(config: bytearray) -> int:
    pos = config[0x34]
    while config[pos] != 0x10:
        pos = config[pos + 1]
        assert pos, "no PCIe capability"
    return pos


def device(config: bytearray) -> SimDevice:
    return SimDevice(ADDRESS, bytes(config))
