"""Hot add and hot remove while the guest runs (Reconfiguring -> Reconfigured -> Connected)."""

from __future__ import annotations

from pciback.xenbus.states import XenbusState as S

from .harness import BLK, NET, RNG, World


def test_hot_add_then_hot_remove() -> None:
    w = World()
    front = w.guest(1, [NET], mode="vpci")
    index = w.toolstack.hot_add(1, RNG)
    w.settle()
    assert w.be(1, "state") == str(int(S.CONNECTED))
    assert front.state() == S.CONNECTED
    assert w.be(1, f"state-{index}") == str(int(S.INITIALISED))
    assert w.datapath.devices[(1, 0)] == {"0000:00:00.0": NET, "0000:00:01.0": RNG}
    assert w.ownership.owner(RNG) == 1

    resets = w.sim[RNG].resets
    removed = w.toolstack.hot_remove(1, RNG)
    w.settle()
    assert w.be(1, "state") == str(int(S.CONNECTED))
    assert w.ownership.owner(RNG) is None
    assert w.sim[RNG].resets == resets + 1
    assert w.datapath.devices[(1, 0)] == {"0000:00:00.0": NET}
    w.toolstack.finish_remove(1, removed)
    w.settle()
    assert front.devices() == ["0000:00:00.0"]


def test_hot_add_of_a_device_another_guest_owns_is_refused() -> None:
    w = World()
    w.guest(1, [NET], mode="passthrough")
    w.guest(2, [RNG], mode="passthrough")
    w.toolstack.hot_add(2, NET)
    w.settle()
    assert "owned by domain 1" in (w.error(2) or "")
    assert w.ownership.owner(NET) == 1
    assert w.be(1, "state") == str(int(S.CONNECTED))


def test_hot_added_function_joins_its_slot() -> None:
    w = World()
    w.guest(1, [NET], mode="vpci")
    w.toolstack.hot_add(1, BLK)
    w.settle()
    assert w.datapath.devices[(1, 0)] == {"0000:00:00.0": NET, "0000:00:00.1": BLK}


def test_passthrough_hot_add_publishes_new_root() -> None:
    w = World()
    front = w.guest(1, [NET], mode="passthrough")
    w.toolstack.hot_add(1, RNG)
    w.settle()
    assert front.roots == ["0000:03", "0000:04"]


def test_second_reconfiguration_after_remove_is_harmless() -> None:
    w = World()
    w.guest(1, [NET, RNG], mode="vpci")
    w.toolstack.hot_remove(1, RNG)
    w.settle()
    w.toolstack.hot_add(1, BLK)  # the removed entry is still listed (Closed) until libxl prunes
    w.settle()
    assert w.be(1, "state") == str(int(S.CONNECTED))
    assert w.ownership.all() == {NET: 1, BLK: 1}
