"""Enhanced Allocation (ID 0x14): the entry count, a bridge's fixed buses and the entries, on
functions built by the test helper (tests/model/builders.py): no dump in ../shared/fixtures
carries the capability (its MANIFEST.md lists none).

Layout (the EA ECN, as Linux's pci_regs.h names it): the count in bits 5:0 of +0x02; the
entries from +0x04 (+0x08 in a bridge, after the fixed secondary and subordinate buses). An
entry: a header dword (entry size [2:0], bit 3 reserved, BAR equivalent [7:4], primary
properties [15:8], secondary properties [23:16], [29:24] reserved, writable [30], enable [31]),
the base and the maximum offset (bit 0 reserved, bit 1 Is64, [31:2]), then the base's upper
dword if its Is64 is set and the maximum offset's if its is. Written here independently of
dsl/.

A guest reads every field but the reserved bits, and no write of its own reaches the device in
any mode (Linux reads the entries at probe and never writes them); everything but an entry's
enable is read once at seize.
"""

from __future__ import annotations

import struct

import pytest

from pciback.engine import ConfigSpace
from pciback.engine.registers import RegisterInstance
from pciback.engine.space import HostOwned
from pciback.sim.device import SimDevice

from .builders import ConfigBuilder, endpoint

HEADER_MASK = 0xC0FFFFF7  # the reserved bits 3 and 29:24 read 0
FIELD_MASK = 0xFFFFFFFE  # base and max offset: bit 0 reserved


def header(size: int, bei: int, enable: bool = True, writable: bool = False) -> int:
    # reserved bits set on the device, so that reading them as 0 shows
    return 0x3F000008 | size | bei << 4 | 0x01 << 8 | 0x01 << 16 | writable << 30 | enable << 31


# Entry 0: 64-bit base and 64-bit max offset (size 4); entry 1: 32-bit (size 2); entry 2 too.
ENTRY0 = struct.pack("<IIIII", header(4, 0), 0xE0000003, 0x0000FFFF, 0x00000001, 0x00000000)
ENTRY1 = struct.pack("<III", header(2, 2, writable=True), 0xFD000001, 0x00000FFD)
ENTRY2 = struct.pack("<III", header(2, 8), 0xFC000001, 0x00007FFD)


def ea_function(
    entries: bytes, count: int, *, permissive: bool = False
) -> tuple[ConfigSpace, SimDevice, int]:
    b = endpoint()
    pos = b.cap(0x14, struct.pack("<BB", 0xC0 | count, 0xFF) + entries)
    view, sim = b.space(permissive=permissive)
    return view, sim, pos


def described(view: ConfigSpace, base: int) -> list[tuple[int, str]]:
    return sorted((r.offset - base, r.reg.name) for r in view.registers if r.block.startswith("ea"))


def test_helper_built_the_first_two_entries_are_laid_out_by_sizes_and_is64_bits() -> None:
    view, _, base = ea_function(ENTRY0 + ENTRY1 + ENTRY2, 3)
    assert not view.problems
    assert described(view, base) == [
        (0x02, "entries"),
        (0x03, "reserved"),
        (0x04, "entry0_header"),
        (0x08, "entry0_base"),
        (0x0C, "entry0_max_offset"),
        (0x10, "entry0_base_upper"),
        (0x14, "entry0_max_offset_upper"),
        (0x18, "entry1_header"),
        (0x1C, "entry1_base"),
        (0x20, "entry1_max_offset"),
    ]
    # the third entry, after the second: the rest of the capability, the host's
    for rel in range(0x24, 0x30):
        assert isinstance(view.slot_at(base + rel), HostOwned)


def test_helper_built_the_guest_reads_every_field_but_the_reserved_bits() -> None:
    view, sim, base = ea_function(ENTRY0 + ENTRY1 + ENTRY2, 3)
    expect = {
        0x02: (1, 0x03),
        0x03: (1, 0),
        0x04: (4, header(4, 0) & HEADER_MASK),
        0x08: (4, 0xE0000002),
        0x0C: (4, 0x0000FFFE),
        0x10: (4, 0x00000001),
        0x14: (4, 0x00000000),
        0x18: (4, header(2, 2, writable=True) & HEADER_MASK),
        0x1C: (4, 0xFD000000),
        0x20: (4, 0x00000FFC),
        0x24: (4, header(2, 8)),  # the rest: as the device holds it
    }
    for rel, (size, value) in expect.items():
        assert view.read(base + rel, size) == value, f"{rel:#x}"
    assert sim.read(base + 0x04, 4) & ~HEADER_MASK  # the device has the reserved bits set


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_helper_built_no_guest_write_reaches_the_entries(permissive: bool) -> None:
    view, sim, base = ea_function(ENTRY0 + ENTRY1 + ENTRY2, 3, permissive=permissive)
    before = bytes(sim.config)
    for rel in range(0x04, 0x30, 4):
        for value in (0xFFFFFFFF, 0, 0x7FFFFFFF):  # the last clears each enable
            view.write(base + rel, 4, value)
    view.write(base + 0x02, 2, 0)
    assert sim.writes == []
    assert bytes(sim.config) == before
    assert view.read(base + 0x18, 4) >> 31 == 1  # the writable entry stays enabled


def test_helper_built_what_the_ecn_fixes_is_read_once_and_the_enable_stays_live() -> None:
    view, sim, base = ea_function(ENTRY0 + ENTRY1 + ENTRY2, 3)
    seen = {rel: view.read(base + rel, 4) for rel in range(0x04, 0x24, 4)}
    for off in range(base + 0x04, base + 0x24):
        sim.config[off] ^= 0x7C  # every field but the reserved bits, Is64 and the enable
    assert {rel: view.read(base + rel, 4) for rel in seen} == seen
    # entry 1 is writable: whoever turns it off on the host, the guest sees it
    sim.config[base + 0x1B] ^= 0x80
    assert view.read(base + 0x18, 4) == seen[0x18] ^ 0x80000000


def test_helper_built_a_32_bit_first_entry_puts_the_second_after_its_max_offset() -> None:
    entry0 = struct.pack("<III", header(2, 0), 0xE0000001, 0x0000FFFD)
    view, _, base = ea_function(entry0 + ENTRY1, 2)
    assert not view.problems
    names = described(view, base)
    assert (0x10, "entry1_header") in names and (0x18, "entry1_max_offset") in names
    assert not [n for _, n in names if "upper" in n or "extra" in n]


def test_helper_built_an_entry_longer_than_its_fields_has_its_extra_dwords_described() -> None:
    # size 3 for a 32-bit entry: one dword the ECN does not define, the entry's all the same
    entry0 = struct.pack("<IIII", header(3, 0), 0xE0000001, 0x0000FFFD, 0xA5A5A5A5)
    view, sim, base = ea_function(entry0 + ENTRY1, 2, permissive=True)
    names = described(view, base)
    assert (0x10, "entry0_extra0") in names and (0x14, "entry1_header") in names
    assert view.read(base + 0x10, 4) == 0xA5A5A5A5
    view.write(base + 0x10, 4, 0)
    assert sim.writes == []


def test_helper_built_a_single_entry_leaves_what_follows_the_capability_alone() -> None:
    # one 32-bit entry, then a register of the function's own after the capability: no rest
    entry0 = struct.pack("<III", header(2, 0), 0xE0000001, 0x0000FFFD)
    view, sim, base = ea_function(entry0 + b"\x5a" * 8, 1, permissive=True)
    assert not isinstance(view.slot_at(base + 0x10), RegisterInstance | HostOwned)
    view.write(base + 0x10, 4, 0)
    assert sim.writes == [(base + 0x10, 4, 0)]  # the engine default, as Linux


def test_helper_built_an_empty_list_followed_by_a_capability_leaves_it_its_bytes() -> None:
    # No entries and the next capability right after: the first entry's registers, always
    # described, do not fit and yield; the next capability keeps its own.
    b = endpoint()
    pos = b.cap(0x14, struct.pack("<BB", 0, 0))
    nxt = b.cap(0x05, struct.pack("<HIH", 0, 0, 0))  # a 32-bit MSI at +0x04
    view, _ = b.space()
    assert nxt == pos + 4
    assert {r.reg.name for r in view.registers if r.block == "msi"} >= {"control", "address"}
    assert all("ea.entry0" in p and "does not fit" in p for p in view.problems)


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_helper_built_a_bridges_entries_follow_its_fixed_buses(permissive: bool) -> None:
    b = ConfigBuilder(header_type=1, class_code=0x060400)
    pos = b.cap(0x14, struct.pack("<BBI", 2, 0, 0xFFFF0302) + ENTRY0 + ENTRY1)
    view, sim = b.space(permissive=permissive)
    assert not view.problems
    names = described(view, pos)
    assert (0x04, "fixed_buses") in names and (0x08, "entry0_header") in names
    assert (0x14, "entry0_base_upper") in names and (0x1C, "entry1_header") in names
    assert view.read(pos + 0x04, 4) == 0x00000302
    assert view.read(pos + 0x0C, 4) == 0xE0000002
    for rel in range(0x04, 0x28, 4):
        view.write(pos + rel, 4, 0)
    assert sim.writes == []
