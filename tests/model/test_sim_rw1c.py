"""The simulated device clears, as hardware does, a status bit software writes a 1 to, in the
capabilities too (pciback.dumps.rw1c), on real dumps: QEMU's e1000e (PCIe, PM, AER), QEMU's
PCI bridge (the secondary status) and a real PCI-X NIC (its split completion errors).

Each test sets the bits the way the device would (in its bytes, not by a write), then writes:
a 1 clears its bit alone, a 0 leaves every bit as it was, and bits of the same register that
are no status keep taking the write as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pciback.engine.chain import walk
from pciback.generated.names import AER, PCIE, PCIX, PM, TYPE1
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice

from .builders import ADDRESS, FIXTURES, endpoint

E1000E = FIXTURES / "qemu" / "e1000e-8086-10d3.bin"
BRIDGE = FIXTURES / "qemu" / "pci-bridge-1b36-0001.bin"
ROOT_PORT = FIXTURES / "qemu" / "pcie-root-port-1b36-000c.bin"
LKML = Path(__file__).resolve().parents[1] / "fixtures" / "lkml"
PCIX_NIC = LKML / "broadcom-bcm5703x-14e4-16a7-pcix.lspci.txt"
needs_qemu = pytest.mark.skipif(
    not (E1000E.is_file() and BRIDGE.is_file() and ROOT_PORT.is_file()), reason="QEMU dumps absent"
)


def device(path: Path) -> SimDevice:
    return SimDevice(ADDRESS, path)


def find(sim: SimDevice, ident: int, *, extended: bool = False) -> int:
    chains = walk(sim.read, sim.config_size)
    found = [
        c.offset for c in (chains.extended if extended else chains.standard) if c.ident == ident
    ]
    assert found, f"no capability {ident:#x}"
    return found[0]


def raise_bits(sim: SimDevice, at: int, width: int, bits: int) -> int:
    """The device sets `bits` of the register at `at` itself; returns the register's value."""
    value = sim.read(at, width) | bits
    sim.config[at : at + width] = value.to_bytes(width, "little")
    return value


def check_rw1c(sim: SimDevice, at: int, register: Any, first: Any, second: Any) -> None:
    # Written as software does, the register as read with the status bits to keep at 0.
    both = first.mask | second.mask
    value = raise_bits(sim, at, register.width, both)
    rest = value & ~both
    sim.write(at, register.width, rest)
    assert sim.read(at, register.width) == value  # a 0 clears nothing
    sim.write(at, register.width, rest | first.mask)
    assert sim.read(at, register.width) == value & ~first.mask  # the 1 cleared its bit alone
    sim.write(at, register.width, rest | both)
    assert sim.read(at, register.width) == rest


@needs_qemu
def test_pcie_device_status_errors_clear_on_a_1() -> None:
    sim = device(E1000E)
    at = find(sim, PCIE.id) + PCIE.DEVSTA.offset
    check_rw1c(sim, at, PCIE.DEVSTA, PCIE.DEVSTA.COR_ERR_DETECTED, PCIE.DEVSTA.UR_DETECTED)


@needs_qemu
def test_pcie_link_status_bandwidth_bits_clear_on_a_1() -> None:
    sim = device(E1000E)
    at = find(sim, PCIE.id) + PCIE.LINKSTA.offset
    check_rw1c(
        sim, at, PCIE.LINKSTA, PCIE.LINKSTA.BW_MGMT_STATUS, PCIE.LINKSTA.AUTONOMOUS_BW_STATUS
    )


@needs_qemu
def test_pme_status_clears_on_a_1_and_the_power_state_still_takes_the_write() -> None:
    sim = device(E1000E)
    at = find(sim, PM.id) + PM.PMCSR.offset
    value = raise_bits(sim, at, PM.PMCSR.width, PM.PMCSR.PME_STATUS.mask)
    sim.write(at, PM.PMCSR.width, PM.PMCSR.POWER_STATE.put(value & ~PM.PMCSR.PME_STATUS.mask, 3))
    after = sim.read(at, PM.PMCSR.width)
    assert PM.PMCSR.POWER_STATE.get(after) == 3 and after & PM.PMCSR.PME_STATUS.mask
    sim.write(at, PM.PMCSR.width, after)  # read-modify-write with the status bit as read
    assert not sim.read(at, PM.PMCSR.width) & PM.PMCSR.PME_STATUS.mask


@needs_qemu
def test_aer_status_bits_clear_on_a_1() -> None:
    sim = device(E1000E)
    aer = find(sim, AER.id, extended=True)
    unc = AER.UNCORRECTABLE_STATUS
    check_rw1c(sim, aer + unc.offset, unc, unc.COMPLETION_TIMEOUT, unc.UNSUPPORTED_REQUEST)
    cor = AER.CORRECTABLE_STATUS
    check_rw1c(sim, aer + cor.offset, cor, cor.RECEIVER_ERROR, cor.BAD_TLP)


@needs_qemu
def test_a_bridges_secondary_status_errors_clear_on_a_1() -> None:
    sim = device(BRIDGE)
    sec = TYPE1.SECONDARY_STATUS
    check_rw1c(sim, sec.offset, sec, sec.RECEIVED_MASTER_ABORT, sec.DETECTED_PARITY_ERROR)
    ctl = TYPE1.BRIDGE_CONTROL
    check_rw1c(sim, ctl.offset, ctl, ctl.DISCARD_TIMER_STATUS, ctl.DISCARD_TIMER_STATUS)


def test_pcix_split_completion_errors_clear_on_a_1() -> None:
    sim = device(PCIX_NIC)
    at = find(sim, PCIX.id) + PCIX.STATUS.offset
    check_rw1c(sim, at, PCIX.STATUS, PCIX.STATUS.SPLIT_DISCARDED, PCIX.STATUS.SPLIT_ERROR_MESSAGE)


def test_a_short_capability_lends_no_offset_to_the_one_after_it() -> None:
    # A PCIe capability whose next capability (by address) starts before its device status:
    # the bytes there are the next one's (its capabilities register, which this device stores).
    b = endpoint()
    pcie = b.cap(PCIE.id, bytes(6))
    after = b.cap(PM.id, bytes(6))
    sim = SimDevice(ADDRESS, b.build())
    assert after < pcie + PCIE.DEVSTA.offset + PCIE.DEVSTA.width
    at = pcie + PCIE.DEVSTA.offset
    raise_bits(sim, at, PCIE.DEVSTA.width, PCIE.DEVSTA.COR_ERR_DETECTED.mask)
    sim.write(at, PCIE.DEVSTA.width, 0)
    assert sim.read(at, PCIE.DEVSTA.width) & PCIE.DEVSTA.COR_ERR_DETECTED.mask == 0  # stored


@needs_qemu
def test_a_guest_acknowledging_an_error_clears_it_on_the_device() -> None:
    # Through the policy (rw1c: the guest's 1 reaches the device) to the simulated hardware.
    sim = device(E1000E)
    view = build_config_space(sim)
    at = find(sim, PCIE.id) + PCIE.DEVSTA.offset
    cor, ur = PCIE.DEVSTA.COR_ERR_DETECTED.mask, PCIE.DEVSTA.UR_DETECTED.mask
    raise_bits(sim, at, PCIE.DEVSTA.width, cor | ur)
    assert view.read(at, PCIE.DEVSTA.width) & (cor | ur) == cor | ur
    view.write(at, PCIE.DEVSTA.width, cor)
    assert sim.read(at, PCIE.DEVSTA.width) & (cor | ur) == ur
    assert view.read(at, PCIE.DEVSTA.width) & (cor | ur) == ur


@needs_qemu
def test_the_root_registers_clear_on_a_1_on_a_root_port() -> None:
    sim = device(ROOT_PORT)
    root = find(sim, PCIE.id) + PCIE.ROOTSTA.offset
    check_rw1c(sim, root, PCIE.ROOTSTA, PCIE.ROOTSTA.PME_STATUS, PCIE.ROOTSTA.PME_STATUS)
    ers = AER.ROOT_ERROR_STATUS
    at = find(sim, AER.id, extended=True) + ers.offset
    check_rw1c(sim, at, ers, ers.ERR_COR_RECEIVED, ers.FATAL_MESSAGES)
    slot = find(sim, PCIE.id) + PCIE.SLOTSTA.offset
    check_rw1c(sim, slot, PCIE.SLOTSTA, PCIE.SLOTSTA.PRESENCE_CHANGED, PCIE.SLOTSTA.DLL_CHANGED)


@needs_qemu
def test_an_endpoint_has_no_root_or_slot_registers_to_clear() -> None:
    # Where a root port has its root error status, an endpoint's AER capability has bytes of no
    # meaning to the device (and its PCIe capability no slot): a write stores there.
    sim = device(E1000E)
    places = (
        (find(sim, AER.id, extended=True) + AER.ROOT_ERROR_STATUS.offset, AER.ROOT_ERROR_STATUS),
        (find(sim, PCIE.id) + PCIE.SLOTSTA.offset, PCIE.SLOTSTA),
    )
    for at, register in places:
        value = raise_bits(sim, at, register.width, 1)
        sim.write(at, register.width, value & ~1)
        assert sim.read(at, register.width) == value & ~1, f"{at:#x}"
