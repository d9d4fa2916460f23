"""The simulated frontend enumerates like a guest kernel and sets up interrupts like a driver."""

from __future__ import annotations

from pciback.generated.names import COMMON_HEADER, MSI, MSIX, PM, TYPE0
from pciback.ports.bus import BarKind
from pciback.sim import SimHost

from .simconfig import FIXTURES, MSI_CAP, MSIX_CAP, PM_CAP, nic_config

NET = f"{FIXTURES}/virtio-net-1af4-1041.bin"


def test_enumeration_finds_ids_bars_and_capabilities(host: SimHost) -> None:
    host.add_device("0000:03:00.0", nic_config(), bar_sizes={0: 0x4000})
    host.add_device("0000:03:01.0", NET)
    host.add_device("0000:03:02.0", NET)  # not given to the guest
    guest = host.attach(1, ["0000:03:00.0", "0000:03:01.0"])
    found = {d.address: d for d in guest.enumerate()}
    assert sorted(found) == ["0000:03:00.0", "0000:03:01.0"]

    nic = found["0000:03:00.0"]
    assert (nic.vendor, nic.device, nic.class_code, nic.header_type) == (0x8086, 0x10D3, 0x20000, 0)
    assert nic.bars[0].kind is BarKind.MEM32 and nic.bars[0].size == 0x4000
    assert nic.capabilities == [(PM.id, PM_CAP), (MSI.id, MSI_CAP), (MSIX.id, MSIX_CAP)]

    net = found["0000:03:01.0"]
    assert (net.vendor, net.device) == (0x1AF4, 0x1041)
    assert net.bars[0].kind is BarKind.MEM64
    assert net.bars[0].size == host.physical("0000:03:01.0").bars()[0].size
    assert [cap_id for cap_id, _ in net.capabilities][-1] == MSIX.id


def test_sizing_leaves_bars_and_command_as_they_were(host: SimHost) -> None:
    device = host.add_device("0000:03:00.0", nic_config(), bar_sizes={0: 0x4000})
    guest = host.attach(1, ["0000:03:00.0"])
    # command (and status), BAR0, BAR1 and the ROM
    dwords = (COMMON_HEADER.COMMAND, TYPE0.BAR0, TYPE0.BAR1, TYPE0.ROM)
    before = [guest.conf_read("0000:03:00.0", reg.offset, 4) for reg in dwords]
    guest.enumerate()
    after = [guest.conf_read("0000:03:00.0", reg.offset, 4) for reg in dwords]
    assert after == before
    assert device.read(TYPE0.BAR0.offset, TYPE0.BAR0.width) == 0xFE000000


def test_a_driver_gets_msix_where_there_is_msix(host: SimHost) -> None:
    host.add_device("0000:03:00.0", nic_config(), bar_sizes={0: 0x4000})
    host.add_device("0000:03:01.0", nic_config(msix=False), bar_sizes={0: 0x4000})
    guest = host.attach(1, ["0000:03:00.0", "0000:03:01.0"])
    devices = {d.address: d for d in guest.enumerate()}
    msix = guest.frontend.enable_interrupts(devices["0000:03:00.0"], vectors=3)
    msi = guest.frontend.enable_interrupts(devices["0000:03:01.0"])
    assert len(msix) == 3 and len(msi) == 1
    assert host.physical("0000:03:00.0").msix_entries == (0, 1, 2)
    assert host.physical("0000:03:01.0").msi_vectors == 1
    assert sorted(host.hypervisor.pirqs_of(1)) == sorted(msix + msi)


def test_vpci_guest_scans_its_virtual_bus(host: SimHost) -> None:
    host.add_device("0000:07:00.0", NET)
    guest = host.attach(3, ["0000:07:00.0"], mode="vpci")
    assert [d.address for d in guest.enumerate()] == ["0000:00:00.0"]
