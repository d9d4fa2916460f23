"""MSI and MSI-X are enabled only in D0, as the host's PCI core enables them (pci_enable_msi and
pci_enable_msix_exact answer -EINVAL for a function in another state; Linux's backend turns the
MSI one into XEN_PCI_ERR_op_failed and hands the MSI-X one over raw, where this backend answers
op_failed for every refused interrupt op). In D1, D2 or D3hot a function decodes none of its
BARs: the host would otherwise program an MSI-X table it cannot reach.

On QEMU's e1000e dump (PM at 0xc8, MSI at 0xd0, MSI-X at 0xa0 in BAR3), driven through the
page; the dump's function supports neither D1 nor D2, so that support is patched in."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.errors import XenPciError
from pciback.generated.names import MSI as MSI_NAMES
from pciback.generated.names import MSIX as MSIX_NAMES
from pciback.generated.names import PM as PM_NAMES
from pciback.protocol.abi import Cmd
from pciback.protocol.interrupts import D3COLD, power_state
from pciback.sim import SimGuest, SimHost
from pciback.sim.device import SimDevice

from .simconfig import FIXTURES, refused

DUMP = Path(FIXTURES) / "qemu" / "e1000e-8086-10d3.bin"
pytestmark = pytest.mark.skipif(not DUMP.is_file(), reason=f"{DUMP} is absent")
ADDR = "0000:03:00.0"
PM, MSI, MSIX = 0xC8, 0xD0, 0xA0
PMC, PMCSR = PM + PM_NAMES.PMC.offset, PM + PM_NAMES.PMCSR.offset
D1_SUPPORT, D2_SUPPORT = PM_NAMES.PMC.D1_SUPPORT.mask, PM_NAMES.PMC.D2_SUPPORT.mask


def config() -> bytes:
    cfg = bytearray(DUMP.read_bytes())
    assert (cfg[PM], cfg[MSI], cfg[MSIX]) == (PM_NAMES.id, MSI_NAMES.id, MSIX_NAMES.id)
    pmc = int.from_bytes(cfg[PMC : PMC + 2], "little") | D1_SUPPORT | D2_SUPPORT
    cfg[PMC : PMC + 2] = pmc.to_bytes(2, "little")
    return bytes(cfg)


def attach(host: SimHost) -> tuple[SimGuest, SimDevice, str]:
    device = host.add_device(ADDR, config())
    guest = host.attach(1, [ADDR])
    (addr,) = guest.devices
    host.hypervisor.calls.clear()
    return guest, device, addr


def enter(guest: SimGuest, addr: str, state: int) -> None:
    guest.conf_write(addr, PMCSR, 2, state)
    assert guest.conf_read(addr, PMCSR, 2) & PM_NAMES.PMCSR.POWER_STATE.mask == state


@pytest.mark.parametrize("state", [1, 2, 3])
def test_neither_msi_nor_msix_is_enabled_outside_d0(host: SimHost, state: int) -> None:
    guest, device, addr = attach(host)
    enter(guest, addr, state)
    assert device.power_state == state
    assert refused(lambda: guest.enable_msi(addr)) is XenPciError.OP_FAILED
    assert refused(lambda: guest.enable_msix(addr, [0, 1])) is XenPciError.OP_FAILED
    multi = guest.frontend.do_op(Cmd.ENABLE_MULTI_MSI, addr, info=1)
    assert multi.err == XenPciError.OP_FAILED
    assert host.hypervisor.calls == []  # nothing was mapped, not even for a moment
    assert device.msi_vectors == 0 and device.msix_entries is None
    msi_control = guest.conf_read(addr, MSI + MSI_NAMES.CONTROL.offset, 2)
    msix_control = guest.conf_read(addr, MSIX + MSIX_NAMES.CONTROL.offset, 2)
    assert not msi_control & MSI_NAMES.CONTROL.ENABLE.mask
    assert not msix_control & MSIX_NAMES.CONTROL.ENABLE.mask


def test_back_in_d0_both_are_enabled_again(host: SimHost) -> None:
    guest, device, addr = attach(host)
    enter(guest, addr, 3)
    assert refused(lambda: guest.enable_msix(addr, [0])) is XenPciError.OP_FAILED
    enter(guest, addr, 0)
    assert len(guest.enable_msix(addr, [0, 1])) == 2
    assert device.msix_entries == (0, 1)
    guest.disable_msix(addr)
    assert guest.enable_msi(addr) > 0 and device.msi_vectors == 1


def test_the_state_is_read_from_the_device_not_the_guests_view() -> None:
    device = SimDevice(ADDR, config())
    assert power_state(device) == 0
    device.set_power_state(3)
    assert power_state(device) == 3
    bare = bytearray(config())
    bare[0x06] &= ~0x10  # no capability list: no PM, always D0 for the host's PCI core
    assert power_state(SimDevice(ADDR, bytes(bare))) == 0
    vf = bytearray(config())
    vf[0:4] = b"\xff\xff\xff\xff"  # an SR-IOV VF's IDs read all ones: its state is still read
    assert power_state(SimDevice(ADDR, bytes(vf))) == 0
    gone = SimDevice(ADDR, b"\xff" * 256)  # powered off or surprise-removed
    assert power_state(gone) == D3COLD
