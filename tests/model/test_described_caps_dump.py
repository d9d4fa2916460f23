"""Real functions from pciutils' test data that carry capabilities described beyond Linux's set
(tests/fixtures/pciutils/README.md): each loads as the function it was, its capability lists as
the hardware links them, and the guest's view of it walks the same lists with nothing written
at seize. What each capability reads, which of its registers are the host's and what is read
once are tests/model/test_described_caps.py's, whose cases name these dumps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pciback.dumps import load_config
from pciback.engine.chain import walk
from pciback.engine.registers import RegisterInstance
from pciback.generated.names import (
    AER,
    AF,
    ARI,
    ATS,
    DLF,
    DSN,
    DVSEC,
    L1SS,
    LTR,
    MSI,
    MSIX,
    PASID,
    PCIE,
    PL16,
    PL32,
    PM,
    PRI,
    REBAR,
    SATA,
    SECPCIE,
    SRIOV,
    TPH,
    VC,
    VSEC,
)
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice

from .builders import CAP_VENDOR, PCIUTILS

Listed = list[tuple[int, int]]  # (capability ID, where the function has it), in list order


@dataclass(frozen=True)
class Function:
    file: str
    address: str
    size: int
    standard: Listed
    extended: Listed  # the described ones; the list may hold others between them

    @property
    def path(self) -> Path:
        return PCIUTILS / self.file


FUNCTIONS = [
    Function(
        "intel-dsa-8086-0b25-pri-pasid.lspci.txt",
        "0000:6a:01.0",
        4096,
        [(PCIE.id, 0x40), (MSIX.id, 0x80), (PM.id, 0x90)],
        [
            (AER.id, 0x100),
            (LTR.id, 0x150),
            (TPH.id, 0x160),
            (VC.id, 0x170),
            (DVSEC.id, 0x200),
            (ATS.id, 0x220),
            (PASID.id, 0x230),
            (PRI.id, 0x240),
        ],
    ),
    Function(
        "intel-wireless-7265-8086-095a-l1ss.lspci.txt",
        "0000:01:00.0",
        4096,
        [(PM.id, 0xC8), (MSI.id, 0xD0), (PCIE.id, 0x40)],
        [(AER.id, 0x100), (DSN.id, 0x140), (LTR.id, 0x14C), (L1SS.id, 0x154)],
    ),
    Function(
        "samsung-pm174x-144d-a826-phy32.lspci.txt",
        "0000:2e:00.0",
        4096,
        [(PM.id, 0x40), (PCIE.id, 0x70), (MSIX.id, 0xB0)],
        [
            (AER.id, 0x100),
            (DSN.id, 0x148),
            (ARI.id, 0x168),
            (SECPCIE.id, 0x178),
            (PL16.id, 0x198),
            (PL32.id, 0x1D4),  # after Lane Margining at the Receiver, which no table describes
            (SRIOV.id, 0x1F8),
            (DLF.id, 0x3C0),
        ],
    ),
    Function(
        "amd-fiji-1002-7300-rebar.lspci.txt",
        "0000:09:00.0",
        4096,
        [(CAP_VENDOR, 0x48), (PM.id, 0x50), (PCIE.id, 0x58), (MSI.id, 0xA0)],
        [
            (VSEC.id, 0x100),
            (AER.id, 0x150),
            (REBAR.id, 0x200),
            (SECPCIE.id, 0x270),
            (ATS.id, 0x2B0),
            (PRI.id, 0x2C0),
            (PASID.id, 0x2D0),
            (ARI.id, 0x328),
        ],
    ),
    Function(
        "intel-ich10-ahci-8086-3a22-af.lspci.txt",
        "0000:00:1f.2",
        256,
        [(MSI.id, 0x80), (PM.id, 0x70), (SATA.id, 0xA8), (AF.id, 0xB0)],
        [],
    ),
]
IDS = [f.file.removesuffix(".lspci.txt") for f in FUNCTIONS]


def named(listed: Listed, chain: Listed) -> Listed:
    ids = {ident for ident, _ in listed}
    return [(ident, at) for ident, at in chain if ident in ids]


def test_every_fixture_is_here() -> None:
    assert {f.path for f in FUNCTIONS} <= set(PCIUTILS.glob("*.lspci.txt"))


@pytest.mark.parametrize("function", FUNCTIONS, ids=IDS)
def test_the_dump_loads_as_the_function_with_its_lists(function: Function) -> None:
    dump = load_config(function.path)
    assert (dump.address, len(dump.config)) == (function.address, function.size)
    chains = walk(SimDevice(function.address, dump.config).read, len(dump.config))
    assert not chains.problems
    assert [(c.ident, c.offset) for c in chains.standard] == function.standard
    extended = [(c.ident, c.offset) for c in chains.extended]
    assert named(function.extended, extended) == function.extended


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize("function", FUNCTIONS, ids=IDS)
def test_the_guest_walks_the_lists_the_device_has(function: Function, permissive: bool) -> None:
    sim = SimDevice(function.address, function.path)
    view = build_config_space(sim, permissive=permissive)
    assert view.problems == [] and view.warnings == []
    assert sim.history == []  # seizing wrote nothing
    guest, device = walk(view.read, view.size), walk(sim.read, sim.config_size)
    assert not guest.problems
    assert (guest.standard, guest.extended) == (device.standard, device.extended)


SAMSUNG = FUNCTIONS[2]
SAMSUNG_PCIE = dict(SAMSUNG.standard)[PCIE.id]
SAMSUNG_SECPCIE = dict(SAMSUNG.extended)[SECPCIE.id]
LANES: tuple[Any, ...] = (
    SECPCIE.LANE_EQUALIZATION0,
    SECPCIE.LANE_EQUALIZATION1,
    SECPCIE.LANE_EQUALIZATION2,
    SECPCIE.LANE_EQUALIZATION3,
)


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_presets_past_the_link_width_are_the_vendors_as_in_linux(permissive: bool) -> None:
    # The drive links at most x2 but holds four lanes' presets: the specification sizes the
    # array by the width, so the entries of lanes 2 and 3 are the vendor's bytes, read from the
    # device and written through in permissive mode only (docs/policy-vs-linux.md).
    sim = SimDevice(SAMSUNG.address, SAMSUNG.path)
    width = PCIE.LINKCAP.MAX_WIDTH.get(
        sim.read(SAMSUNG_PCIE + PCIE.LINKCAP.offset, PCIE.LINKCAP.width)
    )
    assert width == 2
    view = build_config_space(sim, permissive=permissive)
    for lane, entry in enumerate(LANES):
        at = SAMSUNG_SECPCIE + entry.offset
        described = isinstance(view.slot_at(at), RegisterInstance)
        assert described == (lane < width), f"lane {lane}"
        held = sim.read(at, entry.width)
        assert view.read(at, entry.width) == held
        if described:
            continue
        assert held  # the device does keep presets there
        view.write(at, entry.width, held ^ 0x1)
        assert sim.read(at, entry.width) == (held ^ 0x1 if permissive else held), f"lane {lane}"
