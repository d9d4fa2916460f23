"""Passthrough (real addresses, root buses) and the virtual PCI bus (virtual slots)."""

from __future__ import annotations

import pytest

from pciback.sim.device import SimDevice
from pciback.sim.fixtures import fixture
from pciback.xenbus.states import XenbusState as S
from pciback.xenbus.topology import Passthrough, TopologyError, VirtualBus

from .harness import BLK, BRIDGE, NET, P2P, RNG, World, make_devices, pci_bridge


def test_passthrough_shows_real_addresses_and_publishes_roots() -> None:
    w = World()
    front = w.guest(1, [NET, RNG], mode="passthrough")
    assert sorted(front.devices()) == [NET, RNG]
    assert front.roots == ["0000:03", "0000:04"]
    assert w.be(1, "root_num") == "2"
    assert w.datapath.devices[(1, 0)] == {NET: NET, RNG: RNG}


def test_vpci_keeps_functions_of_one_device_in_one_slot() -> None:
    w = World()
    front = w.guest(1, [RNG, NET, BLK], mode="vpci")
    assert w.datapath.devices[(1, 0)] == {
        "0000:00:00.0": RNG,
        "0000:00:01.0": NET,
        "0000:00:01.1": BLK,
    }
    assert front.roots == ["0000:00"]
    assert w.be(1, "vdev-2") == "0000:00:01.01"


def test_vpci_refuses_bridges_passthrough_takes_them() -> None:
    sim = make_devices()
    sim[P2P] = pci_bridge()
    w = World(sim=sim, hide=f"({P2P})")
    w.guest(1, [P2P], mode="vpci")
    assert "bridges cannot be exported" in (w.error(1) or "")
    assert w.ownership.owner(P2P) is None  # the failed claim was given back
    sim = make_devices()
    sim[P2P] = pci_bridge()
    w2 = World(sim=sim, hide=f"({P2P})")
    w2.guest(2, [P2P], mode="passthrough")
    assert w2.be(2, "state") == str(int(S.CONNECTED))


def test_vpci_takes_a_bridge_class_function_with_a_normal_header() -> None:
    """As Linux's vpci, which refuses by header type: a host bridge, ISA bridge or "other
    bridge" function (class 06, header type 0) is an ordinary endpoint for placement."""
    w = World()
    w.guest(1, [BRIDGE], mode="vpci")
    assert w.error(1) is None
    assert w.datapath.devices[(1, 0)] == {"0000:00:00.0": BRIDGE}


def test_two_guests_two_topologies_side_by_side() -> None:
    w = World()
    a = w.guest(1, [NET, BLK], mode="passthrough")
    b = w.guest(2, [RNG], mode="vpci")
    assert sorted(a.devices()) == sorted([NET, BLK])
    assert b.devices() == ["0000:00:00.0"]
    assert w.ownership.all() == {NET: 1, BLK: 1, RNG: 2}


def test_virtual_bus_fills_32_slots_then_refuses() -> None:
    bus = VirtualBus()
    for slot in range(32):
        assert bus.add(f"0000:{slot + 1:02x}:00.0", False) == f"0000:00:{slot:02x}.0"
    with pytest.raises(TopologyError, match="no more space"):
        bus.add("0000:40:00.0", False)
    bus.remove("0000:05:00.0")
    assert bus.add("0000:41:00.0", False) == "0000:00:04.0"


def test_restored_placement_is_kept() -> None:
    bus = VirtualBus()
    assert bus.add("0000:05:00.1", False, guest="0000:00:07.1") == "0000:00:07.1"
    assert bus.physical_of("0000:00:07.1") == "0000:05:00.1"
    with pytest.raises(TopologyError):
        bus.add("0000:06:00.0", False, guest="0000:00:07.1")
    with pytest.raises(TopologyError):
        Passthrough().add(NET, False, guest=RNG)


def test_passthrough_root_skips_buses_behind_an_exported_bridge() -> None:
    topo = Passthrough()
    topo.add("0000:00:1c.0", True, bridged_buses=(5, 6))
    topo.add("0000:05:00.0", False)
    topo.add("0000:06:00.0", False)
    topo.add("0000:07:00.0", False)
    assert topo.roots() == [(0, 0), (0, 7)]
    topo.remove("0000:00:1c.0")
    assert topo.roots() == [(0, 5), (0, 6), (0, 7)]


def test_pci_bridge_claim_reports_its_buses() -> None:
    sim = make_devices()
    sim[P2P] = pci_bridge()
    sim["0000:05:00.0"] = SimDevice("0000:05:00.0", fixture("virtio-rng-1af4-1044.bin"))
    w = World(sim=sim, hide="(00:1c.0)(05:00.0)(03:00.0)")
    front = w.guest(1, ["0000:00:1c.0", "0000:05:00.0", NET], mode="passthrough")
    assert front.roots == ["0000:00", "0000:03"]
