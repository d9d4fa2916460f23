"""Capabilities described beyond Linux's set, on the QEMU dumps that carry them.

For each: the guest reads what the device holds (reserved bits 0), a guest write to a control
that steers the host's fabric, IOMMU or other functions never reaches the device, in normal and
in permissive mode, and what the specification fixes is read once at seize, never again. The
masks and offsets below are the specification's (PCIe 6.0 chapter 7, PCI 3.0), written here
independently of dsl/. Capabilities no QEMU dump carries are laid out on a synthetic function
with a body whose reserved bits are set, so that reading them as 0 is seen; those that real
hardware in pciutils' test data carries (tests/fixtures/pciutils/README.md) are checked again on
its bytes, which no one here chose.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

import pytest

from pciback.engine import ConfigSpace
from pciback.engine.registers import RegisterInstance
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice
from pciback.sim.guest_scan import CountingDevice, view_of

from .builders import ConfigBuilder, endpoint
from .test_physical_reads import dump_named

Span = tuple[int, int]  # offset in the capability, size


@dataclass(frozen=True)
class Case:
    name: str
    dump: str  # fixture name prefix; "" for a synthetic function carrying `body`
    ident: int
    extended: bool
    # (offset, size, bits the guest reads as the device holds them; the others read 0)
    reads: list[tuple[int, int, int]] = field(default_factory=list)
    host_owned: list[Span] = field(default_factory=list)
    cached: list[Span] = field(default_factory=list)
    body: bytes = b""  # from offset 4 (extended) or 2 (standard), when no dump carries it


CASES = [
    Case(
        "acs",
        "pcie-root-port-1b36",
        0x000D,
        True,
        reads=[(0x04, 2, 0xFFFF), (0x06, 2, 0x1FFF)],
        host_owned=[(0x06, 2)],
        cached=[(0x04, 2)],
    ),
    Case(
        "ari",
        "nvme-1b36-0010-sriov-pf",
        0x000E,
        True,
        reads=[(0x04, 2, 0xFF03), (0x06, 2, 0x0073)],
        host_owned=[(0x06, 2)],
        cached=[(0x04, 2)],
    ),
    Case(
        "ari-vf",
        "nvme-1b36-0010-vf",
        0x000E,
        True,
        reads=[(0x04, 2, 0xFF03), (0x06, 2, 0x0073)],
        host_owned=[(0x06, 2)],
        cached=[(0x04, 2)],
    ),
    Case(
        "sriov",
        "nvme-1b36-0010-sriov-pf",
        0x0010,
        True,
        reads=[(0x04, 4, 0xFFE00007), (0x08, 2, 0x003F), (0x0A, 2, 0x0001)]
        + [(rel, 2, 0xFFFF) for rel in (0x0C, 0x0E, 0x10, 0x14, 0x16, 0x1A)]
        + [(0x12, 1, 0xFF), (0x13, 1, 0), (0x18, 2, 0)]
        + [(rel, 4, 0xFFFFFFFF) for rel in range(0x1C, 0x40, 4)],
        # VF Enable is set in this dump: a guest clearing it would pull the VFs from the host
        host_owned=[(0x08, 2), (0x0A, 2), (0x10, 2), (0x20, 4)]
        + [(rel, 4) for rel in range(0x24, 0x3C, 4)],
        cached=[(0x04, 4), (0x0C, 2), (0x0E, 2), (0x12, 1), (0x1A, 2), (0x1C, 4), (0x3C, 4)],
    ),
    Case(
        "ats",
        "virtio-net-1af4-1041-modern-aer-ats",
        0x000F,
        True,
        reads=[(0x04, 2, 0x00FF), (0x06, 2, 0x801F)],
        host_owned=[(0x06, 2)],
        cached=[(0x04, 2)],
    ),
    Case(
        "dsn",
        "e1000e-8086-10d3.bin",
        0x0003,
        True,
        reads=[(0x04, 4, 0xFFFFFFFF), (0x08, 4, 0xFFFFFFFF)],
        host_owned=[(0x04, 4), (0x08, 4)],  # read-only in the specification: in every mode
        cached=[(0x04, 4), (0x08, 4)],
    ),
    Case(
        "dvsec",
        "cxl-type3-8086-0d93",
        0x0023,
        True,
        reads=[(0x04, 4, 0xFFFFFFFF), (0x08, 2, 0xFFFF)],
        host_owned=[(0x04, 4), (0x08, 2)],  # read-only in the specification: in every mode
        cached=[(0x04, 4), (0x08, 2)],
    ),
    Case(
        "doe",
        "cxl-type3-8086-0d93",
        0x002E,
        True,
        reads=[
            (0x04, 4, 0xFFFFFFFF),
            (0x08, 4, 0x80000003),
            (0x0C, 4, 0x80000007),
            (0x10, 4, 0xFFFFFFFF),
            (0x14, 4, 0xFFFFFFFF),
        ],
        host_owned=[(0x04, 4)],  # read-only in the specification: in every mode
    ),
    Case(
        "pri",
        "",
        0x0013,
        True,
        reads=[(0x04, 2, 0x0003), (0x06, 2, 0x8103), (0x08, 4, 0xFFFFFFFF), (0x0C, 4, 0xFFFFFFFF)],
        host_owned=[(0x04, 2), (0x06, 2), (0x0C, 4)],
        cached=[(0x08, 4)],
        body=struct.pack("<HHII", 0xFFFD, 0xFFFF, 0x00000200, 0x00000040),  # enabled, stopped
    ),
    Case(
        "pasid",
        "",
        0x001B,
        True,
        reads=[(0x04, 2, 0x1F0E), (0x06, 2, 0x000F)],
        host_owned=[(0x06, 2)],
        cached=[(0x04, 2)],
        body=struct.pack("<HH", 0xFFFF, 0xFFFF),  # every enable on
    ),
    Case(
        "ltr",
        "",
        0x0018,
        True,
        reads=[(0x04, 2, 0x1FFF), (0x06, 2, 0x1FFF)],
        host_owned=[(0x04, 2), (0x06, 2)],
        body=struct.pack("<HH", 0xFFFF, 0xFFFF),
    ),
    Case(
        "l1ss",
        "",
        0x001E,
        True,
        reads=[(0x04, 4, 0x00FBFF3F), (0x08, 4, 0xE3FFFF3F), (0x0C, 4, 0x000000FB)],
        host_owned=[(0x08, 4), (0x0C, 4)],
        cached=[(0x04, 4)],
        body=struct.pack("<III", 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
    ),
    Case(
        "dpc",
        "",
        0x001D,
        True,
        reads=[(0x04, 2, 0x3FFF), (0x06, 2, 0x01FF), (0x08, 2, 0x3F7F), (0x0A, 2, 0xFFFF)],
        host_owned=[(0x06, 2), (0x08, 2), (0x0A, 2)],
        body=struct.pack("<HHHH", 0xFFDF, 0x0003, 0xFFFF, 0x0100),  # no RP extensions; triggered
    ),
    Case(
        "dpc-root-port",
        "",
        0x001D,
        True,
        reads=[(0x04, 2, 0x3FFF)] + [(rel, 4, 0xFFFFFFFF) for rel in range(0x0C, 0x30, 4)],
        host_owned=[(0x06, 2), (0x08, 2)] + [(rel, 4) for rel in range(0x0C, 0x30, 4)],
        body=struct.pack("<HHHH", 0x0020, 0x0003, 0x0001, 0) + b"\xff" * 0x24,
    ),
    Case(
        "ptm",
        "",
        0x001F,
        True,
        reads=[(0x04, 4, 0x0000FF1F), (0x08, 4, 0x0000FF03)],
        host_owned=[(0x08, 4)],
        cached=[(0x04, 4)],
        body=struct.pack("<II", 0xFFFFFFFF, 0xFFFFFFFF),
    ),
    Case(
        "rebar",
        "",
        0x0015,
        True,
        # two resizable BARs (count 2 in entry 0's control), reserved bits set on the device
        reads=[
            (0x04, 4, 0xFFFFFFF0),
            (0x08, 4, 0xFFFF3FE7),
            (0x0C, 4, 0xFFFFFFF0),
            (0x10, 4, 0xFFFF3F07),
        ],
        host_owned=[(0x08, 4), (0x10, 4)],
        cached=[(0x04, 4), (0x0C, 4)],
        body=struct.pack("<IIII", 0xFFFFFFFF, 0xFFFFC358, 0xFFFFFFFF, 0x0001C5FA),
    ),
    Case(
        "secondary-pcie",
        "",
        0x0019,
        True,
        reads=[(0x04, 4, 0x0000FE03), (0x08, 4, 0xFFFFFFFF)],
        host_owned=[(0x04, 4), (0x08, 4)],
        body=struct.pack("<II", 0xFFFFFFFF, 0x00000003),  # lanes 0 and 1 in error
    ),
    Case(
        "vsec",
        "",
        0x000B,
        True,
        reads=[(0x04, 4, 0xFFFFFFFF)],
        host_owned=[(0x04, 4)],  # read-only in the specification: in every mode
        cached=[(0x04, 4)],
        body=struct.pack("<II", 0x01010023, 0xA5A5A5A5),  # ID 0x23, revision 1, 16 bytes
    ),
    Case(
        "slot-id",
        "pci-bridge-1b36",
        0x04,
        False,
        reads=[(0x02, 1, 0x3F), (0x03, 1, 0xFF)],
        host_owned=[(0x02, 1), (0x03, 1)],  # chassis 5 here: the firmware's numbering
        cached=[(0x02, 1)],
    ),
    Case(
        "bridge-ssvid",
        "pcie-root-port-1b36",
        0x0D,
        False,
        reads=[(0x02, 2, 0x0000), (0x04, 2, 0xFFFF), (0x06, 2, 0xFFFF)],
        host_owned=[(0x04, 2), (0x06, 2)],  # read-only in the specification: in every mode
        cached=[(0x02, 2), (0x04, 2), (0x06, 2)],
    ),
    Case(
        "advanced-features",
        "",
        0x13,
        False,
        reads=[(0x02, 1, 0xFF), (0x03, 1, 0x03), (0x04, 1, 0x01), (0x05, 1, 0x01)],
        host_owned=[(0x04, 1)],  # initiate FLR
        cached=[(0x02, 1), (0x03, 1)],
        body=bytes([6, 0xFF, 0x00, 0xFF]),  # TP and FLR capable, transactions pending
    ),
    Case(
        "sata",
        "ich9-ahci-8086-2922",
        0x12,
        False,
        reads=[(0x02, 2, 0x00FF), (0x04, 4, 0x00FFFFFF)],
        host_owned=[(0x02, 2), (0x04, 4)],  # read-only in the specification: in every mode
        cached=[(0x02, 2), (0x04, 4)],
    ),
    Case(
        "shpc",
        "pci-bridge-1b36",
        0x0C,
        False,
        reads=[(0x02, 1, 0xFF), (0x03, 1, 0x01), (0x04, 4, 0xFFFFFFFF)],
        host_owned=[(0x02, 1), (0x04, 4)],
    ),
    Case(
        "pci-x",
        "",
        0x07,
        False,
        reads=[(0x02, 2, 0x307F), (0x04, 4, 0xFFFFFFFF)],
        body=struct.pack("<HI", 0xFFFF, 0xFFFFFFFF),
    ),
    Case(
        "hypertransport",
        "",
        0x08,
        False,
        reads=[(0x02, 2, 0xFFFF)],
        host_owned=[(0x02, 2)],
        body=struct.pack("<HII", 0xA801, 0xFEE00000, 0),  # an MSI mapping, enabled
    ),
    Case(
        "data-link-feature",
        "",
        0x0025,
        True,
        reads=[(0x04, 4, 0x807FFFFF), (0x08, 4, 0x807FFFFF)],
        host_owned=[(0x04, 4), (0x08, 4)],
        body=struct.pack("<II", 0xFFFFFFFF, 0xFFFFFFFF),
    ),
    Case(
        "physical-layer-16gt",
        "",
        0x0026,
        True,
        reads=[(0x04, 4, 0), (0x08, 4, 0), (0x0C, 4, 0x1F)]
        + [(rel, 4, 0xFFFFFFFF) for rel in (0x10, 0x14, 0x18)]
        + [(0x1C, 4, 0)],
        host_owned=[(rel, 4) for rel in range(0x04, 0x20, 4)],
        cached=[(0x04, 4), (0x08, 4)],  # reserved: no read at all
        body=b"\xff" * 0x1C,
    ),
    Case(
        "physical-layer-32gt",
        "",
        0x002A,
        True,
        reads=[(rel, 4, 0xFFFFFFFF) for rel in range(0x04, 0x20, 4)],
        host_owned=[(rel, 4) for rel in range(0x04, 0x20, 4)],
        cached=[(0x04, 4)],
        body=struct.pack("<7I", 0x703, 0x100, 0x1F, 1, 2, 3, 4),
    ),
    Case(
        "enhanced-allocation",
        "",
        0x14,
        False,
        reads=[(0x02, 1, 0x3F), (0x03, 1, 0)],
        host_owned=[(0x02, 2)],  # read-only in the specification: in every mode
        cached=[(0x02, 2)],
        body=struct.pack("<BBIII", 0xC1, 0xFF, 0x80000002, 0xFE000000, 0xFFF),  # one entry
    ),
    Case(
        "acs-egress-40",
        "",
        0x000D,
        True,
        # egress control with a 40-bit vector: two dwords of it, both the host's
        reads=[(0x04, 2, 0xFFFF), (0x06, 2, 0x1FFF), (0x08, 4, 0xFFFFFFFF), (0x0C, 4, 0xFFFFFFFF)],
        host_owned=[(0x06, 2), (0x08, 4), (0x0C, 4)],
        cached=[(0x04, 2)],
        body=struct.pack("<HHII", 0x287F, 0xFFFF, 0xFFFFFFFF, 0x000000FF),
    ),
    Case(
        "acs-egress-256",
        "",
        0x000D,
        True,
        # vector size 0 means 256 bits: eight dwords
        reads=[(0x06, 2, 0x1FFF)] + [(rel, 4, 0xFFFFFFFF) for rel in range(0x08, 0x28, 4)],
        host_owned=[(0x06, 2)] + [(rel, 4) for rel in range(0x08, 0x28, 4)],
        body=struct.pack("<HH8I", 0x007F, 0x0001, *range(1, 9)),
    ),
]

# Real functions from pciutils' test data, by fixture name prefix.
DSA = "intel-dsa-8086-0b25"  # PRI, PASID, LTR, ATS, DVSEC
WIRELESS = "intel-wireless-7265-8086-095a"  # LTR, L1 PM Substates, DSN
SAMSUNG = "samsung-pm174x-144d-a826"  # Secondary PCIe, 16 and 32 GT/s, DLF, SR-IOV, ARI, DSN
FIJI = "amd-fiji-1002-7300"  # Resizable BAR, VSEC, Secondary PCIe, PRI, PASID, ATS, ARI
ICH10_AHCI = "intel-ich10-ahci-8086-3a22"  # Advanced Features, SATA
CXL = "intel-cxl-8086-0d93"  # PTM (no role)
# ... and from a jailhouse-dev mail's archive (tests/fixtures/jailhouse/README.md).
SWITCH_PORT = "pmc-sierra-11f8-4036"  # DPC (no RP extensions), ACS with egress control


def on_hardware(name: str, dump: str, *, entries: int | None = None) -> Case:
    """Case `name`'s checks on a real function that carries the capability; `entries` keeps the
    spans of a resizable BAR's first entries only (two spans each: capability, control)."""
    case = next(c for c in CASES if c.name == name)
    if entries is not None:
        case = replace(
            case,
            reads=case.reads[: 2 * entries],
            host_owned=case.host_owned[:entries],
            cached=case.cached[:entries],
        )
    return replace(case, name=f"{name}@{dump}", dump=dump, body=b"")


CASES += [
    on_hardware("pri", DSA),
    on_hardware("pri", FIJI),
    on_hardware("pasid", DSA),
    on_hardware("pasid", FIJI),
    on_hardware("ltr", DSA),
    on_hardware("ltr", WIRELESS),
    on_hardware("l1ss", WIRELESS),
    on_hardware("rebar", FIJI, entries=1),  # one resizable BAR (BAR 0)
    on_hardware("secondary-pcie", SAMSUNG),
    on_hardware("secondary-pcie", FIJI),
    on_hardware("vsec", FIJI),
    on_hardware("physical-layer-16gt", SAMSUNG),
    on_hardware("physical-layer-32gt", SAMSUNG),
    on_hardware("data-link-feature", SAMSUNG),
    on_hardware("advanced-features", ICH10_AHCI),
    on_hardware("dpc", SWITCH_PORT),
    on_hardware("ptm", CXL),
    # described ones that QEMU's dumps carry too, on real hardware as well
    on_hardware("ats", DSA),
    on_hardware("ats", FIJI),
    on_hardware("ari", SAMSUNG),
    on_hardware("ari", FIJI),
    on_hardware("dsn", WIRELESS),
    on_hardware("dsn", SAMSUNG),
    on_hardware("dvsec", DSA),
    on_hardware("sriov", SAMSUNG),
    on_hardware("sata", ICH10_AHCI),
    on_hardware("acs", SWITCH_PORT),  # its egress vector: tests/model/test_dpc_acs_ptm_dump.py
]


def synthetic(case: Case) -> tuple[ConfigSpace, CountingDevice]:
    """A function carrying the capability as `case.body` lays it out, for capabilities that no
    QEMU dump has."""
    b = endpoint(size=4096 if case.extended else 256)
    b.pcie()
    if case.extended:
        b.ext_cap(case.ident, case.body)
    else:
        b.cap(case.ident, case.body)
    device = CountingDevice(b.sim())
    view = build_config_space(device)
    device.reads = 0
    return view, device


def located(case: Case) -> tuple[ConfigSpace, CountingDevice, SimDevice, int]:
    view, device = view_of(dump_named(case.dump)) if case.dump else synthetic(case)
    sim = device.inner
    assert isinstance(sim, SimDevice)
    find = view.extended_capability_offset if case.extended else view.capability_offset
    base = find(case.ident)
    assert base is not None, f"{case.dump} has no capability {case.ident:#x}"
    return view, device, sim, base


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_guest_reads_the_device(case: Case) -> None:
    view, _, sim, base = located(case)
    # (a VF's MSI-X is hidden: its BARs live in the PF; that is not this capability's problem)
    assert not [p for p in view.problems if "does not fit" in p or "overlaps" in p]
    for rel, size, mask in case.reads:
        assert isinstance(view.slot_at(base + rel), RegisterInstance), f"{rel:#x} undescribed"
        assert view.read(base + rel, size) == sim.read(base + rel, size) & mask


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_host_owned_controls_never_reach_the_device(case: Case, permissive: bool) -> None:
    if not case.host_owned:
        pytest.skip("no register of it is wholly the host's")
    view, _, sim, base = located(case)
    view.settings.permissive = permissive
    before = bytes(sim.config)
    for rel, size in case.host_owned:
        ones = (1 << (8 * size)) - 1
        for value in (ones, 0, sim.read(base + rel, size) ^ ones):
            view.write(base + rel, size, value)
    assert sim.writes == []
    assert bytes(sim.config) == before


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_what_the_specification_fixes_is_read_once(case: Case) -> None:
    if not case.cached:
        pytest.skip("no register of it is wholly read once")
    view, device, sim, base = located(case)
    seen = {(rel, size): view.read(base + rel, size) for rel, size in case.cached}
    assert device.reads == 0
    for rel, size in case.cached:  # the device's copy changing cannot show: it was invariant
        for i in range(size):
            sim.config[base + rel + i] ^= 0xFF
    assert {span: view.read(base + span[0], span[1]) for span in seen} == seen
    assert device.reads == 0


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_every_dvsec_header_is_described_and_its_body_stays_the_vendors(permissive: bool) -> None:
    view, device = view_of(dump_named("cxl-type3-8086-0d93"))
    sim = device.inner
    assert isinstance(sim, SimDevice)
    view.settings.permissive = permissive
    dvsecs = [c.offset for c in view.exposed_extended if c.ident == 0x0023]
    assert len(dvsecs) == 3  # MANIFEST.md: CXL device, register locator, GPF
    for base in dvsecs:
        assert view.read(base + 4, 4) & 0xFFFF == 0x1E98  # the CXL consortium's vendor ID
        assert isinstance(view.slot_at(base + 8), RegisterInstance)
        body = base + 0x0C  # the vendor's layout: the engine default, as Linux
        assert not isinstance(view.slot_at(body), RegisterInstance)
        assert view.read(body, 4) == sim.read(body, 4)
        view.write(body, 4, 0xA5A5A5A5)
    if permissive:
        assert [w[0] for w in sim.writes] == [base + 0x0C for base in dvsecs]
    else:
        assert sim.writes == []


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_the_doe_mailbox_is_the_guests_in_permissive_mode_only(permissive: bool) -> None:
    # As Linux: the mailbox is the function's own, undescribed there, so permissive opens it.
    view, device = view_of(dump_named("cxl-type3-8086-0d93"))
    sim = device.inner
    assert isinstance(sim, SimDevice)
    view.settings.permissive = permissive
    base = view.extended_capability_offset(0x002E)
    assert base is not None
    sim.config[base + 0x0C] |= 0x02  # an interrupt is pending
    view.write(base + 0x10, 4, 0x00010001)  # a discovery request's first dword
    view.write(base + 0x08, 4, 0x80000002)  # go, interrupt enable
    view.write(base + 0x0C, 4, 0x00000000)  # a write of the status read back as 0s
    if not permissive:
        assert sim.writes == []
        return
    assert sim.read(base + 0x0C, 4) & 0x02  # the pending interrupt was not acknowledged
    view.write(base + 0x0C, 4, 0x00000002)  # acknowledged now
    # only the bytes holding a bit the guest may change; go lands after interrupt enable
    assert sim.writes == [
        (base + 0x10, 4, 0x00010001),
        (base + 0x08, 1, 0x02),
        (base + 0x0B, 1, 0x80),
        (base + 0x0C, 1, 0x02),
    ]


def test_pci_x_function_controls_are_the_guests_in_permissive_mode_only() -> None:
    for permissive in (False, True):
        b = endpoint()
        pos = b.cap(0x07, struct.pack("<HI", 0x0000, 0x200C0108))  # errors 18 and 29 pending
        view, sim = b.space(permissive=permissive)
        view.write(pos + 2, 2, 0x007F)  # every command bit a guest could want
        view.write(pos + 4, 4, 0x00040000)  # acknowledge split completion discarded
        command = sim.read(pos + 2, 2)
        assert command == (0x007E if permissive else 0x0000)  # parity recovery: the host's
        written = [(o, v) for o, _, v in sim.writes if pos + 4 <= o < pos + 8]
        assert written == [(pos + 6, 0x04)]  # only the guest's 1: error 29 stays pending


@pytest.mark.parametrize("class_code", [0x060400, 0x060940], ids=["pci-bridge", "semi-transparent"])
@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_a_pci_x_bridge_is_the_hosts(permissive: bool, class_code: int) -> None:
    # A bridge's layout goes with the header (type 1), whatever the class says: a
    # semi-transparent bridge's secondary status is no function's command register.
    b = ConfigBuilder(header_type=1, class_code=class_code)
    pos = b.cap(0x07, b"\xff" * 14)
    view, sim = b.space(permissive=permissive)
    assert view.read(pos + 2, 2) == 0xF3FF  # reserved bits 11:10 read 0
    for rel, size in ((0x02, 2), (0x04, 4), (0x08, 4), (0x0C, 4)):
        view.write(pos + rel, size, 0)
    assert sim.writes == []


def test_a_hypertransport_msi_mapping_address_is_the_hosts() -> None:
    # The body of an MSI mapping (type 10101, not fixed): the address MSIs are mapped at,
    # bits 31:20 of +0x04 and +0x08 (Linux HT_MSI_ADDR_LO_MASK, HT_MSI_ADDR_HI).
    for permissive in (False, True):
        b = endpoint()
        pos = b.cap(0x08, struct.pack("<HII", 0xA800, 0xFEE0ABCD, 0))  # an MSI mapping
        view, sim = b.space(permissive=permissive)
        assert view.read(pos + 4, 4) == 0xFEE00000  # bits 19:0 reserved
        view.write(pos + 2, 2, 0xA801)  # the mapping's enable: the host's
        view.write(pos + 4, 4, 0xFED00000)
        view.write(pos + 8, 4, 0x1)
        assert sim.writes == []


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_other_hypertransport_bodies_are_the_hosts_in_every_mode(permissive: bool) -> None:
    # A fixed MSI mapping has no address registers, and an extended configuration access
    # capability (type 10011) has no table: their bytes configure the host's fabric too, read
    # from the device and never written, in permissive mode too (Linux: written in permissive
    # mode). (Both end the function's capability list, so +0x04 is no one else's.)
    for command in (0xA802, 0x9800):
        b = endpoint()
        pos = b.cap(0x08, struct.pack("<HII", command, 0x12345678, 0))
        view, sim = b.space(permissive=permissive)
        assert view.read(pos + 4, 4) == 0x12345678
        view.write(pos + 4, 4, 0x1)
        assert sim.writes == []
        assert view.read(pos + 4, 4) == 0x12345678


@pytest.mark.parametrize(
    ("command", "length"), [(0x0000, 0x1C), (0x2000, 0x18)], ids=["slave", "host"]
)
def test_hypertransport_link_configuration_is_the_hosts(command: int, length: int) -> None:
    # Slave/primary (type 000, 28 bytes, Linux HT_CAP_SIZEOF_LONG) and host/secondary (type
    # 001, 24 bytes, HT_CAP_SIZEOF_SHORT): the link's set-up, in permissive mode too.
    b = endpoint()
    pos = b.cap(0x08, struct.pack("<H", command) + b"\xa5" * (length - 4) + b"\x5a" * 8)
    view, sim = b.space(permissive=True)
    assert not view.problems
    for rel in range(0x04, length, 4):
        assert isinstance(view.slot_at(pos + rel), RegisterInstance), f"{rel:#x}"
        assert view.read(pos + rel, 4) == 0xA5A5A5A5
        view.write(pos + rel, 4, 0)
    assert sim.writes == []
    assert not isinstance(view.slot_at(pos + length), RegisterInstance)  # past the body


def test_a_hypertransport_interrupt_window_is_the_hosts() -> None:
    # Interrupt discovery (type 10000): the command's low byte is the index, +0x04 the data.
    b = endpoint()
    pos = b.cap(0x08, struct.pack("<HI", 0x8010, 0xC0FFEE00))
    view, sim = b.space(permissive=True)
    assert view.read(pos + 4, 4) == 0xC0FFEE00
    view.write(pos + 2, 1, 0x12)
    view.write(pos + 4, 4, 0)
    assert sim.writes == []


def test_an_open_ended_table_yields_where_a_device_overlaps_capabilities() -> None:
    # QEMU's AMD IOMMU function lays its HyperTransport capability (0x5c) over the address of
    # its MSI capability (0x58): the MSI address, Xen's, keeps its register; HT's yields.
    view, _ = view_of(dump_named("amd-iommu-pci-1022-0008"))
    address = view.slot_at(0x5E)
    assert isinstance(address, RegisterInstance) and address.reg.name == "address"
    # Its type is slave (a 4-byte stub): the slave body's registers, from 0x60, are the next
    # capability's bytes and are left out.
    assert view.problems[0] == (
        "ht.command at 0x5e overlaps another block; the device's capability list is inconsistent"
    )
    assert view.problems[1:] == [
        f"ht.slave_link{i} at {0x60 + 4 * i:#x} does not fit the device's capability;"
        " left undescribed"
        for i in range(6)
    ]
    following = view.slot_at(0x64)  # the address of the MSI capability at 0x60
    assert isinstance(following, RegisterInstance) and following.block == "msi"


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_a_bridges_enhanced_allocation_keeps_its_fixed_buses(permissive: bool) -> None:
    b = ConfigBuilder(header_type=1, class_code=0x060400)
    pos = b.cap(0x14, struct.pack("<BBI", 0x00, 0x00, 0xFFFF0302))  # no entries; buses 2-3
    view, sim = b.space(permissive=permissive)
    assert view.read(pos + 4, 4) == 0x00000302
    view.write(pos + 4, 4, 0)
    assert sim.writes == []


def _instances(view: ConfigSpace, block: str) -> list[tuple[int, str]]:
    return sorted((r.offset - r.block_base, r.reg.name) for r in view.registers if r.block == block)


@pytest.mark.parametrize("count", range(8))
def test_every_resizable_bar_entry_the_count_names_is_described(count: int) -> None:
    # Entry 0's control counts the entries (PCIe 6.0 7.8.6.3): 1 to 6, the others read as the
    # nearest; entry n's capability and control at 0x04 + 8n and 0x08 + 8n.
    b = endpoint(size=4096)
    b.pcie()
    b.ext_cap(0x15, b"".join(struct.pack("<II", 0xFFFFFFF0, count << 5) for _ in range(7)))
    view, _ = b.space()
    entries = max(1, min(count, 6))
    assert _instances(view, "rebar") == sorted(
        (at + 8 * n, f"{kind}{n}")
        for n in range(entries)
        for at, kind in ((4, "caps"), (8, "control"))
    )


@pytest.mark.parametrize("egress", [False, True], ids=["no egress control", "egress control"])
@pytest.mark.parametrize("size", [1, 32, 33, 64, 65, 200, 224, 225, 255, 0])
def test_the_acs_egress_vector_has_a_dword_per_32_bits(size: int, egress: bool) -> None:
    # Vector size 0 means 256 bits (PCIe 6.0 7.7.8.2): eight dwords.
    b = endpoint(size=4096)
    b.pcie()
    b.ext_cap(0x000D, struct.pack("<HH", (size << 8) | (0x20 if egress else 0), 0) + bytes(32))
    view, _ = b.space()
    dwords = ((size or 256) + 31) // 32 if egress else 0
    assert _instances(view, "acs") == [(4, "caps"), (6, "control")] + [
        (8 + 4 * n, f"egress{n}") for n in range(dwords)
    ]
