"""A seized device across daemon restarts: it stays seized until unseized, whatever became of
the slot that named it (as Linux keeps it bound to pciback), and it goes back to the driver it
was taken from even when the daemon that took it is long gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.control.ownership import Ownership
from pciback.control.state import StateError, StateStore
from pciback.control.stub import StubPool
from pciback.ports.hostbus import STUB_DRIVER
from pciback.sim.hostbus import SimHostBus

from .harness import BLK, NET, make_devices


def start(bus: SimHostBus, directory: Path) -> tuple[StubPool, StateStore]:
    """A daemon's pool on the state directory, as a start loads it."""
    state = StateStore(directory)
    pool = StubPool(bus, Ownership(state), state)
    pool.load()
    return pool, state


def host_bus() -> SimHostBus:
    return SimHostBus(make_devices(), {NET: "virtio-pci", BLK: "virtio-pci"})


def test_a_slot_removed_while_seized_keeps_the_device_across_a_restart(tmp_path: Path) -> None:
    bus = host_bus()
    pool, state = start(bus, tmp_path)
    pool.add_slot(NET)
    pool.claim(NET, 3)
    pool.remove_slot(NET)
    state.close()

    pool, state = start(bus, tmp_path)
    assert NET in pool.devices  # re-adopted: its guest's device was not dropped
    assert pool.ownership.owner(NET) == 3
    assert bus.driver(NET) == STUB_DRIVER
    assert pool.slots() == []
    pool.release(NET, 3)
    pool.unseize(NET)
    assert bus.driver(NET) == "virtio-pci"  # the driver the first daemon took it from
    state.close()

    pool, state = start(bus, tmp_path)
    assert NET not in pool.devices and state.seized() == []
    state.close()


def test_the_host_driver_survives_restarts(tmp_path: Path) -> None:
    bus = host_bus()
    pool, state = start(bus, tmp_path)
    pool.add_slot(BLK)
    state.close()
    for _ in range(2):  # each restart finds it bound to the stub, not to its driver
        pool, state = start(bus, tmp_path)
        state.close()
    pool, state = start(bus, tmp_path)
    pool.unseize(BLK)
    assert bus.driver(BLK) == "virtio-pci"
    assert state.host_driver(BLK) is None  # forgotten with the device
    state.close()


def test_a_slotless_device_the_host_took_back_is_forgotten(tmp_path: Path) -> None:
    # As after a reboot: the state still has the device, the host bound its own driver again.
    bus = host_bus()
    pool, state = start(bus, tmp_path)
    pool.add_slot(NET)
    pool.set_permissive(NET, True)
    pool.remove_slot(NET)
    state.close()
    bus.unbind(NET)
    bus.bind(NET, "virtio-pci")

    pool, state = start(bus, tmp_path)
    assert NET not in pool.devices
    assert bus.driver(NET) == "virtio-pci"  # not taken from the host again
    assert state.seized() == [] and state.permissive() == set()
    state.close()


def test_a_named_slot_is_still_seized_from_its_driver_after_a_reboot(tmp_path: Path) -> None:
    bus = host_bus()
    pool, state = start(bus, tmp_path)
    pool.add_slot(NET)
    state.close()
    bus.unbind(NET)
    bus.bind(NET, "virtio-pci")
    pool, state = start(bus, tmp_path)
    assert NET in pool.devices and bus.driver(NET) == STUB_DRIVER
    state.close()


@pytest.mark.parametrize("name", ["../../sbin/x", "", "a" * 65, "e1000e\nx"])
def test_a_host_driver_name_that_no_driver_can_have_is_refused(tmp_path: Path, name: str) -> None:
    state = StateStore(tmp_path)
    try:
        with pytest.raises(StateError, match="host driver name"):
            state.set_host_driver(NET, name)
        # Planted in the database: read back as none, and dropped.
        state._run("INSERT INTO host_drivers VALUES (?, ?)", (NET, name))
        assert state.host_driver(NET) is None
        assert state._run("SELECT * FROM host_drivers") == []
    finally:
        state.close()
