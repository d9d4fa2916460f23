"""The stub pool's operator knobs: slots, seizing and releasing, permissive, quirks, IRQ
handlers; as the Linux driver's sysfs attributes offer them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.control.hide import HideSyntaxError
from pciback.control.ownership import Ownership
from pciback.control.state import StateStore
from pciback.control.stub import ClaimError, StubError, StubPool
from pciback.generated.names import COMMON_HEADER, MSI, TYPE0
from pciback.sim.device import SimDevice
from pciback.sim.hostbus import SimHostBus
from tests.model.builders import ConfigBuilder

from .harness import BLK, BRIDGE, NET, RNG, make_devices

COMMAND, CACHE_LINE_SIZE = COMMON_HEADER.COMMAND, COMMON_HEADER.CACHE_LINE_SIZE


def pool(state: StateStore | None = None) -> tuple[StubPool, SimHostBus]:
    bus = SimHostBus(make_devices(), {NET: "virtio-pci", BLK: "virtio-pci"})
    stub = StubPool(bus, Ownership(state), state)
    stub.load()
    return stub, bus


def test_new_slot_seizes_from_the_host_driver() -> None:
    stub, bus = pool()
    assert stub.add_slot("03:00.*") == [NET, BLK]
    assert [f"{a}" for a in stub.slots()[:2]] == ["0000:03:00.0", "0000:03:00.1"]
    assert len(stub.slots()) == 8  # a function wildcard lists every function, as Linux does
    assert bus.driver(NET) == "pciback"
    assert ("unbind", NET, "virtio-pci") in bus.history
    assert bus.driver(RNG) == "host"


def test_seize_saves_resets_and_disables() -> None:
    stub, bus = pool()
    net = bus.devices[NET]
    bus_master = COMMAND.BUS_MASTER.mask
    command = net.read(COMMAND.offset, COMMAND.width)
    net.write(COMMAND.offset, COMMAND.width, command | bus_master)  # the host driver left it on
    stub.add_slot(NET)
    assert net.resets == 1  # type: ignore[attr-defined]
    assert net.read(COMMAND.offset, COMMAND.width) & bus_master == 0
    ids = COMMON_HEADER.VENDOR_ID.offset  # and the device ID: the first dword
    assert stub.devices[NET].saved[:4] == net.read(ids, 4).to_bytes(4, "little")


def test_remove_slot_and_errors() -> None:
    stub, _ = pool()
    stub.add_slot("0000:04:00.0")
    stub.remove_slot("04:00.0")
    assert stub.slots() == []
    assert RNG in stub.devices  # stays seized until unseized, as Linux keeps it bound
    with pytest.raises(StubError, match="no slot matches"):
        stub.remove_slot("04:00.0")
    with pytest.raises(HideSyntaxError):
        stub.add_slot("04:00")


def test_hide_list_applies_every_group() -> None:
    stub, _ = pool()
    assert stub.hide(f"({NET})(04:00.*)") == [NET, RNG]


def test_claim_needs_the_pool_and_release_restores() -> None:
    stub, bus = pool()
    with pytest.raises(ClaimError, match="not assignable"):
        stub.claim(RNG, 1)
    stub.add_slot(RNG)
    assert not stub.claim(RNG, 1).is_bridge
    stub.add_slot(BRIDGE)
    assert not stub.claim(BRIDGE, 1).is_bridge  # a host bridge has a normal header
    rng = bus.devices[RNG]
    line = CACHE_LINE_SIZE.offset  # as a guest driver may set it
    rng.write(line, CACHE_LINE_SIZE.width, 0x10)
    stub.release(RNG, 1)
    assert rng.read(line, CACHE_LINE_SIZE.width) == stub.devices[RNG].saved[line]
    assert stub.ownership.owner(RNG) is None


def test_unseize_returns_to_host_driver_only_when_free() -> None:
    stub, bus = pool()
    stub.add_slot(NET)
    stub.claim(NET, 3)
    with pytest.raises(StubError, match="in use by domain 3"):
        stub.unseize(NET)
    stub.release(NET, 3)
    stub.unseize(NET)
    assert bus.driver(NET) == "virtio-pci"
    assert NET not in stub.devices


def test_permissive_quirks_irq_handlers() -> None:
    stub, _ = pool()
    stub.add_slot(NET)
    with pytest.raises(StubError, match="not in the pciback pool"):
        stub.set_permissive("04:00.0")
    assert stub.set_permissive("03:00.0") == NET
    assert stub.permissive() == [NET]
    spec = stub.add_quirk("0000:03:00.0-40:2:ff00")
    assert (spec.offset, spec.size, spec.mask) == (0x40, 2, 0xFF00)
    assert stub.quirks() == ["03:00.0", "\t1af4:1041:1af4:1041", "\t\t00000040:2:0000ff00"]
    assert stub.policy(NET) == (True, (spec,))
    assert stub.irq_handlers() == [f"{NET}:off:acking:0"]
    assert stub.toggle_irq_handler("03:00.0")
    assert stub.irq_handlers() == [f"{NET}:on:acking:0"]


def test_knobs_persist_and_devices_readopted(tmp_path: Path) -> None:
    state = StateStore(tmp_path)
    stub, bus = pool(state)
    stub.add_slot(NET)
    stub.set_permissive(NET)
    stub.add_quirk(f"{NET}-44:4:ffffffff")
    state.close()
    again_state = StateStore(tmp_path)
    again = StubPool(bus, Ownership(again_state), again_state)
    again.load()
    assert again.slots() == [NET]
    assert again.permissive() == [NET]
    assert again.policy(NET)[1][0].offset == 0x44
    assert bus.devices[NET].resets == 1  # type: ignore[attr-defined]


def test_seize_and_release_leave_a_bridges_bus_mastering_and_msi_on() -> None:
    """As xen_pcibk_reset_device: a PCI-to-PCI bridge only loses memory-write-and-invalidate;
    it forwards the DMA and interrupts of the devices behind it, so nothing else is turned off."""
    address = "0000:00:1c.0"
    b = ConfigBuilder(header_type=1, class_code=0x060400, command=0x0017)
    msi = b.msi()
    control, enable = msi + MSI.CONTROL.offset, MSI.CONTROL.ENABLE.mask
    b.poke(control, MSI.CONTROL.width, b.peek(control, MSI.CONTROL.width) | enable)  # port driver
    bus = SimHostBus({address: SimDevice(address, b.build())})
    stub = StubPool(bus, Ownership())
    stub.add_slot(address)
    bridge = bus.devices[address]
    assert bridge.read(COMMAND.offset, COMMAND.width) == 0x0007  # no memory-write-and-invalidate
    assert bridge.read(control, MSI.CONTROL.width) & enable
    stub.claim(address, 1)
    bridge.write(COMMAND.offset, COMMAND.width, 0x0017)
    stub.release(address, 1)
    assert bridge.read(COMMAND.offset, COMMAND.width) == 0x0007


def _reload(tmp_path: Path, bus: SimHostBus) -> StubPool:
    state = StateStore(tmp_path)
    again = StubPool(bus, Ownership(state), state)
    again.load()
    return again


def test_a_saved_config_space_that_does_not_fit_the_device_is_never_written_back(
    tmp_path: Path,
) -> None:
    """The state database is untrusted: a short or foreign saved config space would put
    garbage in the header at release; the device's own is saved again instead."""
    state = StateStore(tmp_path)
    stub, bus = pool(state)
    stub.add_slot(RNG)
    stub.add_slot(NET)
    stub.claim(NET, 3)  # a guest holds it across the restart: it must not be reset
    clean = {a: bytes(bus.devices[a].config) for a in (RNG, NET)}  # type: ignore[attr-defined]
    state.save_config(RNG, b"\x00" * 8)
    state.save_config(NET, b"\xff" * len(clean[NET]))
    state.close()
    resets = bus.devices[NET].resets  # type: ignore[attr-defined]
    again = _reload(tmp_path, bus)
    assert bus.devices[NET].resets == resets  # type: ignore[attr-defined]
    again.release(NET, 3)
    again.claim(RNG, 4)
    again.release(RNG, 4)
    for address in (RNG, NET):
        device = bus.devices[address]
        bar0 = TYPE0.BAR0.offset
        assert device.read(bar0, 4) == int.from_bytes(clean[address][bar0 : bar0 + 4], "little")
        assert again.devices[address].saved[:0x40] == clean[address][:0x40]


def test_a_saved_quirk_out_of_range_is_dropped(tmp_path: Path) -> None:
    state = StateStore(tmp_path)
    stub, bus = pool(state)
    stub.add_slot(NET)
    state.add_quirk(NET, 0x44, 4, 0xFFFFFFFF)
    state.add_quirk(NET, 0x2000, 4, 0xFF)
    state.add_quirk(NET, 0x41, 2, 0xFF)
    state.add_quirk(NET, 0x48, 1, 0x1FF)
    state.close()
    again = _reload(tmp_path, bus)
    assert [(q.offset, q.size, q.mask) for q in again.policy(NET)[1]] == [(0x44, 4, 0xFFFFFFFF)]
