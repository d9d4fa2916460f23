"""Enhanced Allocation (ID 0x14) on real hardware: a Cavium ThunderX NIC, whose resources are
all EA entries (its header BARs are zero), from pciutils' test data
(tests/fixtures/pciutils/README.md). tests/model/test_enhanced_allocation.py holds the
policy to functions built byte by byte; this holds it to bytes no one here chose.

The entries are found by the ECN's rule (entry i + 1 starts 1 + entry size dwords after entry
i's header), which the test applies itself; the registers' offsets within an entry are the
policy's names.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pciback.dumps import load_config
from pciback.engine import ConfigSpace
from pciback.engine.chain import STD_END, walk
from pciback.engine.space import ChainLink, HostOwned
from pciback.generated.names import ARI, EA, EA_ENTRY, MSIX, PCIE, SRIOV, TYPE0, VSEC
from pciback.policy import build_config_space
from pciback.ports.bus import BarKind
from pciback.sim.device import SimDevice

from .builders import PCIUTILS, aligned_accesses, dump_view

THUNDERX = PCIUTILS / "cavium-thunderx-nic-177d-a01e-ea.lspci.txt"
HEADER, BASE, MAX_OFFSET = EA_ENTRY.HEADER, EA_ENTRY.BASE, EA_ENTRY.MAX_OFFSET
DWORD = HEADER.width
FUNCTION_BARS = 6  # BAR equivalents 0-5 stand for the function's BARs (the ECN's BEI table)


@dataclass(frozen=True)
class Entry:
    start: int  # the header's offset in config space
    size: int  # the header's entry size: dwords after the header
    bar: int  # BAR equivalent
    base_is64: int
    max_is64: int
    enabled: bool
    resource: int  # bytes: the maximum offset (its low two bits implied set), plus one
    base: int  # where the resource starts


def thunderx(*, permissive: bool = False) -> tuple[ConfigSpace, SimDevice, int]:
    view, sim = dump_view(THUNDERX, permissive=permissive)
    pos = view.capability_offset(EA.id)
    assert pos is not None
    return view, sim, pos


def entries(sim: SimDevice, pos: int) -> list[Entry]:
    """The device's entries, read from its bytes by the ECN's chaining rule."""
    count = EA.ENTRIES.COUNT.get(sim.read(pos + EA.ENTRIES.offset, EA.ENTRIES.width))
    at = pos + EA.RESERVED.offset + EA.RESERVED.width  # the count's dword, then the entries
    found: list[Entry] = []
    for _ in range(count):
        header = sim.read(at + HEADER.offset, HEADER.width)
        base = sim.read(at + BASE.offset, BASE.width)
        base_is64 = BASE.IS64.get(base)
        if base_is64:
            base |= sim.read(at + EA_ENTRY.BASE_UPPER.offset, EA_ENTRY.BASE_UPPER.width) << 32
        max_offset = sim.read(at + MAX_OFFSET.offset, MAX_OFFSET.width)
        max_is64 = MAX_OFFSET.IS64.get(max_offset)
        upper = 0
        if max_is64:
            at_upper = at + EA_ENTRY.MAX_OFFSET_UPPER.offset(base_is64=base_is64)
            upper = sim.read(at_upper, EA_ENTRY.MAX_OFFSET_UPPER.width)
        low = max_offset & MAX_OFFSET.OFFSET.mask | 0b11  # its two low bits: implied 1s
        size = HEADER.ENTRY_SIZE.get(header)
        found.append(
            Entry(
                start=at,
                size=size,
                bar=HEADER.BAR_EQUIVALENT.get(header),
                base_is64=base_is64,
                max_is64=max_is64,
                enabled=bool(HEADER.ENABLE.get(header)),
                resource=(upper << 32 | low) + 1,
                base=base >> BASE.ADDRESS.shift << BASE.ADDRESS.shift,  # less its flag bits
            )
        )
        at += DWORD * (1 + size)
    return found


def entry_layout(entry: Entry, index: int) -> list[tuple[int, str]]:
    """(offset in config space, register name) of what dsl/ea.pci describes in an entry."""
    layout = [(HEADER.offset, "header"), (BASE.offset, "base"), (MAX_OFFSET.offset, "max_offset")]
    if entry.base_is64:
        layout.append((EA_ENTRY.BASE_UPPER.offset, "base_upper"))
    if entry.max_is64:
        upper = EA_ENTRY.MAX_OFFSET_UPPER.offset(base_is64=entry.base_is64)
        layout.append((upper, "max_offset_upper"))
    return [(entry.start + rel, f"entry{index}_{name}") for rel, name in layout]


def described(view: ConfigSpace) -> list[tuple[int, str]]:
    return sorted((r.offset, r.reg.name) for r in view.registers if r.block == "ea")


def test_the_dump_loads_as_the_function_with_its_lists() -> None:
    dump = load_config(THUNDERX)
    assert (dump.address, len(dump.config)) == ("0002:01:00.0", 4096)
    chains = walk(SimDevice("0002:01:00.0", dump.config).read, len(dump.config))
    assert not chains.problems
    assert [c.ident for c in chains.standard] == [PCIE.id, MSIX.id, EA.id]
    assert [c.ident for c in chains.extended] == [ARI.id, VSEC.id, SRIOV.id]


def test_the_dump_holds_four_enabled_64_bit_entries_and_no_header_bars() -> None:
    # What the rest of this module leans on, read from the bytes themselves.
    _, sim, pos = thunderx()
    found = entries(sim, pos)
    assert [e.bar for e in found] == [0, 4, 9, 13]  # BAR 0, BAR 4, VF BAR 0, VF BAR 4
    assert all(e.enabled and e.base_is64 and e.max_is64 for e in found)
    assert all(e.size == 4 for e in found)  # header + four dwords: no extra ones
    assert found[-1].start + DWORD * (1 + found[-1].size) < STD_END  # room after the last
    bars = [TYPE0.BAR0.offset + TYPE0.BAR0.width * i for i in range(FUNCTION_BARS)]
    assert not any(sim.read(bar, TYPE0.BAR0.width) for bar in bars)  # the BARs are EA's


def test_every_entry_is_laid_out_where_the_ecn_chains_it() -> None:
    view, sim, pos = thunderx()
    expect = [(pos + EA.ENTRIES.offset, "entries"), (pos + EA.RESERVED.offset, "reserved")]
    for i, entry in enumerate(entries(sim, pos)):
        expect += entry_layout(entry, i)
    assert described(view) == sorted(expect)
    # After the last of several entries, up to the end of the standard space (EA ends the
    # list): the host's.
    last = entries(sim, pos)[-1]
    for off in range(last.start + DWORD * (1 + last.size), STD_END):
        assert isinstance(view.slot_at(off), HostOwned), f"{off:#x}"


def test_the_guest_sees_the_capability_in_its_chain() -> None:
    view, _, pos = thunderx()
    guest = walk(view.read, view.size)
    assert not guest.problems
    assert (EA.id, pos) in [(c.ident, c.offset) for c in guest.standard]
    assert isinstance(view.slot_at(pos), ChainLink)


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_every_byte_of_the_capability_reads_as_the_device_has_it(permissive: bool) -> None:
    # The reserved bits of this device are 0, so a read that keeps them at 0 reads its bytes.
    view, sim, pos = thunderx(permissive=permissive)
    for off, size in aligned_accesses(pos, STD_END):
        assert view.read(off, size) == sim.read(off, size), f"{off:#x}/{size}"


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_no_guest_write_to_the_capability_reaches_the_device(permissive: bool) -> None:
    view, sim, pos = thunderx(permissive=permissive)
    before = bytes(sim.config)
    seen = [view.read(off, 1) for off in range(pos, STD_END)]
    for off, size in aligned_accesses(pos, STD_END):
        ones = (1 << 8 * size) - 1
        # all zeros clears each enable, all ones sets each reserved bit, the complement flips all
        for value in (0, ones, ~view.read(off, size) & ones):
            view.write(off, size, value)
    assert sim.writes == [] and sim.history == []
    assert bytes(sim.config) == before
    assert [view.read(off, 1) for off in range(pos, STD_END)] == seen


def test_the_enable_is_read_live_and_what_the_ecn_fixes_is_read_once() -> None:
    # dsl/ea.pci: every field is read once at seize but the enable, which the host (whoever
    # holds it) may turn off on a writable entry; the guest sees that at once.
    view, sim, pos = thunderx()
    for entry in entries(sim, pos):
        at = entry.start + HEADER.offset
        seen = view.read(at, HEADER.width)
        for mask in (HEADER.ENABLE.mask, HEADER.BAR_EQUIVALENT.mask):
            value = sim.read(at, HEADER.width) ^ mask
            sim.config[at : at + HEADER.width] = value.to_bytes(HEADER.width, "little")
        assert view.read(at, HEADER.width) == seen ^ HEADER.ENABLE.mask, f"{at:#x}"
    assert sim.writes == []


def test_the_function_has_the_resources_its_entries_fix_as_a_dom0_lists_them() -> None:
    # A dom0's PCI core reads the entries at probe and lists what they place in sysfs
    # `resource`, with no 64-bit mark; the simulated function gives the same, and its header
    # BARs stay hardwired to 0.
    _, sim, pos = thunderx()
    fixed = {e.bar: e for e in entries(sim, pos) if e.enabled and e.bar < FUNCTION_BARS}
    assert sorted(fixed) == [0, 4]
    for bar in sim.bars()[:FUNCTION_BARS]:
        entry = fixed.get(bar.index)
        if entry is None:
            assert bar.kind is BarKind.UNUSED
            continue
        assert (bar.kind, bar.size, bar.prefetchable) == (BarKind.MEM32, entry.resource, False)
        assert bar.start == entry.base
        header_bar = TYPE0.BAR0.offset + TYPE0.BAR0.width * bar.index
        sim.write(header_bar, TYPE0.BAR0.width, 0xFFFFFFFF)
        assert sim.read(header_bar, TYPE0.BAR0.width) == 0


def test_msix_in_a_bar_an_entry_places_is_exposed() -> None:
    # The table and PBA are in BAR 4, which this function has only as an EA entry.
    view, sim, _ = thunderx()
    assert not view.problems
    assert [c.ident for c in walk(view.read, view.size).standard] == [PCIE.id, MSIX.id, EA.id]
    assert sim.history == []


def test_a_guest_sizing_a_bar_an_entry_places_learns_the_entrys_size() -> None:
    # As through Linux's backend, which answers sizing from the function's resources.
    view, sim, pos = thunderx()
    bar0 = next(e for e in entries(sim, pos) if e.bar == 0)
    view.write(TYPE0.BAR0.offset, TYPE0.BAR0.width, 0xFFFFFFFF)
    assert view.read(TYPE0.BAR0.offset, TYPE0.BAR0.width) == (1 << 32) - bar0.resource
    view.write(TYPE0.BAR0.offset, TYPE0.BAR0.width, 0)
    assert view.read(TYPE0.BAR0.offset, TYPE0.BAR0.width) == 0
    assert sim.history == []


def test_an_entry_turned_off_places_no_resource() -> None:
    # A dom0 keeps only what enabled entries place: BAR 0's entry off, BAR 0 is gone and MSI-X
    # (in BAR 4) stays.
    _, sim, pos = thunderx()
    first = entries(sim, pos)[0]
    config = bytearray(sim.config)
    at = first.start + HEADER.offset
    header = int.from_bytes(config[at : at + HEADER.width], "little")
    config[at : at + HEADER.width] = HEADER.ENABLE.put(header, 0).to_bytes(HEADER.width, "little")
    off = SimDevice(sim.address, bytes(config))
    assert off.bars()[first.bar].kind is BarKind.UNUSED
    assert off.bars()[4] == sim.bars()[4]
    assert MSIX.id in [
        c.ident for c in walk(build_config_space(off).read, off.config_size).standard
    ]
