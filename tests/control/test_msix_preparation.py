"""A seized device is enabled on the host and its MSI-X table prepared with the hypervisor, as
Linux's pciback does when it takes a device; both are given back when the device leaves the
pool. Without the preparation Xen 4.17 maps no MSI-X vector for a guest the device is assigned
to (ENODATA, seen in the lab)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pciback.control.ownership import Ownership
from pciback.control.state import StateStore
from pciback.control.stub import StubPool
from pciback.generated.names import COMMON_HEADER, MSIX
from pciback.ports.hypervisor import HypervisorError, IrqKind
from pciback.sim.device import SimDevice
from pciback.sim.hostbus import SimHostBus
from pciback.sim.hypervisor import SimHypervisor

from .harness import BRIDGE, NET, RNG, make_devices

COMMAND_MEMORY = COMMON_HEADER.COMMAND.MEMORY_SPACE.mask


def pool(
    hv: SimHypervisor, state: StateStore | None = None
) -> tuple[StubPool, SimHostBus, dict[str, SimDevice]]:
    devices = make_devices()
    bus = SimHostBus(devices, {NET: "virtio-pci", RNG: "virtio-pci"})
    stub = StubPool(bus, Ownership(state), state, hypervisor=hv)
    stub.load()
    return stub, bus, devices


def test_seizing_enables_the_device_and_prepares_its_msix_table() -> None:
    hv = SimHypervisor()
    stub, _, devices = pool(hv)
    net = devices[NET]
    command = COMMON_HEADER.COMMAND
    net.write(command.offset, command.width, 0)  # the host driver left it disabled
    stub.add_slot(NET)
    # Xen maps the table: decode on
    assert net.enabled and net.read(command.offset, command.width) & COMMAND_MEMORY
    assert hv.prepared == {NET}
    assert stub.devices[NET].saved[command.offset] & COMMAND_MEMORY  # the clean state keeps it
    assert hv.map_pirq(1, NET, IrqKind.MSIX, 0, 1)  # what would be ENODATA unprepared


def test_a_device_without_msix_is_not_prepared() -> None:
    hv = SimHypervisor()
    stub, _, devices = pool(hv)
    assert devices[BRIDGE].find_capability(MSIX.id) is None
    assert stub.add_slot(BRIDGE) == [BRIDGE]
    assert hv.calls == [] and devices[BRIDGE].enabled


def test_leaving_the_pool_releases_the_table() -> None:
    hv = SimHypervisor()
    stub, _, _ = pool(hv)
    stub.add_slot(NET)
    stub.unseize(NET)
    assert hv.prepared == set() and ("release_msix", NET) in hv.calls


def test_a_failed_preparation_costs_msix_only(caplog: pytest.LogCaptureFixture) -> None:
    class Refusing(SimHypervisor):
        def prepare_msix(self, address: str) -> None:
            raise HypervisorError(f"PHYSDEVOP_prepare_msix {address}: ENXIO")

    stub, _, _ = pool(Refusing())
    with caplog.at_level(logging.WARNING):
        assert stub.add_slot(NET) == [NET]
    assert NET in stub.devices
    assert any("MSI-X will be refused" in r.getMessage() for r in caplog.records)


def test_a_restarted_pool_finds_the_table_prepared(tmp_path: Path) -> None:
    hv = SimHypervisor()
    state = StateStore(tmp_path)
    stub, bus, _ = pool(hv, state)
    stub.add_slot(NET)
    state.close()
    again_state = StateStore(tmp_path)
    again = StubPool(bus, Ownership(again_state), again_state, hypervisor=hv)
    again.load()  # Xen kept it prepared: EBUSY is not an error
    assert NET in again.devices and hv.prepared == {NET}
    hv.prepared.clear()  # a rebooted host: Xen forgot it
    third = StubPool(bus, Ownership(again_state), again_state, hypervisor=hv)
    third.load()
    assert hv.prepared == {NET}
