"""Ownership: one owner per device, release on shutdown / hot remove / backend release, and
persistence across a daemon restart with a guest attached."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.control.ownership import Ownership, OwnershipError
from pciback.control.reconcile import reconcile
from pciback.control.state import StateStore
from pciback.generated.names import TYPE0
from pciback.xenbus.states import XenbusState as S

from .harness import NET, RNG, World


def test_single_owner_and_clear_refusal() -> None:
    owners = Ownership()
    owners.claim(NET, 1)
    owners.claim(NET, 1)  # the owner claiming again is harmless
    with pytest.raises(OwnershipError) as info:
        owners.claim(NET, 2)
    assert str(info.value) == f"{NET} is owned by domain 1; the claim by domain 2 is refused"
    assert not owners.release(NET, 2)  # only the owner's registration can be dropped
    assert owners.owner(NET) == 1
    assert owners.release(NET, 1)
    owners.claim(NET, 2)
    assert owners.owned_by(2) == [NET]


def test_release_on_guest_shutdown() -> None:
    w = World()
    w.guest(1, [NET, RNG], mode="vpci")
    w.toolstack.destroy(1)
    del w.fronts[1]
    w.settle()
    assert w.ownership.all() == {}
    w.guest(2, [NET], mode="vpci")
    assert w.ownership.owner(NET) == 2


def test_release_on_hot_remove() -> None:
    w = World()
    w.guest(1, [NET, RNG], mode="passthrough")
    w.toolstack.hot_remove(1, RNG)
    w.settle()
    assert w.ownership.all() == {NET: 1}


def test_release_from_the_backend_returns_device_clean() -> None:
    w = World()
    w.guest(1, [NET], mode="vpci")
    line = TYPE0.INTERRUPT_LINE
    w.sim[NET].write(line.offset, line.width, 0x55)  # the guest's driver left its mark
    w.pool.release(NET, 1)
    assert w.ownership.owner(NET) is None
    assert w.sim[NET].read(line.offset, line.width) == w.pool.devices[NET].saved[line.offset]


def restart(w: World, state_dir: Path) -> World:
    """Stop the daemon's control plane (nothing released) and start a new one on the same host."""
    w.backends.stop()
    assert w.state is not None
    w.state.close()
    return World(state_dir=state_dir, sim=w.sim, store=w.store, hide="")


def test_restart_with_a_guest_attached(tmp_path: Path) -> None:
    w = World(state_dir=tmp_path)
    front = w.guest(1, [NET, RNG], mode="vpci")
    placed = dict(w.datapath.devices[(1, 0)])
    resets = w.sim[NET].resets
    assert "suspend 1" not in w.datapath.log

    w2 = restart(w, tmp_path)
    w2.fronts[1] = front
    w2.settle()
    assert "suspend 1" in w.datapath.log and "disconnect 1" not in w.datapath.log
    assert w2.ownership.all() == {NET: 1, RNG: 1}
    assert w2.sim[NET].resets == resets  # a device in use is not reset by a restart
    assert w2.datapath.connected[(1, 0)] == (front.gnt_ref, front.evtchn)
    assert w2.datapath.devices[(1, 0)] == placed  # same guest addresses as before
    assert sorted(w2.pool.devices) == sorted(w.pool.devices)
    assert reconcile(w2.ownership, w2.pool, w2.backends) == []

    w2.guest(2, [NET], mode="vpci")  # not assigned twice
    assert "owned by domain 1" in (w2.error(2) or "")

    w2.toolstack.destroy(1)
    del w2.fronts[1]
    w2.settle()
    assert w2.ownership.owner(NET) is None


def test_restart_reconciles_a_guest_that_left_meanwhile(tmp_path: Path) -> None:
    w = World(state_dir=tmp_path)
    w.guest(1, [NET], mode="vpci")
    w.guest(2, [RNG], mode="vpci")
    w.backends.stop()
    assert w.state is not None
    w.state.close()
    w.toolstack.destroy(1)  # while no daemon runs
    w2 = World(state_dir=tmp_path, sim=w.sim, store=w.store, hide="")
    w2.settle()
    assert reconcile(w2.ownership, w2.pool, w2.backends) == [NET]
    assert w2.ownership.all() == {RNG: 2}
    assert w2.be(2, "state") == str(int(S.CONNECTED))


def test_state_survives_reopening(tmp_path: Path) -> None:
    state = StateStore(tmp_path)
    state.set_owner(NET, 4)
    state.add_slot(RNG)
    state.add_slot(NET)
    state.set_permissive(NET, True)
    state.add_quirk(NET, 0x40, 4, 0xFF)
    state.save_config(NET, b"\x01" * 256)
    state.close()
    again = StateStore(tmp_path)
    assert again.owners() == {NET: 4}
    assert again.slots() == [RNG, NET]
    assert again.permissive() == {NET}
    assert again.quirks() == [(NET, 0x40, 4, 0xFF)]
    assert again.saved_config(NET) == b"\x01" * 256
    assert (tmp_path / "pciback.sqlite3").stat().st_mode & 0o077 == 0
