"""Guest-visible addresses in passthrough and vpci modes."""

from __future__ import annotations

import pytest

from pciback.protocol.devmap import DeviceMap, DeviceMapFull
from pciback.protocol.dispatch import ExportedDevice
from pciback.protocol.interrupts import InterruptControl
from pciback.sim.device import SimDevice
from pciback.sim.hypervisor import SimHypervisor

from .simconfig import PassView, nic_config

CONFIG = nic_config()


def maker(physical: str) -> ExportedDevice:
    device = SimDevice(physical, CONFIG)
    view = PassView(device)
    return ExportedDevice("", device, view, InterruptControl(1, device, SimHypervisor(), view))


def add(devmap: DeviceMap, physical: str) -> str:
    def make(guest: str) -> ExportedDevice:
        exported = maker(physical)
        exported.guest_address = guest
        return exported

    return devmap.add(physical, make).guest_address


def test_passthrough_keeps_physical_addresses() -> None:
    devmap = DeviceMap("passthrough")
    assert add(devmap, "0001:0a:1f.7") == "0001:0a:1f.7"
    assert devmap.lookup(1, 0x0A, 0x1F << 3 | 7) is devmap.get("0001:0a:1f.7")
    assert devmap.lookup(1, 0x0A, 0) is None
    assert devmap.root_buses() == [(1, 0x0A)]


def test_vpci_groups_functions_of_a_slot_and_fills_the_lowest_free_slot() -> None:
    devmap = DeviceMap("vpci")
    assert add(devmap, "0000:05:00.0") == "0000:00:00.0"
    assert add(devmap, "0000:06:03.0") == "0000:00:01.0"
    assert add(devmap, "0000:05:00.2") == "0000:00:00.2"
    assert devmap.remove("0000:05:00.0") is not None
    assert devmap.remove("0000:05:00.2") is not None
    assert add(devmap, "0000:08:00.0") == "0000:00:00.0"
    assert devmap.root_buses() == [(0, 0)]


def test_adding_twice_keeps_the_first_export() -> None:
    devmap = DeviceMap("vpci")
    first = add(devmap, "0000:05:00.0")
    assert add(devmap, "0000:05:00.0") == first
    assert devmap.guest_addresses() == [first]


def test_vpci_has_32_slots() -> None:
    devmap = DeviceMap("vpci")
    for i in range(32):
        add(devmap, f"0000:{i + 1:02x}:00.0")
    with pytest.raises(DeviceMapFull):
        add(devmap, "0000:40:00.0")


def test_unknown_modes_are_refused() -> None:
    with pytest.raises(ValueError):
        DeviceMap("controller")  # type: ignore[arg-type]
