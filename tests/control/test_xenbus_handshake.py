"""The xenbus handshake: Initialising -> InitWait -> Initialised -> Connected -> Closed."""

from __future__ import annotations

from pciback.sim.toolstack import SimPcifront
from pciback.xenbus.states import XenbusState as S

from .harness import NET, RNG, World


def test_full_handshake_connects_and_publishes() -> None:
    w = World()
    front = w.guest(1, [NET, RNG], mode="passthrough", publish=False)
    assert w.be(1, "state") == str(int(S.INITIALISED))
    assert w.be(1, "state-0") == w.be(1, "state-1") == str(int(S.INITIALISED))
    assert w.datapath.connected == {}
    front.publish()
    w.settle()
    assert w.be(1, "state") == str(int(S.CONNECTED))
    assert front.state() == S.CONNECTED
    assert w.datapath.connected[(1, 0)] == (front.gnt_ref, front.evtchn)
    assert w.datapath.devices[(1, 0)] == {NET: NET, RNG: RNG}
    assert w.ownership.owner(NET) == 1 and w.ownership.owner(RNG) == 1


def test_frontend_published_first_still_connects() -> None:
    w = World()
    front = w.fronts[2] = SimPcifront(w.store, 2)
    w.toolstack.create(2, [NET], "vpci")
    front.publish()
    w.settle()
    assert w.be(2, "state") == str(int(S.CONNECTED))


def test_published_nodes_use_protocol_formats() -> None:
    w = World()
    w.guest(1, [NET], mode="vpci")
    assert w.be(1, "vdev-0") == "0000:00:00.00"  # the function as %02x, as the PV protocol has it
    assert w.be(1, "root_num") == "1"
    assert w.be(1, "root-0") == "0000:00"


def test_closing_and_closed_release_everything() -> None:
    w = World()
    front = w.guest(1, [NET, RNG], mode="passthrough")
    w.toolstack.xs.write("/local/domain/0/backend/pci/1/0/online", "0")
    front.close()
    w.settle()
    assert w.be(1, "state") == str(int(S.CLOSED))
    assert w.datapath.connected == {}
    assert w.ownership.all() == {}
    assert (1, 0) not in w.backends.backends
    assert w.sim[NET].resets == 2  # once when seized, once when released


def test_guest_destroy_releases_devices() -> None:
    w = World()
    w.guest(1, [NET], mode="vpci")
    w.guest(2, [RNG], mode="vpci")
    w.toolstack.destroy(1)
    del w.fronts[1]
    w.settle()
    assert w.ownership.all() == {RNG: 2}
    assert (1, 0) not in w.backends.backends
    assert w.be(2, "state") == str(int(S.CONNECTED))


def test_second_claim_is_refused_with_a_clear_error() -> None:
    w = World()
    w.guest(1, [NET], mode="vpci")
    w.guest(2, [NET], mode="vpci")
    assert w.ownership.owner(NET) == 1
    # the backend reported and closed; the frontend followed it to Closed
    assert w.be(2, "state") in (str(int(S.CLOSING)), str(int(S.CLOSED)))
    error = w.error(2) or ""
    assert "owned by domain 1" in error and "domain 2" in error
    assert w.be(1, "state") == str(int(S.CONNECTED))


def test_unhidden_device_is_not_assignable() -> None:
    w = World(hide=f"({NET})")
    w.guest(3, [RNG], mode="vpci")
    assert "not assignable" in (w.error(3) or "")
    assert w.ownership.all() == {}
