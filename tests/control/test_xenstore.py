"""The simulated xenstore: nodes, permissions, watches and transactions."""

from __future__ import annotations

import errno

import pytest

from pciback.ports.xenstore import (
    Transaction,
    WatchEvent,
    XenStoreError,
    permissions,
    run_transaction,
)
from pciback.sim.xenstore import DOMAIN_QUOTA, SimXenStore, SimXenStoreClient


def drain(client: SimXenStoreClient) -> list[WatchEvent]:
    events = []
    for _ in range(1000):
        e = client.next_event()
        if e is None:
            break
        events.append(e)
    return events


def test_write_creates_parents_and_rm_removes_subtree() -> None:
    xs = SimXenStore().connect(0)
    xs.write("/a/b/c", "1")
    assert xs.read("/a/b") == ""
    assert xs.list("/a") == ["b"]
    xs.rm("/a/b")
    assert xs.read("/a/b/c") is None
    assert xs.list("/a") == []
    assert xs.list("/nope") is None
    xs.rm("/nope")  # removing an absent node is not an error


@pytest.mark.parametrize("path", ["relative", "/a//b", "/a b", "/" + "x" * 4000, "/a/"])
def test_malformed_paths_refused(path: str) -> None:
    xs = SimXenStore().connect(0)
    with pytest.raises(XenStoreError) as info:
        xs.write(path, "v")
    assert info.value.errno == errno.EINVAL


def test_oversized_value_refused() -> None:
    xs = SimXenStore().connect(0)
    with pytest.raises(XenStoreError) as info:
        xs.write("/a", "v" * 5000)
    assert info.value.errno == errno.E2BIG


def test_guest_permissions() -> None:
    """xenstored's ACLs: dom0 may do anything; a guest reads and writes only where a node's
    permissions (or, for a node not there, its nearest ancestor's) let it."""
    store = SimXenStore()
    dom0, guest = store.connect(0), store.connect(5)
    for d in (5, 6):
        dom0.mkdir(f"/local/domain/0/backend/pci/{d}/0")
        dom0.set_permissions(f"/local/domain/0/backend/pci/{d}/0", permissions("n0", f"r{d}"))
        dom0.write(f"/local/domain/0/backend/pci/{d}/0/num_devs", "1")
    dom0.mkdir("/local/domain/5/device/pci/0")
    dom0.set_permissions("/local/domain/5/device/pci/0", permissions("n5", "r0"))
    assert guest.read("/local/domain/0/backend/pci/5/0/num_devs") == "1"
    assert guest.read("/local/domain/0/backend/pci/5/0/absent") is None  # readable parent
    guest.write("/local/domain/5/device/pci/0/magic", "7")
    for path in ("/local/domain/0/backend/pci/5/0/num_devs", "/local/domain/6/x"):
        with pytest.raises(XenStoreError) as info:
            guest.write(path, "9")
        assert info.value.errno == errno.EACCES
    for path in ("/local/domain/0/backend/pci/6/0/num_devs", "/local/domain/0/absent"):
        with pytest.raises(XenStoreError) as info:
            guest.read(path)
        assert info.value.errno == errno.EACCES


def test_children_inherit_permissions_and_a_guest_owns_what_it_creates() -> None:
    store = SimXenStore()
    dom0, guest = store.connect(0), store.connect(5)
    dom0.mkdir("/local/domain/5")
    dom0.set_permissions("/local/domain/5", permissions("n0", "r5"))
    dom0.write("/local/domain/5/device/pci/0/backend", "x")  # inherits n0 r5: read-only to 5
    assert dom0.permissions("/local/domain/5/device/pci/0") == permissions("n0", "r5")
    with pytest.raises(XenStoreError) as info:
        guest.write("/local/domain/5/device/pci/0/pci-op-ref", "8")
    assert info.value.errno == errno.EACCES  # the lab's "13 Error writing configuration"
    dom0.set_permissions("/local/domain/5/device/pci/0", permissions("n5", "r0"))
    guest.write("/local/domain/5/device/pci/0/pci-op-ref", "8")
    assert guest.permissions("/local/domain/5/device/pci/0/pci-op-ref") == permissions("n5", "r0")
    with pytest.raises(XenStoreError) as info:
        dom0.set_permissions("/local/domain/5/data", permissions("w5"))
    assert info.value.errno == errno.ENOENT


def test_only_owners_change_permissions_and_only_dom0_the_owner() -> None:
    store = SimXenStore()
    dom0, guest, other = store.connect(0), store.connect(5), store.connect(6)
    dom0.mkdir("/g")
    dom0.set_permissions("/g", permissions("n5"))
    guest.set_permissions("/g", permissions("n5", "r6"))  # the owner may share it
    assert other.read("/g") == ""
    for client, perms, code in (
        (other, permissions("n6"), errno.EACCES),  # not the owner
        (guest, permissions("n6"), errno.EPERM),  # giving it away needs dom0
        (guest, (), errno.EINVAL),
        (dom0, permissions("n0"), errno.ENOENT),  # on /absent below
    ):
        path = "/absent" if client is dom0 else "/g"
        with pytest.raises(XenStoreError) as info:
            client.set_permissions(path, perms)
        assert info.value.errno == code


def test_a_transaction_creates_chmods_and_fills_at_once() -> None:
    store = SimXenStore()
    dom0, guest = store.connect(0), store.connect(5)
    dom0.mkdir("/local/domain/5/device")
    dom0.set_permissions("/local/domain/5/device", permissions("n0", "r5"))

    def body(tx: Transaction) -> None:
        tx.mkdir("/local/domain/5/device/pci/0")
        tx.set_permissions("/local/domain/5/device/pci/0", permissions("n5", "r0"))
        tx.write("/local/domain/5/device/pci/0/state", "1")
        assert guest.read("/local/domain/5/device/pci/0") is None  # nothing seen yet

    run_transaction(dom0, body)
    assert guest.permissions("/local/domain/5/device/pci/0/state") == permissions("n5", "r0")
    guest.write("/local/domain/5/device/pci/0/state", "3")


def test_a_dead_domains_nodes_pass_to_dom0() -> None:
    store = SimXenStore()
    dom0 = store.connect(0)
    dom0.mkdir("/local/domain/0/backend/vif/5")
    dom0.set_permissions("/local/domain/0/backend/vif/5", permissions("n5", "r0"))
    store.release_domain(5)
    assert dom0.permissions("/local/domain/0/backend/vif/5") == permissions("n0", "r0")


def test_watch_fires_on_set_and_on_changes_below() -> None:
    store = SimXenStore()
    xs = store.connect(0)
    xs.watch("/w", "tok")
    assert drain(xs) == [WatchEvent("/w", "tok")]
    xs.write("/w/x", "1")
    xs.write("/other", "1")
    assert drain(xs) == [WatchEvent("/w", "tok"), WatchEvent("/w/x", "tok")]
    xs.watch("/w/x/y", "deep")
    drain(xs)
    xs.rm("/w")
    assert set(drain(xs)) == {WatchEvent("/w", "tok"), WatchEvent("/w/x/y", "deep")}
    xs.unwatch("/w", "tok")
    xs.write("/w/z", "1")
    assert drain(xs) == []


def test_release_domain_fires_special_watch() -> None:
    store = SimXenStore()
    xs = store.connect(0)
    xs.write("/local/domain/3/name", "g")
    xs.watch("@releaseDomain", "rel")
    drain(xs)
    store.release_domain(3)
    assert drain(xs) == [WatchEvent("@releaseDomain", "rel")]
    assert xs.read("/local/domain/3/name") is None


def test_transaction_commits_atomically() -> None:
    store = SimXenStore()
    xs = store.connect(0)
    tx = xs.transaction()
    tx.write("/t/a", "1")
    tx.write("/t/b", "2")
    assert xs.read("/t/a") is None
    assert tx.commit()
    assert (xs.read("/t/a"), xs.read("/t/b")) == ("1", "2")


def test_transaction_conflict_and_retry() -> None:
    store = SimXenStore()
    xs, other = store.connect(0), store.connect(0)
    xs.write("/c", "0")
    tx = xs.transaction()
    assert tx.read("/c") == "0"
    other.write("/c", "1")
    tx.write("/c", "2")
    assert not tx.commit()
    assert xs.read("/c") == "1"
    attempts: list[int] = []

    def bump(t: Transaction) -> str:
        value = t.read("/c") or "0"
        attempts.append(1)
        if len(attempts) == 1:
            other.write("/c", "5")  # a concurrent writer: the first attempt must be retried
        t.write("/c", str(int(value) + 1))
        return value

    assert run_transaction(xs, bump) == "5"
    assert xs.read("/c") == "6"
    assert len(attempts) == 2


def test_unrelated_change_does_not_conflict() -> None:
    store = SimXenStore()
    xs, other = store.connect(0), store.connect(0)
    tx = xs.transaction()
    tx.write("/p/q", "1")
    other.write("/elsewhere", "1")
    assert tx.commit()


def test_guest_quota_protects_the_store() -> None:
    store = SimXenStore()
    guest, dom0 = store.connect(4), store.connect(0)
    dom0.mkdir("/local/domain/4/junk")
    dom0.set_permissions("/local/domain/4/junk", permissions("n4"))
    with pytest.raises(XenStoreError) as info:
        for i in range(DOMAIN_QUOTA + 10):
            guest.write(f"/local/domain/4/junk/{i}", "x")
    assert info.value.errno == errno.EDQUOT
    dom0.write("/local/domain/0/backend/pci/5/0/state", "1")  # others still write
    guest.write("/local/domain/4/junk/0", "overwrite is fine")


def test_set_permissions_is_kept_and_fires_watches_as_xenstored() -> None:
    store = SimXenStore()
    xs, watcher = store.connect(0), store.connect(0)
    watcher.watch("/local/domain/0/backend", "be")
    drain(watcher)
    be = "/local/domain/0/backend/pci/3/0"
    with pytest.raises(XenStoreError) as info:
        xs.set_permissions(be, ("n0", "r3"))
    assert info.value.errno == errno.ENOENT
    xs.write(be, "")
    drain(watcher)
    xs.set_permissions(be, ("n0", "r3"))  # an empty directory's chmod is a change to watchers
    assert drain(watcher) == [WatchEvent(be, "be")]
    assert xs.get_permissions(be) == ("n0", "r3")
    tx = xs.transaction()
    tx.rm(be)
    tx.write(be, "")
    tx.set_permissions(be, ("n0", "r4"))
    assert tx.commit()
    assert xs.get_permissions(be) == ("n0", "r4")
    xs.rm(be)
    assert xs.get_permissions(be) is None
