"""PCI-X (ID 0x07) on real hardware: a Broadcom BCM5703X NIC (a function's layout) and two
AMD-8131 PCI-X bridges (a bridge's layout, followed by HyperTransport), from an lspci listing
posted to linux-kernel (tests/fixtures/lkml/README.md). tests/model/test_pcix_ecc.py builds
PCI-X 2.0 functions byte by byte; these parts are PCI-X 1.0 (version 0), so this holds the
policy to bytes no one here chose, without ECC registers.

Where each register lies is the policy's name for it; that the names lay the capability out
as the PCI-X addendum does (the link, then each register right after the one before) is
checked here, as is what each field does with a guest's write: the decision of each field is
typed below, independently of dsl/pcix.pci, so that a changed access in the policy fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeAlias

import pytest

from pciback.dumps import load_config
from pciback.engine import ConfigSpace
from pciback.engine.chain import CAP_ID, CAP_NEXT, POINTER, STD_END, STD_LINK, walk
from pciback.engine.space import ChainLink, HostOwned
from pciback.generated.names import HT, MSI, PCIX, PCIX_BRIDGE, PM, TYPE1, VPD
from pciback.sim.device import SimDevice
from pciback.tables import Bits

from .builders import (
    DecidedRegister,
    aligned_accesses,
    assert_engine_default,
    decided,
    dump_view,
    field_accesses,
)
from .test_hypertransport_dump import BODIES as HT_BODIES

LKML = Path(__file__).resolve().parents[1] / "fixtures" / "lkml"
NIC = LKML / "broadcom-bcm5703x-14e4-16a7-pcix.lspci.txt"
BRIDGE_LINK = LKML / "amd-8131-1022-7450-pcix-ht-link.lspci.txt"  # 08:03.0
BRIDGE = LKML / "amd-8131-1022-7450-pcix.lspci.txt"  # 08:04.0
DUMPS = [NIC, BRIDGE_LINK, BRIDGE]
BRIDGES = [BRIDGE_LINK, BRIDGE]


def ids(paths: list[Path]) -> list[str]:
    return [p.name.removesuffix(".lspci.txt") for p in paths]


class Decision(Enum):
    HOST = "read from the device, never written by a guest, in any mode"
    PERMISSIVE = "the guest's in permissive mode only"
    RW1C = "a 1 from the guest clears the device's bit, in any mode"
    VIRTUAL = "the guest's own copy, in any mode: it reads back its write, the device never sees it"


Reg: TypeAlias = DecidedRegister[Decision]
reg = decided


HOST, PERMISSIVE, RW1C, VIRTUAL = (
    Decision.HOST,
    Decision.PERMISSIVE,
    Decision.RW1C,
    Decision.VIRTUAL,
)

# A function's: what only its own transactions depend on is the guest's in permissive mode, the
# split completion errors it logs are its driver's to acknowledge, the rest is what the
# function is (its capabilities and the bus number it captured) or the host's error handling.
FUNCTION = (
    reg(
        "command",
        PCIX.COMMAND,
        {
            "DATA_PARITY_RECOVERY": VIRTUAL,
            "RELAXED_ORDERING": PERMISSIVE,
            "MAX_READ_BYTE_COUNT": PERMISSIVE,
            "MAX_OUTSTANDING_SPLIT": PERMISSIVE,
            "VERSION": HOST,
        },
    ),
    reg(
        "status",
        PCIX.STATUS,
        {
            "FUNCTION": HOST,
            "DEVICE": HOST,
            "BUS": HOST,
            "BITS64": HOST,
            "MHZ133": HOST,
            "SPLIT_DISCARDED": RW1C,
            "UNEXPECTED_SPLIT": RW1C,
            "COMPLEX": HOST,
            "DESIGNED_READ_BYTE_COUNT": HOST,
            "DESIGNED_OUTSTANDING_SPLIT": HOST,
            "DESIGNED_CUMULATIVE_READ": HOST,
            "SPLIT_ERROR_MESSAGE": RW1C,
            "MODE2_266": HOST,
            "MODE2_533": HOST,
        },
    ),
)


def _all_host(names: Any) -> dict[str, Decision]:
    return {n: HOST for n, v in vars(names).items() if isinstance(v, Bits)}


# A bridge's: both of its buses and its buffers are the host's, every field of them.
BRIDGE_REGISTERS = (
    reg("secondary_status", PCIX_BRIDGE.SECONDARY_STATUS, _all_host(PCIX_BRIDGE.SECONDARY_STATUS)),
    reg("bridge_status", PCIX_BRIDGE.BRIDGE_STATUS, _all_host(PCIX_BRIDGE.BRIDGE_STATUS)),
    reg(
        "upstream_split_control",
        PCIX_BRIDGE.UPSTREAM_SPLIT_CONTROL,
        _all_host(PCIX_BRIDGE.UPSTREAM_SPLIT_CONTROL),
    ),
    reg(
        "downstream_split_control",
        PCIX_BRIDGE.DOWNSTREAM_SPLIT_CONTROL,
        _all_host(PCIX_BRIDGE.DOWNSTREAM_SPLIT_CONTROL),
    ),
)


@dataclass(frozen=True)
class Kind:
    block: str  # the policy's table for it
    other: str  # the table for the other layout, which must describe nothing here
    registers: tuple[Reg, ...]
    version: Bits
    version_at: int  # the register holding the version, from the capability's start
    version_width: int


FUNCTION_KIND = Kind(
    "pcix", "pcix_bridge", FUNCTION, PCIX.COMMAND.VERSION, PCIX.COMMAND.offset, PCIX.COMMAND.width
)
BRIDGE_KIND = Kind(
    "pcix_bridge",
    "pcix",
    BRIDGE_REGISTERS,
    PCIX_BRIDGE.SECONDARY_STATUS.VERSION,
    PCIX_BRIDGE.SECONDARY_STATUS.offset,
    PCIX_BRIDGE.SECONDARY_STATUS.width,
)
KINDS = {NIC: FUNCTION_KIND, BRIDGE_LINK: BRIDGE_KIND, BRIDGE: BRIDGE_KIND}

# Each function's list as the hardware lays it out: the capabilities' IDs, in list order.
CHAINS = {
    NIC: [PCIX.id, PM.id, VPD.id, MSI.id],
    BRIDGE_LINK: [PCIX_BRIDGE.id, HT.id, HT.id],
    BRIDGE: [PCIX_BRIDGE.id, HT.id],
}
ADDRESSES = {NIC: "0000:03:02.0", BRIDGE_LINK: "0000:08:03.0", BRIDGE: "0000:08:04.0"}


def listed(config: bytes) -> list[tuple[int, int]]:
    """(ID, offset) of each capability, following the dump's pointers byte by byte (the
    status bit aside: these functions set it)."""
    found: list[tuple[int, int]] = []
    at = config[POINTER.offset]
    while at:
        found.append((config[at + CAP_ID], at))
        at = config[at + CAP_NEXT]
    return found


def view_of(path: Path, *, permissive: bool = False) -> tuple[ConfigSpace, SimDevice, int]:
    view, sim = dump_view(path, permissive=permissive)
    pos = sim.find_capability(PCIX.id)
    assert pos is not None
    return view, sim, pos


def end_of(kind: Kind) -> int:
    """Where the last register of the layout ends, from the capability's start."""
    return max(r.offset + r.width for r in kind.registers)


def described(view: ConfigSpace, block: str, pos: int) -> list[tuple[int, str]]:
    return sorted(
        (r.offset - pos, r.reg.name)
        for r in view.registers
        if r.block == block and r.block_base == pos
    )


def landed(sim: SimDevice, at: int, width: int) -> tuple[int, int]:
    """What the device's writes since its hand-over put into the register at `at`, in the
    register's bit positions: (the bits of the bytes written, their value)."""
    covered = value = 0
    for off, size, data in sim.writes:
        assert at <= off and off + size <= at + width, f"a write outside: {off:#x}/{size}"
        shift = 8 * (off - at)
        covered |= ((1 << (8 * size)) - 1) << shift
        value |= data << shift
    return covered, value


# -- the dumps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DUMPS, ids=ids(DUMPS))
def test_the_dump_loads_as_the_function_with_its_list(path: Path) -> None:
    dump = load_config(path)
    assert (dump.address, len(dump.config)) == (ADDRESSES[path], 256)
    chains = walk(SimDevice(ADDRESSES[path], dump.config).read, len(dump.config))
    assert [c.ident for c in chains.standard] == CHAINS[path]
    assert [(c.ident, c.offset) for c in chains.standard] == listed(dump.config)
    assert not chains.extended and not chains.problems


# What lspci decoded of the NIC's PCI-X capability in the post (its bridges' it did not
# decode): the bytes are transcribed right. Bus 3, device 2 as the function's address has it;
# the function number it captured is 1, as printed.
NIC_DECODED = {
    PCIX.COMMAND.DATA_PARITY_RECOVERY: 0,
    PCIX.COMMAND.RELAXED_ORDERING: 0,
    PCIX.COMMAND.MAX_READ_BYTE_COUNT: 2,
    PCIX.COMMAND.MAX_OUTSTANDING_SPLIT: 0,
}
NIC_STATUS_DECODED = {
    PCIX.STATUS.BUS: 3,
    PCIX.STATUS.DEVICE: 2,
    PCIX.STATUS.FUNCTION: 1,
    PCIX.STATUS.BITS64: 1,
    PCIX.STATUS.MHZ133: 1,
    PCIX.STATUS.SPLIT_DISCARDED: 0,
    PCIX.STATUS.UNEXPECTED_SPLIT: 0,
    PCIX.STATUS.COMPLEX: 0,
    PCIX.STATUS.DESIGNED_READ_BYTE_COUNT: 2,
    PCIX.STATUS.DESIGNED_OUTSTANDING_SPLIT: 0,
    PCIX.STATUS.DESIGNED_CUMULATIVE_READ: 1,
    PCIX.STATUS.SPLIT_ERROR_MESSAGE: 0,
}


def test_the_nics_capability_is_what_lspci_decoded() -> None:
    _, sim, pos = view_of(NIC)
    command = sim.read(pos + PCIX.COMMAND.offset, PCIX.COMMAND.width)
    status = sim.read(pos + PCIX.STATUS.offset, PCIX.STATUS.width)
    assert {f: f.get(command) for f in NIC_DECODED} == NIC_DECODED
    assert {f: f.get(status) for f in NIC_STATUS_DECODED} == NIC_STATUS_DECODED


@pytest.mark.parametrize("path", BRIDGES, ids=ids(BRIDGES))
def test_each_bridge_captured_its_own_address_on_its_primary_bus(path: Path) -> None:
    # The bridge status holds the bus and device number the bridge was configured at: its
    # primary bus (the type-1 header's) and the device of its address.
    _, sim, pos = view_of(path)
    status = sim.read(pos + PCIX_BRIDGE.BRIDGE_STATUS.offset, PCIX_BRIDGE.BRIDGE_STATUS.width)
    _, bus, devfn = ADDRESSES[path].split(":")
    device, function = (int(n, 16) for n in devfn.split("."))
    primary = sim.read(TYPE1.PRIMARY_BUS.offset, TYPE1.PRIMARY_BUS.width)
    assert primary == int(bus, 16)
    found = [
        f.get(status) for f in (PCIX_BRIDGE.BRIDGE_STATUS.BUS, PCIX_BRIDGE.BRIDGE_STATUS.DEVICE)
    ]
    assert found == [primary, device]
    assert PCIX_BRIDGE.BRIDGE_STATUS.FUNCTION.get(status) == function


@pytest.mark.parametrize("path", DUMPS, ids=ids(DUMPS))
def test_these_are_pci_x_1_0_parts(path: Path) -> None:
    # Version 0: no ECC registers follow, in the function or the bridge.
    kind = KINDS[path]
    _, sim, pos = view_of(path)
    assert kind.version.get(sim.read(pos + kind.version_at, kind.version_width)) == 0


# -- the view ----------------------------------------------------------------------------------


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize("path", DUMPS, ids=ids(DUMPS))
def test_the_view_builds_and_keeps_the_list_as_the_device_has_it(
    path: Path, permissive: bool
) -> None:
    view, sim, pos = view_of(path, permissive=permissive)
    assert view.problems == [] and view.warnings == []
    assert sim.history == []  # seizing wrote nothing
    guest, device = walk(view.read, view.size), walk(sim.read, sim.config_size)
    assert guest.standard == device.standard and not guest.problems
    assert isinstance(view.slot_at(pos), ChainLink)


@pytest.mark.parametrize("path", DUMPS, ids=ids(DUMPS))
def test_the_capability_gets_the_layout_of_its_kind(path: Path) -> None:
    # The NIC is a function, the AMD-8131 a PCI-to-PCI bridge: each gets its own table, and
    # the other describes nothing.
    kind = KINDS[path]
    view, _, pos = view_of(path)
    assert described(view, kind.block, pos) == [(r.offset, r.name) for r in kind.registers]
    assert not [r for r in view.registers if r.block == kind.other]


@pytest.mark.parametrize("kind", [FUNCTION_KIND, BRIDGE_KIND], ids=["function", "bridge"])
def test_the_layout_is_the_addendums(kind: Kind) -> None:
    # The ID and next pointer, then each register right after the one before, with no gap
    # between them, up to a dword boundary.
    at = STD_LINK
    for r in kind.registers:
        assert r.offset == at, r.name
        at += r.width
    assert at == end_of(kind) and at % 4 == 0  # whole dwords, as every capability


@pytest.mark.parametrize("path", DUMPS, ids=ids(DUMPS))
def test_version_0_ends_the_capability_after_its_last_register(path: Path) -> None:
    # The policy's length for version 0 is where the layout ends, and no ECC register is laid
    # out; on the NIC the device agrees: its next capability (PM) starts right there.
    kind = KINDS[path]
    view, sim, pos = view_of(path)
    length = (
        PCIX.length(command_version=0)
        if kind is FUNCTION_KIND
        else PCIX_BRIDGE.length(secondary_status_version=0)
    )
    assert length == end_of(kind)
    assert not [r for r in view.registers if r.block == kind.block and r.end > pos + length]
    assert not [r for r in view.registers if r.reg.name.startswith("ecc")]
    following = [c.offset for c in walk(sim.read, sim.config_size).standard if c.offset > pos]
    if path == NIC:
        assert following[0] == pos + length
    else:
        assert following[0] > pos + length


def test_what_follows_the_nics_capability_is_pm() -> None:
    view, _, pos = view_of(NIC)
    after = pos + end_of(FUNCTION_KIND)
    assert isinstance(view.slot_at(after), ChainLink)
    pm = [r for r in view.registers if r.block == "pm"]
    assert pm and min(r.offset for r in pm) == after + STD_LINK
    assert all(r.block_base == after for r in pm)


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize("path", BRIDGES, ids=ids(BRIDGES))
def test_what_follows_a_bridges_capability_is_undescribed(path: Path, permissive: bool) -> None:
    # Between the bridge's layout and its first HyperTransport capability: bytes no table
    # describes, so the engine's default for them (read from the device, written in
    # permissive mode only), not what PCI-X makes of its own (the host's, in every mode).
    view, sim, pos = view_of(path, permissive=permissive)
    start = pos + end_of(BRIDGE_KIND)
    stop = min(c.offset for c in walk(sim.read, sim.config_size).standard if c.offset > pos)
    assert_engine_default(view, sim, start, stop, permissive=permissive)


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize("path", DUMPS, ids=ids(DUMPS))
def test_every_byte_of_the_capability_reads_as_the_device_has_it(
    path: Path, permissive: bool
) -> None:
    # The reserved bits of these parts are 0, so a view that keeps them at 0 reads their bytes.
    view, sim, pos = view_of(path, permissive=permissive)
    for off, size in aligned_accesses(pos, pos + end_of(KINDS[path])):
        assert view.read(off, size) == sim.read(off, size), f"{off:#x}/{size}"


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize("path", DUMPS, ids=ids(DUMPS))
def test_the_error_bits_the_device_sets_are_read_live(path: Path, permissive: bool) -> None:
    # Split completion errors logged after the guest got the function: it sees them at once.
    view, sim, pos = view_of(path, permissive=permissive)
    status = KINDS[path].registers[1]  # the (bridge) status
    at = pos + status.offset
    errors = 0
    for name, (bits, _) in status.fields.items():
        if name.startswith(("SPLIT", "UNEXPECTED")):
            errors |= bits.mask
    assert errors
    value = sim.read(at, status.width) | errors
    sim.config[at : at + status.width] = value.to_bytes(status.width, "little")
    assert view.read(at, status.width) == value


# -- a guest's writes --------------------------------------------------------------------------


def _fields(path: Path, *decisions: Decision) -> list[tuple[Reg, str]]:
    return [
        (r, name)
        for r in KINDS[path].registers
        for name, (_, decision) in r.fields.items()
        if decision in decisions
    ]


FIELD_CASES = [
    (path, r, name)
    for path in DUMPS
    for r, name in _fields(path, Decision.HOST, Decision.PERMISSIVE, Decision.VIRTUAL)
]


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize(
    ("path", "register", "name"),
    FIELD_CASES,
    ids=[f"{ids([p])[0]}-{r.name}-{n.lower()}" for p, r, n in FIELD_CASES],
)
def test_a_field_takes_a_write_as_its_decision_says(
    path: Path, register: Reg, name: str, permissive: bool
) -> None:
    # Each access that holds the field, with only the field's bits flipped: a field of the
    # host's never changes on the device, and no mode warns of it; a field of the guest's in
    # permissive mode changes there alone, and in normal mode the drop is warned of; a virtual
    # field changes in the guest's view alone, in any mode, unwarned.
    bits, decision = register.fields[name]
    taken = decision is Decision.PERMISSIVE and permissive
    seen_taken = taken or decision is Decision.VIRTUAL
    pos = view_of(path)[2]
    at = pos + register.offset
    accesses = list(field_accesses(at, register.width, bits.mask))
    assert accesses
    for off, size, flip in accesses:
        view, sim, _ = view_of(path, permissive=permissive)  # afresh: a view warns once
        before = sim.read(at, register.width)
        seen = view.read(at, register.width)
        view.write(off, size, view.read(off, size) ^ flip)
        where = f"{off:#x}/{size}"
        after = sim.read(at, register.width)
        assert after == (before ^ bits.mask if taken else before), where
        assert view.read(at, register.width) == (seen ^ bits.mask if seen_taken else seen), where
        warned = decision is Decision.PERMISSIVE and not permissive
        assert bool(view.warnings) == warned, where


RW1C_CASES = [(path, r, name) for path in DUMPS for r, name in _fields(path, Decision.RW1C)]


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize(
    ("path", "register", "name"),
    RW1C_CASES,
    ids=[f"{ids([p])[0]}-{r.name}-{n.lower()}" for p, r, n in RW1C_CASES],
)
def test_a_split_completion_error_is_acknowledged_by_a_1(
    path: Path, register: Reg, name: str, permissive: bool
) -> None:
    # With every error of the register logged on the device, a 1 to one of them reaches the
    # device as a 1 there alone (the others written as 0, which leaves them set), the other
    # bits as the device has them; a 0 acknowledges nothing, and reaches the device as nothing.
    bits, _ = register.fields[name]
    rw1c = 0
    for fbits, decision in register.fields.values():
        if decision is Decision.RW1C:
            rw1c |= fbits.mask
    view, sim, pos = view_of(path, permissive=permissive)
    at = pos + register.offset
    logged = sim.read(at, register.width) | rw1c
    sim.config[at : at + register.width] = logged.to_bytes(register.width, "little")
    assert view.read(at, register.width) == logged
    view.write(at, register.width, bits.mask)
    covered, value = landed(sim, at, register.width)
    assert covered & bits.mask
    assert value & rw1c == bits.mask
    assert value & covered & ~rw1c == logged & covered & ~rw1c
    sim.writes.clear()
    view.write(at, register.width, 0)
    assert sim.writes == []  # not even a 0 is written: only a 1 has a meaning
    assert view.warnings == []


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_tg3_clearing_relaxed_ordering_on_this_nic_changes_nothing(permissive: bool) -> None:
    # Linux's tg3, after a chip reset in PCI-X mode, reads the PCI-X command, clears relaxed
    # ordering and writes the word back. This NIC has it clear already: the device keeps its
    # command and, in normal mode too, no drop is warned of (nothing the guest asked changed).
    view, sim, pos = view_of(NIC, permissive=permissive)
    command = PCIX.COMMAND
    at = pos + command.offset
    before = sim.read(at, command.width)
    assert not command.RELAXED_ORDERING.get(before)
    view.write(at, command.width, view.read(at, command.width) & ~command.RELAXED_ORDERING.mask)
    assert sim.read(at, command.width) == before
    assert view.read(at, command.width) == before
    assert view.warnings == []


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize("path", BRIDGES, ids=ids(BRIDGES))
def test_no_guest_write_to_a_bridges_capability_reaches_the_device(
    path: Path, permissive: bool
) -> None:
    # Every access to every byte, with all zeros, all ones and the complement of what it
    # reads: the bridge's buses and buffers are the host's.
    view, sim, pos = view_of(path, permissive=permissive)
    end = pos + end_of(BRIDGE_KIND)
    before = bytes(sim.config)
    seen = [view.read(off, 1) for off in range(pos, end)]
    for off, size in aligned_accesses(pos, end):
        ones = (1 << 8 * size) - 1
        for value in (0, ones, ~view.read(off, size) & ones):
            view.write(off, size, value)
    assert sim.history == [] and bytes(sim.config) == before
    assert [view.read(off, 1) for off in range(pos, end)] == seen


# -- the bridges' HyperTransport ---------------------------------------------------------------


def ht_extents(sim: SimDevice) -> dict[int, int]:
    """Each HyperTransport capability's offset and where its bytes end: the next capability,
    or the end of the standard space."""
    found = walk(sim.read, sim.config_size).standard
    starts = sorted(c.offset for c in found)
    ends = dict(zip(starts, [*starts[1:], STD_END], strict=True))
    return {c.offset: ends[c.offset] for c in found if c.ident == HT.id}


# An AMD-8131's HyperTransport capabilities, by the type in their command (HyperTransport 3.10
# 7.3; Linux pci_regs.h HT_CAPTYPE_IRQ, HT_CAPTYPE_SLAVE): an interrupt discovery window, and on
# 08:03.0 the slave link configuration of the tunnel.
# The slave link's registers are the HyperTransport test's table for that type.
HT_COMMAND = [(HT.COMMAND.offset, "command")]
HT_IRQ = [*HT_COMMAND, (HT.INTERRUPT_DATA.offset, "interrupt_data")]
HT_LAYOUTS: dict[Path, list[list[tuple[int, str]]]] = {
    BRIDGE_LINK: [HT_IRQ, HT_COMMAND + HT_BODIES["slave"]],
    BRIDGE: [HT_IRQ],
}


@pytest.mark.parametrize("path", BRIDGES, ids=ids(BRIDGES))
def test_each_hypertransport_capability_has_its_types_registers(path: Path) -> None:
    view, sim, _ = view_of(path)
    got = [described(view, "ht", pos) for pos in ht_extents(sim)]
    assert got == HT_LAYOUTS[path]


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize("path", BRIDGES, ids=ids(BRIDGES))
def test_the_hypertransport_capabilities_stay_the_hosts(path: Path, permissive: bool) -> None:
    # Every byte of each, up to the next capability or the end of the standard space: read as
    # the device has it, and no write of a guest's reaches the device, in either mode.
    view, sim, _ = view_of(path, permissive=permissive)
    before = bytes(sim.config)
    for pos, end in ht_extents(sim).items():
        for off, size in aligned_accesses(pos, end):
            assert view.read(off, size) == sim.read(off, size), f"{off:#x}/{size}"
        seen = [view.read(off, 1) for off in range(pos, end)]
        for off, size in aligned_accesses(pos, end):
            ones = (1 << 8 * size) - 1
            for value in (0, ones, ~view.read(off, size) & ones):
                view.write(off, size, value)
        assert [view.read(off, 1) for off in range(pos, end)] == seen
        # past the described registers, the body is the host's by the table's `rest`
        last = max(r.end for r in view.registers if r.block == "ht" and r.block_base == pos)
        assert all(type(view.slot_at(off)) is HostOwned for off in range(last, end))
    assert sim.history == [] and bytes(sim.config) == before
