"""Real dumps with capabilities no QEMU dump carries patched in (MANIFEST.md lists what each
dump has): the capability's bytes are written at an offset the dump leaves zero and linked at
the end of its list, the rest of the dump untouched."""

from __future__ import annotations

from pciback.engine.chain import CAP_ID, CAP_NEXT, EXT_LINK, EXT_NEXT, EXT_START, STD_LINK
from pciback.generated.names import COMMON_HEADER, PCIE, TYPE0
from pciback.sim.device import SimDevice

from .test_physical_reads import dump_named

ADDRESS = "0000:03:00.0"
STATUS = COMMON_HEADER.STATUS.offset  # its low byte holds the capability-list bit
CAPABILITIES_LIST = COMMON_HEADER.STATUS.CAPABILITIES_LIST.mask
POINTER = TYPE0.CAPABILITIES_POINTER.offset


def dump_config(prefix: str) -> bytearray:
    """The bytes of the fixture dump named `prefix*` (the test skips without it)."""
    return bytearray(SimDevice(ADDRESS, dump_named(prefix)).initial)


def _u32(config: bytearray, at: int) -> int:
    return int.from_bytes(config[at : at + 4], "little")


def add_extended(config: bytearray, ident: int, at: int, body: bytes, version: int = 1) -> None:
    """An extended capability at `at` (header, then `body` from +4), last in the list; the
    first when the dump has none (its 0x100 reads 0)."""
    assert not any(config[at : at + EXT_LINK + len(body)]), f"{at:#x} is not free in this dump"
    if _u32(config, EXT_START) == 0:
        assert at == EXT_START, "the first extended capability is at 0x100"
    else:
        last = EXT_START
        while (nxt := EXT_NEXT.get(_u32(config, last))) != 0:
            last = nxt
        linked = _u32(config, last) | at << EXT_NEXT.shift
        config[last : last + EXT_LINK] = linked.to_bytes(EXT_LINK, "little")
    config[at : at + EXT_LINK] = (ident | version << 16).to_bytes(EXT_LINK, "little")
    config[at + EXT_LINK : at + EXT_LINK + len(body)] = body


def add_standard(config: bytearray, ident: int, at: int, body: bytes) -> None:
    """A standard capability at `at` (ID, next, then `body` from +2), last in the list; the
    status register's capability-list bit set."""
    assert not any(config[at : at + STD_LINK + len(body)]), f"{at:#x} is not free in this dump"
    if config[STATUS] & CAPABILITIES_LIST and config[POINTER]:
        last = config[POINTER]
        while config[last + CAP_NEXT]:
            last = config[last + CAP_NEXT]
        config[last + CAP_NEXT] = at
    else:
        config[STATUS] |= CAPABILITIES_LIST
        config[POINTER] = at
    config[at + CAP_ID], config[at + CAP_NEXT] = ident, 0
    config[at + STD_LINK : at + STD_LINK + len(body)] = body


def pcie_offset(config: bytearray) -> int:
    pos = config[POINTER]
    while config[pos + CAP_ID] != PCIE.id:
        pos = config[pos + CAP_NEXT]
        assert pos, "no PCIe capability"
    return pos


def device(config: bytearray) -> SimDevice:
    return SimDevice(ADDRESS, bytes(config))
