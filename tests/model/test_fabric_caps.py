"""AGP, Virtual Channel (IDs 0x0002 and 0x0009), Multi-Function VC, Power Budgeting, TPH
Requester, Multicast and MR-IOV: capabilities Linux xen-pciback leaves undescribed (read from
the device, written whole in permissive mode) that the policy describes.

No QEMU dump carries any of them (../shared/fixtures/qemu/MANIFEST.md), so each is patched into
a real dump (tests/model/patched.py): the extended ones behind the dump's last extended
capability, AGP into a conventional function's empty standard space. Every register's bits
are set on the device unless said otherwise, so that reserved bits reading 0 shows. Offsets
and masks are the specifications' (PCIe 6.0 7.8.1, 7.9.1, 7.9.2, 7.9.11, 7.9.13; AGP 3.0; the
third data scale bit of Power Budgeting as Linux's pci_regs.h names it), written here
independently of dsl/.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest

from pciback.engine import ConfigSpace
from pciback.engine.registers import RegisterInstance
from pciback.engine.space import HostOwned
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice

from .patched import add_extended, add_standard, device, dump_config

Span = tuple[int, int]  # offset in the capability, size

ROOT_PORT = "pcie-root-port-1b36-000c"  # PCIe root port: AER 0x100, ACS 0x148
ENDPOINT = "e1000e-8086-10d3.bin"  # PCIe endpoint: AER 0x100, DSN 0x140
NVME_PF = "nvme-1b36-0010-sriov-pf"  # function 0 with ARI 0x100, SR-IOV 0x120
NVME = "nvme-1b36-0010.bin"  # PCIe endpoint without extended capabilities
CONVENTIONAL = "rtl8139-10ec-8139"  # conventional PCI, no capability list

# Two VCs; the VC arbitration table at +0x30, VC0's port arbitration table at +0x40.
VC_TWO = (
    struct.pack(
        "<IIHHIIHHIIHH",
        0xFFFFF889,  # one extended VC, 4-bit port arbitration entries; reserved bits set
        0x03FFFF01,  # VC arbitration: hardware fixed; its table at 3 * 16
        0xFFF2,  # VC arbitration select 1
        0xFFFF,
        0x04FFFFFF,  # VC0: its port arbitration table at 4 * 16
        0xFFFFFFFF,  # VC0: every traffic class, enabled
        0xFFFF,
        0xFFFF,
        0x00FFFFFF,  # VC1: no port arbitration table
        0xFFFFFFFF,
        0xFFFF,
        0xFFFF,
    )
    + bytes(8)
    + b"\xa5" * 0x30
)  # the tables, +0x30 to +0x5f
VC_REGISTERS = [(0x04, 4), (0x08, 4), (0x0C, 2), (0x0E, 2)] + [
    (vc + rel, size) for vc in (0x10, 0x1C) for rel, size in ((0, 4), (4, 4), (8, 2), (10, 2))
]
VC_TABLES = [(rel, 4) for rel in range(0x28, 0x60, 4)]


@dataclass(frozen=True)
class Case:
    name: str
    dump: str
    ident: int
    at: int
    body: bytes
    extended: bool = True
    # (offset, size, bits the guest reads as the device holds them; the others read 0)
    reads: list[tuple[int, int, int]] = field(default_factory=list)
    host_owned: list[Span] = field(default_factory=list)
    cached: list[Span] = field(default_factory=list)


CASES = [
    Case(
        "vc-root-port",
        ROOT_PORT,
        0x0002,
        0x180,
        VC_TWO,
        reads=[(0x04, 4, 0x00000F77), (0x08, 4, 0xFF0000FF), (0x0C, 2, 0x000F), (0x0E, 2, 1)]
        + [(vc, 4, 0xFF7F80FF) for vc in (0x10, 0x1C)]
        + [(vc + 4, 4, 0x870F00FF) for vc in (0x10, 0x1C)]
        + [(vc + 8, 2, 0x0003) for vc in (0x10, 0x1C)]
        + [(vc + 10, 2, 0) for vc in (0x10, 0x1C)],
        host_owned=VC_REGISTERS + VC_TABLES,
        cached=[(0x04, 4), (0x08, 4), (0x10, 4), (0x1C, 4)],
    ),
    Case(
        "vc-with-mfvc",
        ROOT_PORT,
        0x0009,
        0x180,
        VC_TWO,
        reads=[(0x04, 4, 0x00000F77), (0x14, 4, 0x870F00FF), (0x20, 4, 0x870F00FF)],
        host_owned=VC_REGISTERS + VC_TABLES,
        cached=[(0x04, 4), (0x08, 4), (0x10, 4), (0x1C, 4)],
    ),
    Case(
        "mfvc",
        NVME_PF,
        0x0008,
        0x180,
        # one VC; its function arbitration table at 2 * 16
        struct.pack(
            "<IIHHIIHH", 0xFFFFF888, 0x00FFFF00, 0xFFF0, 0xFFFF, 0x02FFFFFF, 0xFFFFFFFF, 3, 0
        )
        + bytes(4)
        + b"\xa5" * 0x20,
        reads=[(0x04, 4, 0x00000F77), (0x10, 4, 0xFF7F00FF), (0x14, 4, 0x870F00FF)],
        host_owned=[(0x04, 4), (0x08, 4), (0x0C, 2), (0x0E, 2), (0x10, 4), (0x14, 4)]
        + [(0x18, 2), (0x1A, 2)]
        + [(rel, 4) for rel in range(0x1C, 0x40, 4)],
        cached=[(0x04, 4), (0x08, 4), (0x10, 4)],
    ),
    Case(
        "power-budgeting",
        ENDPOINT,
        0x0004,
        0x180,
        b"\x03\xff\xff\xff" + b"\xff" * 8,  # entry 3 selected
        reads=[
            (0x04, 1, 0xFF),
            (0x05, 1, 0),
            (0x06, 2, 0xFFFF),  # PCIe 6.0 control: read from the device
            (0x08, 4, 0x003FFFFF),  # bit 21: Data Scale[2] (PCIe 6.x)
            (0x0C, 1, 0x01),
            (0x0D, 1, 0xFF),  # PCIe 6.0 sense detect: read from the device
            (0x0E, 2, 0),
        ],
        host_owned=[(0x06, 2), (0x08, 4), (0x0C, 4)],
        cached=[(0x0C, 1)],
    ),
    Case(
        "tph-table-in-capability",
        NVME,
        0x0017,
        0x100,
        # all modes, extended tags, the table here (location 1), 8 entries; reserved bits set
        struct.pack("<II", 0xF807FBFF, 0xFFFFFFFF) + b"\xff" * 16,
        reads=[(0x04, 4, 0x07FF0707), (0x08, 4, 0x00000307)]
        + [(rel, 2, 0xFFFF) for rel in range(0x0C, 0x1C, 2)],
        host_owned=[(0x08, 4)] + [(rel, 4) for rel in range(0x0C, 0x1C, 4)],
        cached=[(0x04, 4)],
    ),
    Case(
        "multicast-root-port",
        ROOT_PORT,
        0x0012,
        0x180,
        b"\xff" * 0x2C,
        # a port: ECRC regeneration, no window size requested (reserved)
        reads=[(0x04, 2, 0x803F), (0x06, 2, 0x803F), (0x08, 4, 0xFFFFF03F)]
        + [(rel, 4, 0xFFFFFFFF) for rel in range(0x0C, 0x30, 4)],  # the overlay BAR included
        host_owned=[(0x04, 2), (0x06, 2)] + [(rel, 4) for rel in range(0x08, 0x30, 4)],
        cached=[(0x04, 2)],
    ),
    Case(
        "multicast-endpoint",
        ENDPOINT,
        0x0012,
        0x180,
        b"\xff" * 0x24,
        # an endpoint: the window size requested, no ECRC regeneration (reserved)
        reads=[(0x04, 2, 0x3F3F), (0x06, 2, 0x803F)]
        + [(rel, 4, 0xFFFFFFFF) for rel in range(0x0C, 0x28, 4)],
        host_owned=[(0x04, 2), (0x06, 2)] + [(rel, 4) for rel in range(0x08, 0x28, 4)],
        cached=[(0x04, 2)],
    ),
    Case(
        "mr-iov",
        NVME,
        0x0011,
        0x100,
        b"\xff" * 0x3C,
        host_owned=[(rel, 4) for rel in range(0x04, 0x40, 4)],
    ),
    Case(
        "agp",
        CONVENTIONAL,
        0x02,
        0x40,
        struct.pack("<HII", 0xFF30, 0xFFFFFFFF, 0xFFFFFFFF),  # AGP 3.0, every bit set
        extended=False,
        reads=[(0x02, 2, 0x00FF), (0x04, 4, 0xFF01FFFF), (0x08, 4, 0xFF00FFB7)],
        host_owned=[(0x02, 2), (0x04, 4), (0x08, 4)],
        cached=[(0x02, 2), (0x04, 4)],
    ),
]
IDS = [c.name for c in CASES]


def patched(case: Case) -> tuple[ConfigSpace, SimDevice, int]:
    config = dump_config(case.dump)
    if case.extended:
        add_extended(config, case.ident, case.at, case.body)
    else:
        add_standard(config, case.ident, case.at, case.body)
    sim = device(config)
    view = build_config_space(sim)
    find = view.extended_capability_offset if case.extended else view.capability_offset
    assert find(case.ident) == case.at
    return view, sim, case.at


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_guest_reads_the_device(case: Case) -> None:
    view, sim, base = patched(case)
    assert not [p for p in view.problems if "does not fit" in p or "overlaps" in p]
    for rel, size, mask in case.reads:
        assert isinstance(view.slot_at(base + rel), RegisterInstance), f"{rel:#x} undescribed"
        assert view.read(base + rel, size) == sim.read(base + rel, size) & mask, f"{rel:#x}"


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_host_owned_bytes_never_reach_the_device(case: Case, permissive: bool) -> None:
    view, sim, base = patched(case)
    view.settings.permissive = permissive
    before = bytes(sim.config)
    for rel, size in case.host_owned:
        ones = (1 << (8 * size)) - 1
        for value in (ones, 0, sim.read(base + rel, size) ^ ones):
            view.write(base + rel, size, value)
    assert sim.writes == []
    assert bytes(sim.config) == before


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.cached], ids=[c.name for c in CASES if c.cached]
)
def test_what_the_specification_fixes_is_read_once(case: Case) -> None:
    view, sim, base = patched(case)
    seen = {(rel, size): view.read(base + rel, size) for rel, size in case.cached}
    for rel, size in case.cached:
        for i in range(size):
            sim.config[base + rel + i] ^= 0xFF
    assert {span: view.read(base + span[0], span[1]) for span in seen} == seen


# -- what each one has of its own --------------------------------------------------------------
def test_the_power_budget_data_select_is_the_guests_in_every_mode() -> None:
    view, sim, base = patched(CASES[IDS.index("power-budgeting")])
    view.write(base + 0x04, 4, 0xFFFFFF05)  # the select, and reserved bytes after it
    assert sim.writes == [(base + 0x04, 1, 0x05)]
    sim.config[base + 0x08 : base + 0x0C] = (0x00012345).to_bytes(4, "little")
    assert view.read(base + 0x08, 4) == 0x00012345  # the data follows the device


def test_vc_arbitration_tables_are_the_rest_of_the_capability() -> None:
    view, _, base = patched(CASES[0])
    for rel in (0x28, 0x30, 0x40, 0x5C, 0x100):  # up to the end: no capability follows
        slot = view.slot_at(base + rel)
        assert isinstance(slot, HostOwned) and "arbitration tables" in slot.description
    assert view.read(base + 0x30, 4) == 0xA5A5A5A5


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_a_single_vc_without_tables_leaves_what_follows_to_the_default(permissive: bool) -> None:
    # Most endpoints: VC0 alone, no arbitration table; the bytes after its registers are no
    # part of the capability, and stay the engine default (permissive mode writes them).
    config = dump_config(ENDPOINT)
    add_extended(config, 0x0002, 0x180, struct.pack("<IIHHIIHH", 0, 0, 0, 0, 1, 0x800000FF, 0, 0))
    config[0x19C:0x1A0] = b"\x5a" * 4
    sim = device(config)
    view = build_config_space(sim, permissive=permissive)
    assert isinstance(view.slot_at(0x180 + 0x18), RegisterInstance)
    assert not isinstance(view.slot_at(0x180 + 0x1C), RegisterInstance | HostOwned)
    view.write(0x180 + 0x1C, 4, 0)
    assert sim.writes == ([(0x19C, 4, 0)] if permissive else [])


@pytest.mark.parametrize(
    ("caps", "entries"),
    [(0x00070307, 8), (0x07FF0307, 64), (0x00070507, 0), (0x00070107, 0)],
    ids=["8 here", "2048 read as the 64 a capability holds", "in the MSI-X table", "none"],
)
def test_the_tph_steering_table_is_described_where_the_capability_holds_it(
    caps: int, entries: int
) -> None:
    config = dump_config(NVME)
    add_extended(config, 0x0017, 0x100, struct.pack("<II", caps, 0) + b"\xff" * 0x80)
    view = build_config_space(device(config))
    described = [
        rel
        for rel in range(0x0C, 0x90, 2)
        if isinstance(slot := view.slot_at(0x100 + rel), RegisterInstance)
        and slot.reg.name.startswith("st_table")
    ]
    assert described == list(range(0x0C, 0x0C + 2 * entries, 2))


def test_the_multicast_overlay_bar_is_a_ports_only() -> None:
    root_port, _, base = patched(CASES[IDS.index("multicast-root-port")])
    assert isinstance(root_port.slot_at(base + 0x28), RegisterInstance)
    endpoint, _, base = patched(CASES[IDS.index("multicast-endpoint")])
    assert not isinstance(endpoint.slot_at(base + 0x28), RegisterInstance)


def test_the_mr_iov_capability_is_the_hosts_up_to_the_next_capability() -> None:
    config = dump_config(NVME_PF)
    add_extended(config, 0x0011, 0x180, b"\xff" * 0x3C)
    add_extended(config, 0x0004, 0x1C0, b"\x00" * 0x0C)  # Power Budgeting after it
    sim = device(config)
    view = build_config_space(sim, permissive=True)
    assert all(isinstance(view.slot_at(off), HostOwned) for off in range(0x184, 0x1C0))
    view.write(0x184, 4, 0)
    view.write(0x1C4, 1, 2)  # the next capability's data select: its own
    assert sim.writes == [(0x1C4, 1, 2)]


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_what_follows_agp_command_stays_the_engine_default(permissive: bool) -> None:
    # An AGP 3.0 target's aperture and GART registers are not described; nor claimed, since a
    # conventional function's own registers often follow its capabilities.
    config = dump_config(CONVENTIONAL)
    add_standard(config, 0x02, 0x40, struct.pack("<HII", 0x0030, 0, 0) + b"\xa5" * 12)
    sim = device(config)
    view = build_config_space(sim, permissive=permissive)
    assert view.read(0x4C, 4) == 0xA5A5A5A5
    view.write(0x4C, 4, 0)
    assert sim.writes == ([(0x4C, 4, 0)] if permissive else [])


@pytest.mark.parametrize(
    ("case", "window", "ecrc"),
    [("multicast-root-port", False, True), ("multicast-endpoint", True, False)],
    ids=["port", "endpoint"],
)
def test_multicast_capabilities_follow_the_port_type(case: str, window: bool, ecrc: bool) -> None:
    # PCIe 6.0 7.9.11.2: MC_Window_Size_Requested (13:8) is an endpoint's, RsvdP in root and
    # switch ports; MC_ECRC_Regeneration_Supported (15) a port's, RsvdP in other functions.
    view, sim, base = patched(CASES[IDS.index(case)])
    sim.config[base + 0x04 : base + 0x06] = (0x8A07).to_bytes(2, "little")  # ECRC, 2^10, 8
    view = build_config_space(sim)
    expect = 0x0007 | (0x0A00 if window else 0) | (0x8000 if ecrc else 0)
    assert view.read(base + 0x04, 2) == expect
    sim.config[base + 0x04 : base + 0x06] = (0x0000).to_bytes(2, "little")
    assert view.read(base + 0x04, 2) == expect  # read once at seize


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_the_power_budget_pcie6_registers_are_read_live_and_never_written(
    permissive: bool,
) -> None:
    view, sim, base = patched(CASES[IDS.index("power-budgeting")])
    view.settings.permissive = permissive
    # Data Scale[2] (bit 21) and the PCIe 6.0 control (+0x06) and sense detect (+0x0D): what
    # the device holds, each time
    sim.config[base + 0x08 : base + 0x0C] = (0x00200000 | 0x0102).to_bytes(4, "little")
    sim.config[base + 0x06 : base + 0x08] = (0x0001).to_bytes(2, "little")
    sim.config[base + 0x0D] = 0x03
    assert view.read(base + 0x08, 4) == 0x00200102
    assert view.read(base + 0x06, 2) == 0x0001
    assert view.read(base + 0x0D, 1) == 0x03
    view.write(base + 0x06, 2, 0xFFFF)
    view.write(base + 0x0D, 1, 0)
    assert sim.writes == []
