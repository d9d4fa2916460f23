"""The test-facing contract of DESIGN.md, used exactly as it is written there."""

from __future__ import annotations

import pytest

from pciback.errors import XenPciError
from pciback.generated.names import COMMON_HEADER
from pciback.sim import PciOpError, SimHost
from pciback.sim.fixtures import fixture

NET = fixture("virtio-net-1af4-1041.bin")
VENDOR_ID = COMMON_HEADER.VENDOR_ID
TEXT = fixture("virtio-net-1af4-1041.lspci.txt")


def test_contract_end_to_end() -> None:
    with SimHost(permissive=False) as host:
        host.add_device("0000:03:00.0", NET)
        host.add_device("0000:04:00.0", TEXT)  # an lspci -xxx text dump
        host.add_device("0000:05:00.0", NET.read_bytes())  # raw bytes
        host.hide("(0000:03:00.0)(04:00.*)")
        guest = host.attach(domid=1, devices=["0000:03:00.0"], mode="passthrough")
        assert guest.devices == ["0000:03:00.0"]
        assert host.owner("0000:03:00.0") == 1
        addr = guest.devices[0]
        assert guest.conf_read(addr, VENDOR_ID.offset, 4) == 0x10411AF4  # and the device ID

        # A seized device's log starts when the guest gets it: what follows is the guest's.
        physical = host.physical("0000:03:00.0")
        assert physical.writes == []
        assert physical.history  # the pool's reset, restore and bus-master-off are kept
        guest.conf_write(addr, VENDOR_ID.offset, VENDOR_ID.width, 0xDEAD)  # read-only
        assert physical.writes == []
        assert guest.conf_read(addr, VENDOR_ID.offset, VENDOR_ID.width) == 0x1AF4

        with pytest.raises(PciOpError) as info:
            guest.conf_read(addr, VENDOR_ID.offset + 1, 2)  # misaligned
        assert info.value.err == XenPciError.INVALID_OFFSET

        vectors = guest.enable_msix(addr, [0, 1])
        assert len(vectors) == 2
        guest.disable_msix(addr)

        host.detach(1, addr)
        assert host.owner("0000:03:00.0") is None
        host.destroy_guest(1)


def test_vpci_mode_gives_virtual_addresses() -> None:
    with SimHost() as host:
        host.add_device("0000:03:00.0", NET)
        guest = host.attach(domid=2, devices=["0000:03:00.0"], mode="vpci")
        assert len(guest.devices) == 1
        assert guest.devices[0].startswith("0000:00:")
        assert guest.conf_read(guest.devices[0], VENDOR_ID.offset, VENDOR_ID.width) == 0x1AF4
        host.destroy_guest(2)
        assert host.owner("0000:03:00.0") is None


def test_a_64_byte_config_is_a_device_too() -> None:
    # lspci -x gives 64 bytes; its capability pointer names bytes the dump does not hold.
    with SimHost() as host:
        short = NET.read_bytes()[:64]
        host.add_device("0000:03:00.0", short)
        guest = host.attach(domid=1, devices=["0000:03:00.0"])
        assert guest.conf_read("0000:03:00.0", VENDOR_ID.offset, 4) == 0x10411AF4
        with pytest.raises(PciOpError) as info:
            guest.conf_read("0000:03:00.0", len(short), 4)  # past the dump's end
        assert info.value.err == XenPciError.INVALID_OFFSET
