"""Malformed or hostile xenstore contents: a clear error for that guest, the others untouched."""

from __future__ import annotations

import errno
import logging

import pytest

from pciback.ports.xenstore import XenStoreError
from pciback.sim.toolstack import SimPcifront, backend_path, frontend_path
from pciback.xenbus.states import XenbusState as S

from .harness import BLK, NET, RNG, World

BE2 = backend_path(2)
FE2 = frontend_path(2)


def healthy_neighbour(w: World) -> None:
    w.guest(1, [NET], mode="vpci")


def assert_neighbour_untouched(w: World) -> None:
    assert w.be(1, "state") == str(int(S.CONNECTED))
    assert w.ownership.owner(NET) == 1
    assert (1, 0) in w.datapath.connected
    assert w.error(1) is None


def closed(w: World) -> bool:
    return w.be(2, "state") in (str(int(S.CLOSING)), str(int(S.CLOSED)))


@pytest.mark.parametrize(
    ("node", "value", "fragment"),
    [
        ("num_devs", "two", "expected a decimal number"),
        ("num_devs", "-1", "expected a decimal number"),
        ("num_devs", "4294967297", "above the limit 256"),
        ("num_devs", "9" * 4000, "expected a decimal number"),
        ("dev-0", "0000:04:00.9", "out of range"),
        ("dev-0", "not-a-device", "expected DDDD:BB:DD.F"),
        ("dev-1", RNG, "0000:04:00.0 is dev-0 already"),
        ("state-0", "one", "expected a decimal number"),
        ("state-0", "9", "above the limit 8"),
        ("state", "", "expected a decimal number"),
        ("frontend-id", "1", "'1' is not domain 2"),
        ("frontend-id", "0x2", "expected a decimal number"),
        ("frontend", "/local/domain/1/device/pci/0", "not under /local/domain/2/"),
        ("frontend", "/local/domain/2/device/pci/0 !", "malformed xenstore path"),
    ],
)
def test_bad_toolstack_nodes(node: str, value: str, fragment: str) -> None:
    w = World()
    healthy_neighbour(w)
    w.toolstack.create(2, [RNG], "vpci")
    xs = w.toolstack.xs  # the edit lands before the backend has looked at the directory
    if node == "dev-1":
        xs.write(f"{BE2}/state-1", "1")
        xs.write(f"{BE2}/num_devs", "2")
    xs.write(f"{BE2}/{node}", value)
    w.settle()
    assert fragment in (w.error(2) or "")
    assert w.ownership.owner(RNG) is None
    assert_neighbour_untouched(w)


@pytest.mark.parametrize(
    "node", ["frontend", "frontend-id", "state", "num_devs", "dev-0", "state-0", "frontend dir"]
)
def test_a_node_not_written_yet_is_waited_for(node: str) -> None:
    """Was an error for num_devs and dev-0 ("missing"), which closed the guest's backend when
    a toolstack wrote across several transactions and the daemon looked in between."""
    w = World()
    healthy_neighbour(w)
    w.toolstack.create(2, [RNG], "vpci")
    xs = w.toolstack.xs
    path = FE2 if node == "frontend dir" else f"{BE2}/{node}"
    value = xs.read(path)
    assert value is not None
    xs.rm(path)
    w.settle()
    assert (2, 0) in w.backends.waiting and (2, 0) not in w.backends.backends
    assert w.error(2) is None and w.ownership.owner(RNG) is None
    assert w.be(2, "state") in (None, str(int(S.INITIALISING)))  # nothing written meanwhile
    if node == "frontend dir":
        # What a toolstack writes there last: the directory, given to the guest, and its state
        # (the guest itself may not create it: its device directory is read-only to it).
        xs.mkdir(FE2)
        xs.set_permissions(FE2, ("n2", "r0"))
        xs.write(f"{FE2}/state", str(int(S.INITIALISING)))
    else:
        xs.write(path, value)
    w.fronts[2] = front = SimPcifront(w.store, 2)
    front.publish()
    w.settle()
    assert w.be(2, "state") == str(int(S.CONNECTED)) and w.ownership.owner(RNG) == 2
    assert_neighbour_untouched(w)


@pytest.mark.parametrize(
    ("node", "value", "fragment"),
    [
        ("magic", "6", "version mismatch"),
        ("magic", "7" * 3000, "version mismatch"),
        ("pci-op-ref", "0x10", "expected a decimal number"),
        ("pci-op-ref", "4294967296", "above the limit"),
        ("event-channel", "", "expected a decimal number"),
    ],
)
def test_bad_frontend_nodes(node: str, value: str, fragment: str) -> None:
    w = World()
    healthy_neighbour(w)
    front = w.guest(2, [RNG], mode="vpci", publish=False)
    front.xs.write(f"{FE2}/pci-op-ref", "8")
    front.xs.write(f"{FE2}/event-channel", "9")
    front.xs.write(f"{FE2}/magic", "7")
    front.xs.write(f"{FE2}/{node}", value)
    front.switch(S.INITIALISED)
    w.settle()
    assert fragment in (w.error(2) or "")
    assert closed(w)
    assert (2, 0) not in w.datapath.connected
    assert w.ownership.owner(RNG) is None  # a failed backend gives its devices back
    assert_neighbour_untouched(w)


def test_missing_frontend_config() -> None:
    w = World()
    healthy_neighbour(w)
    front = w.guest(2, [RNG], mode="vpci", publish=False)
    front.switch(S.INITIALISED)  # without publishing the page
    w.settle()
    assert "pci-op-ref: missing" in (w.error(2) or "")
    assert_neighbour_untouched(w)


def test_unmappable_grant_is_a_guest_error() -> None:
    w = World()
    healthy_neighbour(w)
    w.datapath.fail_connect = True
    w.guest(2, [RNG], mode="vpci")
    assert "cannot map grant" in (w.error(2) or "")
    assert w.ownership.owner(RNG) is None
    assert_neighbour_untouched(w)


def test_garbage_state_values_read_as_unknown() -> None:
    w = World()
    healthy_neighbour(w)
    front = w.guest(2, [RNG], mode="vpci")
    for garbage in ("4x", "99", "", "-4", "٣"):
        front.xs.write(f"{FE2}/state", garbage)
        w.settle()
    assert_neighbour_untouched(w)
    assert w.ownership.owner(RNG) == 2  # unknown while the frontend node exists: no action


def test_guest_cannot_forge_backend_nodes() -> None:
    w = World()
    healthy_neighbour(w)
    front = w.guest(2, [RNG], mode="vpci")
    for path in (f"{BE2}/num_devs", f"{BE2}/dev-1", f"{backend_path(1)}/state"):
        with pytest.raises(XenStoreError) as info:
            front.xs.write(path, "0")
        assert info.value.errno == errno.EACCES
    assert_neighbour_untouched(w)


def test_hostile_frontend_cannot_force_connected() -> None:
    w = World()
    healthy_neighbour(w)
    front = w.guest(2, [RNG], mode="vpci", publish=False)
    front.switch(S.CONNECTED)  # skipping the handshake
    w.settle()
    assert w.be(2, "state") == str(int(S.INITIALISED))
    assert (2, 0) not in w.datapath.connected


def test_junk_backend_directories_are_ignored() -> None:
    w = World()
    healthy_neighbour(w)
    xs = w.toolstack.xs
    root = "/local/domain/0/backend/pci"
    for junk in ("x", "0", "99999", "-1"):
        xs.write(f"{root}/{junk}/0/state", "1")
    xs.write(f"{root}/3/zz/state", "1")
    w.settle()
    assert sorted(w.backends.backends) == [(1, 0)]
    assert_neighbour_untouched(w)


def test_hot_remove_of_unknown_vdev_reports_error() -> None:
    w = World()
    healthy_neighbour(w)
    w.guest(2, [RNG, BLK], mode="vpci")
    xs = w.toolstack.xs
    xs.write(f"{BE2}/vdev-1", "0000:00:1f.07")
    xs.write(f"{BE2}/state-1", str(int(S.CLOSING)))
    xs.write(f"{BE2}/state", str(int(S.RECONFIGURING)))
    w.settle()
    assert "is not this guest's" in (w.error(2) or "")
    assert_neighbour_untouched(w)


def test_frontend_published_before_backend_dir_is_fine() -> None:
    w = World()
    front = w.fronts[2] = SimPcifront(w.store, 2)
    w.toolstack.create(2, [RNG], "vpci")
    front.publish()
    w.settle()
    assert w.be(2, "state") == str(int(S.CONNECTED))


def test_backend_directory_completed_later_is_picked_up() -> None:
    """Was reported as an error ("frontend: missing") before the rest arrived."""
    w = World()
    healthy_neighbour(w)
    xs = w.toolstack.xs
    xs.write(f"{BE2}/state", "1")  # a toolstack writing node by node, frontend link not yet there
    w.settle()
    assert w.backends.waiting[(2, 0)].missing == "frontend"
    assert (2, 0) not in w.backends.failed and w.error(2) is None
    w.guest(2, [RNG], mode="vpci")  # the rest of the directory arrives
    assert w.be(2, "state") == str(int(S.CONNECTED))


def test_unknown_topology_node_is_refused_for_that_guest() -> None:
    w = World()
    healthy_neighbour(w)
    w.toolstack.create(2, [RNG], "ring")
    w.settle()
    assert "unknown topology 'ring'" in (w.error(2) or "")
    assert (2, 0) in w.backends.failed
    assert_neighbour_untouched(w)


def test_a_watch_the_store_refuses_fails_that_guest_only(monkeypatch: pytest.MonkeyPatch) -> None:
    w = World()
    healthy_neighbour(w)
    monkeypatch.setattr("pciback.sim.xenstore.MAX_WATCHES_DOM0", 3)  # the two roots and guest 1's
    w.guest(2, [RNG], mode="vpci")
    assert "too many watches" in (w.error(2) or "")
    assert (2, 0) not in w.backends.backends and (2, 0) in w.backends.failed
    assert w.ownership.owner(RNG) is None
    assert_neighbour_untouched(w)


def test_frontend_events_do_not_reread_a_directory_the_toolstack_has_not_finished(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pciback.xenbus")
    w = World()
    healthy_neighbour(w)
    w.toolstack.create(2, [RNG], "vpci")
    w.toolstack.xs.rm(f"{BE2}/dev-0")  # the toolstack's next write has not come yet
    w.settle()
    assert w.backends.waiting[(2, 0)].missing == "dev-0"
    reads: list[str] = []
    store = w.backends.store
    real_read = store.read

    def counted(path: str) -> str | None:
        reads.append(path)
        return real_read(path)

    monkeypatch.setattr(store, "read", counted)
    guest = SimPcifront(w.store, 2)
    for i in range(200):
        guest.xs.write(f"{FE2}/state", str(i % 9))
        w.settle()
    assert reads == []
    assert said(caplog, "waiting for dev-0") == 1
    assert w.ownership.owner(RNG) is None and w.error(2) is None
    assert_neighbour_untouched(w)


def test_a_guest_removing_its_frontend_loses_its_devices_once_and_cannot_take_them_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pciback.xenbus")
    w = World()
    healthy_neighbour(w)
    front = w.guest(2, [RNG], mode="vpci")
    # xenstored lets a guest make its frontend directory again only where it owns the parent:
    # give it the parent, as a careless toolstack might, so that it can try.
    w.toolstack.xs.set_permissions(FE2.rsplit("/", 1)[0], ("n2",))
    front.xs.rm(FE2)
    w.settle()
    assert w.ownership.owner(RNG) is None and (2, 0) in w.backends.retired
    for _ in range(3):  # recreating it, as if pcifront started over, claims nothing
        front.switch(S.INITIALISING)
        front.publish()
        w.settle()
        front.xs.rm(FE2)
        w.settle()
    assert w.ownership.owner(RNG) is None
    assert said(caplog, "dom2/0: unregistering backend") == 1
    assert_neighbour_untouched(w)


def test_a_guest_cycling_its_frontend_cannot_flood_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pciback.xenbus")
    w = World()
    healthy_neighbour(w)
    front = w.guest(2, [RNG], mode="vpci")
    told = []
    for _ in range(6):
        front.close()
        w.settle()
        front.switch(S.INITIALISING)
        front.publish()
        w.settle()
        assert w.be(2, "state") == str(int(S.CONNECTED))
        told.append(sum(r.levelno >= logging.INFO for r in caplog.records))
    assert told[2:] == [told[1]] * 4  # from the second restart on, nothing at info level
    assert said(caplog, "the frontend starts over") == 1
    assert w.sim[RNG].resets == 1  # kept across the restarts: seized once, never released
    assert_neighbour_untouched(w)


def said(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)
