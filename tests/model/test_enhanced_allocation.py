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
from pciback.policy import build_config_space
from pciback.ports.bus import BarKind
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


def test_helper_built_every_entry_is_laid_out_by_the_sizes_and_is64_bits_before_it() -> None:
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
        (0x24, "entry2_header"),
        (0x28, "entry2_base"),
        (0x2C, "entry2_max_offset"),
    ]
    # after the last of several entries, up to the next capability: the host's
    for rel in range(0x30, 0x40):
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
        0x24: (4, header(2, 8) & HEADER_MASK),
        0x28: (4, 0xFC000000),
        0x2C: (4, 0x00007FFC),
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
    # No entries and the next capability right after: nothing of an entry is laid out, the
    # next capability keeps its own.
    b = endpoint()
    pos = b.cap(0x14, struct.pack("<BB", 0, 0))
    nxt = b.cap(0x05, struct.pack("<HIH", 0, 0, 0))  # a 32-bit MSI at +0x04
    view, _ = b.space()
    assert nxt == pos + 4
    assert {r.reg.name for r in view.registers if r.block == "msi"} >= {"control", "address"}
    assert not view.problems


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


def test_helper_built_a_bridge_has_the_resources_its_entries_fix_as_a_dom0_lists_them() -> None:
    # A dom0 reads a bridge's entries after its fixed buses (+0x08) and, as Linux's
    # pci_ea_read, places each BAR entry at its BAR's index whatever the header has there:
    # entry 0 places BAR 0 (64-bit base 0x1_e0000000, max offset 0xffff, prefetchable
    # memory), entry 1 BAR 2 (0xfd000000, max offset 0xfff), entry 2 the ROM (0xfc000000, max
    # offset 0x7fff).
    b = ConfigBuilder(header_type=1, class_code=0x060400)
    b.cap(0x14, struct.pack("<BBI", 3, 0, 0xFFFF0302) + ENTRY0 + ENTRY1 + ENTRY2)
    _, sim = b.space()
    bars = sim.bars()
    assert (bars[0].kind, bars[0].start, bars[0].size, bars[0].prefetchable) == (
        BarKind.MEM32,
        0x1_E000_0000,
        0x1_0000,
        True,
    )
    assert bars[1].kind is BarKind.UNUSED
    assert (bars[2].kind, bars[2].start, bars[2].size) == (BarKind.MEM32, 0xFD00_0000, 0x1000)
    assert (bars[6].kind, bars[6].start, bars[6].size) == (BarKind.ROM, 0xFC00_0000, 0x8000)
    # BAR 0 stands for the entry: hardwired to 0, a sizing write leaves it so
    sim.write(0x10, 4, 0xFFFFFFFF)
    assert sim.read(0x10, 4) == 0


def test_helper_built_a_bridges_entries_are_not_read_from_where_a_functions_start() -> None:
    # The same bytes read as a function's would take the fixed buses for an entry's header:
    # a bridge whose fixed-bus dword looks like an enabled entry of BAR 1 places nothing there.
    b = ConfigBuilder(header_type=1, class_code=0x060400)
    b.cap(0x14, struct.pack("<BBI", 1, 0, header(2, 1)) + ENTRY0)
    _, sim = b.space()
    assert sim.bars()[1].kind is BarKind.UNUSED
    assert sim.bars()[0].start == 0x1_E000_0000


# -- every entry, chained ------------------------------------------------------------------------
class ReadLog(SimDevice):
    """A function that records every read of its config space."""

    def __init__(self, address: str, config: bytes) -> None:
        super().__init__(address, config)
        self.reads: list[tuple[int, int]] = []

    def read(self, offset: int, size: int) -> int:
        self.reads.append((offset, size))
        return super().read(offset, size)


def entry(
    size: int | None,
    bei: int,
    base: int,
    max_offset: int,
    *,
    base_hi: int | None = None,
    max_hi: int | None = None,
    extra: tuple[int, ...] = (),
    writable: bool = False,
) -> bytes:
    """An entry as the ECN lays it out: header, base, max offset (Is64 in bit 1 of each when an
    upper dword is given), the upper dwords, then `extra` dwords. `size`: the header's entry
    size, None for the one the dwords make (a wrong one is the device's bug)."""
    dwords = [
        base | (2 if base_hi is not None else 0),
        max_offset | (2 if max_hi is not None else 0),
    ]
    dwords += [d for d in (base_hi, max_hi) if d is not None] + list(extra)
    claimed = len(dwords) if size is None else size
    return struct.pack(f"<{1 + len(dwords)}I", header(claimed, bei, writable=writable), *dwords)


# Five entries: 32-bit, 64-bit base only, 64-bit both with an extra dword, 64-bit max offset
# only, 32-bit with two extra dwords.
FIVE = (
    entry(None, 0, 0xE0000000, 0x00000FFC),
    entry(None, 1, 0x80000000, 0x0000FFFC, base_hi=0x00000010),
    entry(None, 2, 0xC0000000, 0xFFFFFFFC, base_hi=0x00000020, max_hi=0x00000001, extra=(0x11,)),
    entry(None, 3, 0xD0000000, 0x0FFFFFFC, max_hi=0x00000002, writable=True),
    entry(None, 4, 0xF0000000, 0x000000FC, extra=(0x22, 0x33)),
)
# (first dword, how many) of each of FIVE's entries, from the first entry's start.
FIVE_DWORDS = ((0, 3), (3, 4), (7, 6), (13, 4), (17, 5))


def _entry_names(view: ConfigSpace, base: int, first: int = 0x04) -> dict[int, str]:
    return {rel - first: name for rel, name in described(view, base) if name.startswith("entry")}


@pytest.mark.parametrize("count", [0, 1, 2, 5])
def test_helper_built_each_counted_entry_is_described_where_the_ones_before_it_end(
    count: int,
) -> None:
    view, _, base = ea_function(b"".join(FIVE), count)
    assert not view.problems
    expect: dict[int, str] = {}
    for i, (first, length) in enumerate(FIVE_DWORDS[:count]):
        names = ["header", "base", "max_offset"]
        entry_bytes = FIVE[i]
        base_is64 = struct.unpack_from("<I", entry_bytes, 4)[0] & 2
        max_is64 = struct.unpack_from("<I", entry_bytes, 8)[0] & 2
        names += ["base_upper"] * bool(base_is64) + ["max_offset_upper"] * bool(max_is64)
        names += [f"extra{k}" for k in range(length - len(names))]
        expect.update({4 * (first + k): f"entry{i}_{n}" for k, n in enumerate(names)})
    assert _entry_names(view, base) == expect


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_helper_built_the_guest_reads_each_entry_as_the_device_has_it_and_writes_none(
    permissive: bool,
) -> None:
    view, sim, base = ea_function(b"".join(FIVE), 5, permissive=permissive)
    data = b"".join(FIVE)
    before = bytes(sim.config)
    for i, (first, length) in enumerate(FIVE_DWORDS):
        for k in range(length):
            rel = 0x04 + 4 * (first + k)
            device = struct.unpack_from("<I", data, 4 * (first + k))[0]
            # reserved bits read 0: the header's 3 and 29:24, bit 0 of base and max offset
            mask = HEADER_MASK if k == 0 else FIELD_MASK if k < 3 else 0xFFFFFFFF
            assert view.read(base + rel, 4) == device & mask, f"entry {i} dword {k}"
            for value in (0xFFFFFFFF, 0, 0x7FFFFFFF):
                view.write(base + rel, 4, value)
                view.write(base + rel + 2, 2, value & 0xFFFF)
                view.write(base + rel + 3, 1, value & 0xFF)
    assert sim.writes == []
    assert bytes(sim.config) == before
    assert view.read(base + 0x04 + 4 * 13, 4) >> 31 == 1  # the writable entry stays enabled


def test_helper_built_a_size_below_the_is64_bits_lays_the_next_entry_after_them() -> None:
    # entry 0 says size 0 but has both upper dwords; entry 1 says 1 with 32-bit fields
    bad0 = entry(0, 0, 0xE0000000, 0xFFC, base_hi=1, max_hi=2)
    bad1 = entry(1, 1, 0xE1000000, 0xFFC)
    view, _, base = ea_function(bad0 + bad1 + FIVE[0], 3)
    assert not view.problems
    names = _entry_names(view, base)
    assert names[0x10] == "entry0_max_offset_upper" and names[0x14] == "entry1_header"
    assert names[0x1C] == "entry1_max_offset" and names[0x20] == "entry2_header"
    assert view.read(base + 0x04 + 0x20, 4) == header(2, 0) & HEADER_MASK


def test_helper_built_a_count_beyond_the_space_lays_out_what_fits_and_reads_nothing_past() -> None:
    # 63 entries claimed (every bit of the count) in a 4 KiB function; 15 three-dword entries
    # fit between +0x04 and the end of the standard space, the 16th would run past it
    b = endpoint(size=4096)
    body = b"".join(entry(None, i & 0xF, 0xE0000000 + (i << 12), 0xFFC) for i in range(15))
    pos = b.cap(0x14, struct.pack("<BB", 63, 0) + body + b"\x00" * 8, at=0x40)
    assert pos + 4 + len(body) + 8 == 0x100
    dev = ReadLog("0000:03:00.0", b.build())
    view = build_config_space(dev)
    names = _entry_names(view, pos)
    assert names[4 * 3 * 14] == "entry14_header" and "entry15_header" not in names.values()
    assert [p for p in view.problems if "ea.entry15" in p and "runs past" in p]
    # the cut entry's bytes, up to the end of the capability: the host's
    for off in range(pos + 4 + len(body), 0x100):
        assert isinstance(view.slot_at(off), HostOwned)
    # nothing of the capability was read past the standard space (0x100: the extended list)
    assert all(off + size <= 0x100 or off == 0x100 for off, size in dev.reads)
    for off in range(pos + 2, 0x100, 4):
        view.write(off & ~3, 4, 0)
    assert dev.writes == []


def test_helper_built_an_entry_running_into_the_next_capability_ends_the_list() -> None:
    # three entries counted, room for two before an MSI capability: the third is not laid out
    # over the MSI registers, and the EA bytes before them stay the host's
    b = endpoint()
    pos = b.cap(0x14, struct.pack("<BB", 3, 0) + FIVE[0] + FIVE[1])
    nxt = b.cap(0x05, struct.pack("<HIH", 0, 0, 0))
    view, _ = b.space(permissive=True)
    assert nxt == pos + 4 + 7 * 4
    assert {r.reg.name for r in view.registers if r.block == "msi"} >= {"control", "address"}
    names = _entry_names(view, pos)
    assert "entry1_base_upper" in names.values() and "entry2_header" not in names.values()
    assert [p for p in view.problems if "ea.entry2" in p and "runs past" in p]


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_helper_built_a_bridges_five_entries_follow_its_fixed_buses(permissive: bool) -> None:
    b = ConfigBuilder(header_type=1, class_code=0x060400)
    pos = b.cap(0x14, struct.pack("<BBI", 5, 0, 0xFFFF0302) + b"".join(FIVE))
    view, sim = b.space(permissive=permissive)
    assert not view.problems
    names = _entry_names(view, pos, first=0x08)
    assert names[4 * 17] == "entry4_header" and names[4 * 21] == "entry4_extra1"
    for rel in range(0x04, 0x08 + 4 * 22, 4):
        view.write(pos + rel, 4, 0)
    assert sim.writes == []


def bare_ea_function(entries: bytes, count: int) -> SimDevice:
    """A function whose only resources are its EA entries' (no header BAR, no size given)."""
    b = ConfigBuilder()
    b.cap(0x14, struct.pack("<BB", 0xC0 | count, 0xFF) + entries)
    return b.space()[1]


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (struct.pack("<IIII", header(3, 0), 0xE0000001, 0x0000FFFD, 0), "size says 3, Is64 give 2"),
        (struct.pack("<II", header(1, 0), 0xE0000001), "size says 1, a base and a max need 2"),
        (
            struct.pack("<IIIII", header(4, 0), 0x00000003, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
            "base and size wrap the 64-bit space",
        ),
    ],
    ids=["size-too-large", "size-too-small", "wraps"],
)
def test_helper_built_an_entry_linux_drops_places_nothing(entry: bytes, why: str) -> None:
    # As Linux's pci_ea_read: an entry whose size field disagrees with its dwords, or whose end
    # wraps, is left out of the function's resources (the next entry still follows it).
    sim = bare_ea_function(entry + ENTRY2, 2)
    assert sim.bars()[0].kind is BarKind.UNUSED, why
    assert (sim.bars()[6].kind, sim.bars()[6].start) == (BarKind.ROM, 0xFC00_0000), why


def test_helper_built_a_reserved_primary_property_takes_the_secondary() -> None:
    # Primary properties 0x08-0xfc are reserved: the secondary ones stand in (Linux); 0xff is
    # no longer one of them (Linux drops such an entry).
    def with_props(primary: int, secondary: int) -> bytes:
        head = header(2, 0) & ~0x00FFFF00 | primary << 8 | secondary << 16
        return struct.pack("<III", head, 0xFD000001, 0x00000FFD)

    reserved = bare_ea_function(with_props(0x08, 0x02), 1)
    assert (reserved.bars()[0].kind, reserved.bars()[0].start) == (BarKind.IO, 0xFD00_0000)
    unavailable = bare_ea_function(with_props(0xFF, 0x00), 1)
    assert unavailable.bars()[0].kind is BarKind.UNUSED
