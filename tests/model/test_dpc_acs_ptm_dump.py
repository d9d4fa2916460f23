"""DPC, ACS with egress control and PTM on real hardware: a PMC-Sierra 4036 switch downstream
port (tests/fixtures/jailhouse/README.md) and pciutils' Intel CXL device 8086:0d93
(tests/fixtures/pciutils/README.md). tests/model/test_described_caps.py lays these capabilities
out on synthetic bytes; here they are held to bytes no one here chose.

Where each register lies is the policy's name for it, and the dump's capability list says where
each capability is: that the view lays out there the registers the dump's own capability bits
call for, that every byte reads as the device holds it, and what each named field does with a
guest's write and with a change on the device are checked. The decision of each field is typed
below, independently of dsl/dpc.pci, dsl/acs.pci and dsl/ptm.pci, so that a changed access in
the policy fails here: containment, the ACS isolation the host's IOMMU groups are built on and
the time hierarchy are the host's in permissive mode too.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeAlias

import pytest

from pciback.dumps import load_config
from pciback.engine import ConfigSpace
from pciback.engine.chain import EXT_END, EXT_LINK, walk
from pciback.engine.space import ChainLink
from pciback.generated.names import (
    ACS,
    AER,
    ATS,
    DLF,
    DPC,
    DSN,
    DVSEC,
    LTR,
    MFVC,
    MSI,
    MULTICAST,
    PASID,
    PCIE,
    PM,
    POWER_BUDGET,
    PRI,
    PTM,
    REBAR,
    SECPCIE,
    SSVID,
    TPH,
    VC_MFVC,
    VSEC,
)
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice
from pciback.sim.guest_scan import CountingDevice
from pciback.tables import Bits

from .builders import (
    JAILHOUSE,
    PCIUTILS,
    DecidedRegister,
    aligned_accesses,
    assert_engine_default,
    decided,
    field_accesses,
)

PORT = JAILHOUSE / "pmc-sierra-11f8-4036-dpc-acs.lspci.txt"  # 02:00.0, a downstream port
CXL = PCIUTILS / "intel-cxl-8086-0d93-ptm.lspci.txt"  # 6b:00.0, an integrated endpoint
DUMPS = [PORT, CXL]


def ids(paths: list[Path]) -> list[str]:
    return [p.name.removesuffix(".lspci.txt") for p in paths]


Listed = list[tuple[int, int]]  # (capability ID, where the function has it), in list order


@dataclass(frozen=True)
class Function:
    address: str
    standard: Listed
    extended: Listed


# Each function's lists as lspci prints them for it (the jailhouse-dev mail's lspci -vvv,
# pciutils' decoding in tests/cap-dvsec-cxl).
FUNCTIONS = {
    PORT: Function(
        "0000:02:00.0",
        [(PCIE.id, 0x40), (MSI.id, 0x7C), (PM.id, 0x8C), (SSVID.id, 0x94)],
        [
            (AER.id, 0x100),
            (POWER_BUDGET.id, 0x148),
            (MULTICAST.id, 0x158),
            (SECPCIE.id, 0x188),
            (DSN.id, 0x1B4),
            (DPC.id, 0x1C0),
            (ACS.id, 0x1CC),
            (DLF.id, 0x1F4),
        ],
    ),
    CXL: Function(
        "0000:6b:00.0",
        [(PCIE.id, 0x40), (MSI.id, 0x80), (PM.id, 0xA0)],
        [
            (AER.id, 0x100),
            (MFVC.id, 0x200),
            (VC_MFVC.id, 0x300),  # Virtual Channel, under the ID it has beside an MFVC
            (MULTICAST.id, 0x550),
            (LTR.id, 0x588),
            (TPH.id, 0x5B0),
            (ATS.id, 0x6E0),
            (REBAR.id, 0x700),
            (SECPCIE.id, 0x714),
            (PRI.id, 0xB20),
            (PASID.id, 0xB40),
            (PTM.id, 0xB50),
            (VSEC.id, 0xD00),
            (DVSEC.id, 0xE00),
            (DSN.id, 0xE38),
        ],
    ),
}


class Decision(Enum):
    CACHED = "read once at seize, never written by a guest, in any mode"
    HOST = "read from the device at every read, never written by a guest, in any mode"


CACHED, HOST = Decision.CACHED, Decision.HOST


Reg: TypeAlias = DecidedRegister[Decision]
reg = decided


def every(names: Any, decision: Decision) -> dict[str, Decision]:
    return {n: decision for n, v in vars(names).items() if isinstance(v, Bits)}


# DPC (PCIe 6.0 7.9.14): what the port implements is fixed at reset, but for the interrupt
# message number, which follows the MSI or MSI-X set-up; the controls, the status (cleared by
# the host's DPC service) and the source it logged are the host's error recovery.
DPC_CAPS = reg(
    "caps",
    DPC.CAPS,
    {
        "INTERRUPT_MESSAGE": HOST,
        "RP_EXTENSIONS": CACHED,
        "POISONED_EGRESS_BLOCKING": CACHED,
        "SOFTWARE_TRIGGERING": CACHED,
        "RP_PIO_LOG_SIZE": CACHED,
        "DL_ACTIVE_ERR_COR": CACHED,
        "RP_PIO_LOG_SIZE_HIGH": CACHED,
    },
)
DPC_REGISTERS = (
    DPC_CAPS,
    reg("control", DPC.CONTROL, every(DPC.CONTROL, HOST)),
    reg("status", DPC.STATUS, every(DPC.STATUS, HOST)),
    reg("error_source", DPC.ERROR_SOURCE, every(DPC.ERROR_SOURCE, HOST)),
)
# ACS (7.7.8): what is implemented is fixed; the controls and the egress vector are the host's.
ACS_REGISTERS = (
    reg("caps", ACS.CAPS, every(ACS.CAPS, CACHED)),
    reg("control", ACS.CONTROL, every(ACS.CONTROL, HOST)),
)
ACS_EGRESS = tuple(
    reg(f"egress{n}", getattr(ACS, f"EGRESS{n}"), every(getattr(ACS, f"EGRESS{n}"), HOST))
    for n in range(8)  # at most 256 bits: eight dwords
)
# PTM (7.9.15): the roles and the local granularity are fixed; the control is the host's.
PTM_REGISTERS = (
    reg("caps", PTM.CAPS, every(PTM.CAPS, CACHED)),
    reg("control", PTM.CONTROL, every(PTM.CONTROL, HOST)),
)


def egress_dwords(caps: int) -> int:
    """Dwords of egress control vector the specification lays out after ACS control: one per
    32 bits of the vector, whose size 0 means 256 (7.7.8.2); none without egress control."""
    if not ACS.CAPS.EGRESS_CONTROL.get(caps):
        return 0
    return ((ACS.CAPS.VECTOR_SIZE.get(caps) or 256) + 31) // 32


@dataclass(frozen=True)
class Block:
    path: Path
    table: str  # the policy's table for it
    ident: int

    @property
    def id(self) -> str:
        return f"{ids([self.path])[0]}-{self.table}"


DPC_BLOCK = Block(PORT, "dpc", DPC.id)
ACS_BLOCK = Block(PORT, "acs", ACS.id)
PTM_BLOCK = Block(CXL, "ptm", PTM.id)
BLOCKS = [DPC_BLOCK, ACS_BLOCK, PTM_BLOCK]


def position(block: Block) -> int:
    return dict(FUNCTIONS[block.path].extended)[block.ident]


def registers(block: Block, sim: SimDevice) -> tuple[Reg, ...]:
    """The registers the specification lays out for the capability as this device has it:
    DPC's root port PIO registers need RP extensions (neither part here has them), ACS's
    egress vector its size."""
    pos = position(block)
    if block is DPC_BLOCK:
        caps = sim.read(pos + DPC.CAPS.offset, DPC.CAPS.width)
        assert not DPC.CAPS.RP_EXTENSIONS.get(caps)  # a downstream port: no RP extensions
        return DPC_REGISTERS
    if block is ACS_BLOCK:
        caps = sim.read(pos + ACS.CAPS.offset, ACS.CAPS.width)
        return ACS_REGISTERS + ACS_EGRESS[: egress_dwords(caps)]
    return PTM_REGISTERS


def length(block: Block, sim: SimDevice) -> int:
    """The policy's length for the capability, from the device's own capability bits."""
    pos = position(block)
    if block is DPC_BLOCK:
        caps = sim.read(pos + DPC.CAPS.offset, DPC.CAPS.width)
        return DPC.length(caps_rp_extensions=DPC.CAPS.RP_EXTENSIONS.get(caps))
    if block is ACS_BLOCK:
        caps = sim.read(pos + ACS.CAPS.offset, ACS.CAPS.width)
        return ACS.length(
            caps_egress_control=ACS.CAPS.EGRESS_CONTROL.get(caps),
            caps_vector_size=ACS.CAPS.VECTOR_SIZE.get(caps),
        )
    return PTM.length


def view_of(path: Path, *, permissive: bool = False) -> tuple[ConfigSpace, SimDevice]:
    dump = load_config(path)
    assert dump.address is not None
    sim = SimDevice(dump.address, path)
    return build_config_space(sim, permissive=permissive), sim


def counted_view_of(path: Path) -> tuple[ConfigSpace, CountingDevice, SimDevice]:
    """A view whose device reads after seize are counted."""
    dump = load_config(path)
    assert dump.address is not None
    sim = SimDevice(dump.address, path)
    device = CountingDevice(sim)
    view = build_config_space(device)
    device.reads = 0
    return view, device, sim


def described(view: ConfigSpace, block: Block) -> list[tuple[int, str]]:
    pos = position(block)
    return sorted(
        (r.offset - pos, r.reg.name)
        for r in view.registers
        if r.block == block.table and r.block_base == pos
    )


def following(sim: SimDevice, pos: int) -> int:
    """Where the next capability on the extended list starts, or the end of the space."""
    later = [c.offset for c in walk(sim.read, sim.config_size).extended if c.offset > pos]
    return min(later, default=EXT_END)


# -- the dumps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DUMPS, ids=ids(DUMPS))
def test_the_dump_loads_as_the_function_with_its_lists(path: Path) -> None:
    function = FUNCTIONS[path]
    dump = load_config(path)
    assert (dump.address, len(dump.config)) == (function.address, 4096)
    chains = walk(SimDevice(function.address, dump.config).read, len(dump.config))
    assert not chains.problems
    assert [(c.ident, c.offset) for c in chains.standard] == function.standard
    assert [(c.ident, c.offset) for c in chains.extended] == function.extended


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize("path", DUMPS, ids=ids(DUMPS))
def test_the_guest_walks_the_lists_the_device_has(path: Path, permissive: bool) -> None:
    view, sim = view_of(path, permissive=permissive)
    assert view.problems == [] and view.warnings == []
    assert sim.history == []  # seizing wrote nothing
    guest, device = walk(view.read, view.size), walk(sim.read, sim.config_size)
    assert not guest.problems
    assert (guest.standard, guest.extended) == (device.standard, device.extended)


def test_the_port_has_the_capabilities_lspci_decodes() -> None:
    # What the mail's lspci -vvv decodes of them: DPC with poisoned TLP egress blocking,
    # software triggering and DL_Active ERR_COR but no RP extensions, its controls off and
    # nothing logged; ACS with all seven controls implemented, egress control among them, and
    # all off.
    sim = SimDevice(FUNCTIONS[PORT].address, PORT)
    dpc, acs = position(DPC_BLOCK), position(ACS_BLOCK)
    caps = sim.read(dpc + DPC.CAPS.offset, DPC.CAPS.width)
    assert not DPC.CAPS.RP_EXTENSIONS.get(caps)
    for flag in (
        DPC.CAPS.POISONED_EGRESS_BLOCKING,
        DPC.CAPS.SOFTWARE_TRIGGERING,
        DPC.CAPS.DL_ACTIVE_ERR_COR,
    ):
        assert flag.get(caps)
    assert sim.read(dpc + DPC.CONTROL.offset, DPC.CONTROL.width) == 0
    assert sim.read(dpc + DPC.STATUS.offset, DPC.STATUS.width) == 0
    caps = sim.read(acs + ACS.CAPS.offset, ACS.CAPS.width)
    assert ACS.CAPS.EGRESS_CONTROL.get(caps) and ACS.CAPS.DIRECT_TRANSLATED_P2P.get(caps)
    assert egress_dwords(caps) == 1  # a 2-bit vector: one dword
    assert sim.read(acs + ACS.CONTROL.offset, ACS.CONTROL.width) == 0


# -- the layout --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout",
    [DPC_REGISTERS, ACS_REGISTERS + ACS_EGRESS, PTM_REGISTERS],
    ids=["dpc", "acs", "ptm"],
)
def test_the_layout_is_the_specifications(layout: tuple[Reg, ...]) -> None:
    # The header, then each register in the order the specification lists it (the order of
    # the tuples above, typed here), right after the one before. On these parts control and
    # status both read 0, so only this tells a swap of their names from the specification.
    at = EXT_LINK
    for r in layout:
        assert r.offset == at, r.name
        at += r.width
    assert at % 4 == 0  # whole dwords, as every capability


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_the_capability_has_the_registers_its_bits_call_for(block: Block) -> None:
    view, sim = view_of(block.path)
    expect = sorted((r.offset, r.name) for r in registers(block, sim))
    assert described(view, block) == expect
    assert isinstance(view.slot_at(position(block)), ChainLink)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_the_policys_length_ends_after_the_last_register(block: Block) -> None:
    # On the port, DPC's next capability (ACS) starts right where DPC ends.
    _, sim = view_of(block.path)
    end = max(r.offset + r.width for r in registers(block, sim))
    assert length(block, sim) == end
    pos = position(block)
    if block is DPC_BLOCK:
        assert following(sim, pos) == pos + end
    else:
        assert following(sim, pos) > pos + end


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize("block", [ACS_BLOCK, PTM_BLOCK], ids=["acs", "ptm"])
def test_what_follows_the_capability_is_undescribed(block: Block, permissive: bool) -> None:
    # Past the egress vector (and past PTM control), up to the next capability: bytes no table
    # describes, so the engine's default (read from the device, written in permissive mode
    # only), not the host's as the capability's own registers are. That such a write does
    # reach the device shows the write checks below can see one.
    view, sim = view_of(block.path, permissive=permissive)
    start = position(block) + length(block, sim)
    stop = following(sim, position(block))
    assert_engine_default(view, sim, start, stop, permissive=permissive)


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_every_byte_of_the_capability_reads_as_the_device_has_it(
    block: Block, permissive: bool
) -> None:
    # The reserved bits of these parts are 0, so a view that keeps them at 0 reads their bytes.
    view, sim = view_of(block.path, permissive=permissive)
    pos = position(block)
    for off, size in aligned_accesses(pos, pos + length(block, sim)):
        assert view.read(off, size) == sim.read(off, size), f"{off:#x}/{size}"


# -- each field --------------------------------------------------------------------------------


FIELD_CASES = [
    (block, r, name)
    for block in BLOCKS
    for r in registers(block, SimDevice(FUNCTIONS[block.path].address, block.path))
    for name in r.fields
]
FIELD_IDS = [f"{b.id}-{r.name}-{n.lower()}" for b, r, n in FIELD_CASES]


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize(("block", "register", "name"), FIELD_CASES, ids=FIELD_IDS)
def test_no_guest_write_to_a_field_reaches_the_device(
    block: Block, register: Reg, name: str, permissive: bool
) -> None:
    # Each access that holds the field, with only the field's bits flipped: nothing is written
    # to the device, the guest reads what it read, and no mode warns of it (no field here is
    # one that permissive mode would have let through).
    bits, _ = register.fields[name]
    at = position(block) + register.offset
    accesses = list(field_accesses(at, register.width, bits.mask))
    assert accesses
    for off, size, flip in accesses:
        view, sim = view_of(block.path, permissive=permissive)  # afresh: a view warns once
        before = bytes(sim.config)
        seen = view.read(at, register.width)
        view.write(off, size, view.read(off, size) ^ flip)
        where = f"{off:#x}/{size}"
        assert sim.writes == [] and bytes(sim.config) == before, where
        assert view.read(at, register.width) == seen, where
        assert view.warnings == [], where


@pytest.mark.parametrize(("block", "register", "name"), FIELD_CASES, ids=FIELD_IDS)
def test_a_field_follows_the_device_or_was_read_once(
    block: Block, register: Reg, name: str
) -> None:
    # The device's copy of the field changing after seize (a containment triggered, a source
    # logged, MSI set up anew): a field of the host's is read at every read and the guest sees
    # the change at once; one the specification fixes was read once, and the device is not
    # asked again.
    bits, decision = register.fields[name]
    view, device, sim = counted_view_of(block.path)
    at = position(block) + register.offset
    value = sim.read(at, register.width) ^ bits.mask
    sim.config[at : at + register.width] = value.to_bytes(register.width, "little")
    got = bits.get(view.read(at, register.width))
    if decision is Decision.HOST:
        assert got == bits.get(value) and device.reads > 0
    else:
        assert got == bits.get(value ^ bits.mask)
    if all(d is Decision.CACHED for _, d in register.fields.values()):
        assert device.reads == 0  # nothing of the register is asked of the device again
