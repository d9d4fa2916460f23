"""The interrupt ops decide from the device, not only from their own bookkeeping: with interrupt
control allowed, a guest's config writes can turn MSI or MSI-X on or off behind the ops; and a
bridge can be seized with the host's interrupts still on."""

from __future__ import annotations

import pytest

from pciback.errors import XenPciError
from pciback.generated.names import MSI, MSIX
from pciback.sim import SimGuest, SimHost
from pciback.sim.device import SimDevice
from pciback.sim.fixtures import fixture

from .simconfig import refused

try:
    E1000E = fixture("qemu/e1000e-8086-10d3.bin")  # QEMU's e1000e, as in the lab
except FileNotFoundError:
    pytest.skip("../shared/fixtures/qemu is absent", allow_module_level=True)

ADDR = "0000:03:00.0"
MSI_ENABLE = MSI.CONTROL.ENABLE.mask
MSIX_ENABLE = MSIX.CONTROL.ENABLE.mask


def control(device: SimDevice, block: type[MSI] | type[MSIX]) -> int:
    """Where the device's MSI or MSI-X control is (the dump's: MSI at 0xd0, MSI-X at 0xa0)."""
    cap = device.find_capability(block.id)
    assert cap is not None
    return cap + block.CONTROL.offset


def attach_with_interrupt_control(host: SimHost) -> tuple[SimGuest, SimDevice]:
    device = host.add_device(ADDR, E1000E)
    guest = host.attach(1, [ADDR])
    host.daemon.pool.set_interrupt_control(ADDR)
    host.hypervisor.calls.clear()
    return guest, device


def test_msix_turned_off_by_a_config_write_can_be_enabled_again(host: SimHost) -> None:
    guest, device = attach_with_interrupt_control(host)
    first = guest.enable_msix(ADDR, [0, 1])
    at = control(device, MSIX)
    value = guest.conf_read(ADDR, at, MSIX.CONTROL.width)
    guest.conf_write(ADDR, at, MSIX.CONTROL.width, value & ~MSIX_ENABLE)  # behind the ops
    assert device.read(at, MSIX.CONTROL.width) & MSIX_ENABLE == 0
    again = guest.enable_msix(ADDR, [0, 1])
    assert host.hypervisor.pirqs_of(1) == sorted(again)  # the first mapping is gone
    assert all(("unmap_pirq", 1, p) in host.hypervisor.calls for p in first)
    assert device.msix_entries == (0, 1)


def test_msi_turned_off_by_a_config_write_lets_msix_on(host: SimHost) -> None:
    guest, device = attach_with_interrupt_control(host)
    pirq = guest.enable_msi(ADDR)
    at = control(device, MSI)
    value = guest.conf_read(ADDR, at, MSI.CONTROL.width)
    guest.conf_write(ADDR, at, MSI.CONTROL.width, value & ~MSI_ENABLE)
    vectors = guest.enable_msix(ADDR, [0])
    assert host.hypervisor.pirqs_of(1) == vectors  # the MSI PIRQ went first (and may be reused)
    assert host.hypervisor.calls.index(("unmap_pirq", 1, pirq)) < len(host.hypervisor.calls) - 1
    assert device.read(at, MSI.CONTROL.width) & MSI_ENABLE == 0


def test_a_mode_a_config_write_turned_on_refuses_both_enables(host: SimHost) -> None:
    guest, device = attach_with_interrupt_control(host)
    msi, msix = control(device, MSI), control(device, MSIX)
    value = guest.conf_read(ADDR, msi, MSI.CONTROL.width)
    guest.conf_write(ADDR, msi, MSI.CONTROL.width, value | MSI_ENABLE)  # no PIRQ behind it
    assert device.read(msi, MSI.CONTROL.width) & MSI_ENABLE
    assert refused(lambda: guest.enable_msix(ADDR, [0])) == XenPciError.OP_FAILED
    assert refused(lambda: guest.enable_msi(ADDR)) == XenPciError.OP_FAILED
    assert host.hypervisor.calls == []  # nothing mapped
    assert device.read(msix, MSIX.CONTROL.width) & MSIX_ENABLE == 0  # never both on


def test_a_bridge_seized_with_its_msi_on_is_not_reprogrammed() -> None:
    dump = fixture("qemu/ioh3420-8086-3420.bin")  # a root port, MSI enabled (MANIFEST.md)
    with SimHost() as host:
        device = host.add_device("0000:00:1e.0", dump)
        guest = host.attach(1, ["0000:00:1e.0"])
        msi = device.find_capability(MSI.id)
        assert msi is not None
        assert device.read(msi + MSI.CONTROL.offset, MSI.CONTROL.width) & MSI_ENABLE
        message = device.read(msi + MSI.ADDRESS.offset, MSI.ADDRESS.width)
        host.hypervisor.calls.clear()
        assert refused(lambda: guest.enable_msi("0000:00:1e.0")) == XenPciError.OP_FAILED
        assert host.hypervisor.calls == []
        assert device.read(msi + MSI.ADDRESS.offset, MSI.ADDRESS.width) == message
