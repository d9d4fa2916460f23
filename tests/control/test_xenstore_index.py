"""The simulated xenstore's indexes (children, owners, watches, generations) against what a walk
over every node says, after a random mix of writes, removals, transactions and deaths."""

from __future__ import annotations

import random

import pytest

from pciback.ports.xenstore import WatchEvent, XenStoreError
from pciback.sim.xenstore import (
    MAX_WATCHES,
    WATCH_INDEX_DEPTH,
    SimXenStore,
    SimXenStoreClient,
)

NAMES = ("a", "b", "c", "dev-0", "state")


def listing_by_walk(store: SimXenStore, path: str) -> list[str] | None:
    if path not in store.nodes:
        return None
    prefix = "/" if path == "/" else path + "/"
    return sorted(
        k[len(prefix) :]
        for k in store.nodes
        if k != path and k.startswith(prefix) and "/" not in k[len(prefix) :]
    )


def owned_by_walk(store: SimXenStore, domid: int) -> int:
    return sum(1 for perms in store.tree.perms.values() if perms[0].domid == domid)


def random_path(rng: random.Random) -> str:
    return "/" + "/".join(rng.choice(NAMES) for _ in range(rng.randint(1, 4)))


def test_listings_and_ownership_match_a_walk_after_random_changes() -> None:
    rng = random.Random(12)
    store = SimXenStore()
    dom0 = store.connect(0)
    dom0.write("/local/domain/7", "")
    dom0.set_permissions("/local/domain/7", ["b7"])
    guest = store.connect(7)
    for step in range(3000):
        path = random_path(rng)
        action = rng.random()
        if action < 0.45:
            dom0.write(path, str(step))
        elif action < 0.6:
            guest.write("/local/domain/7" + path, str(step))
        elif action < 0.8:
            dom0.rm(path)
        elif action < 0.95:
            tx = dom0.transaction()
            tx.write(path, "t")
            tx.rm(random_path(rng))
            tx.write(random_path(rng) + "/x", "u")
            looked = {p: tx.list(p) for p in ("/", *(random_path(rng) for _ in range(3)))}
            assert tx.commit()  # nothing else changed meanwhile
            assert {p: dom0.list(p) for p in looked} == looked
        else:
            store.release_domain(7)
            dom0.write("/local/domain/7", "")
            dom0.set_permissions("/local/domain/7", ["b7"])
    paths = {"/", "/local/domain/7", *store.nodes}
    for path in sorted(paths | {random_path(rng) for _ in range(200)}):
        assert dom0.list(path) == listing_by_walk(store, path), path
    for domid in (0, 7):
        assert store.tree.owned_by(domid) == owned_by_walk(store, domid)


def test_a_transaction_sees_its_own_changes_over_the_store() -> None:
    store = SimXenStore()
    xs = store.connect(0)
    xs.write("/d/keep", "1")
    xs.write("/d/gone/deep", "2")
    tx = xs.transaction()
    tx.rm("/d/gone")
    tx.write("/d/new/leaf", "3")
    assert tx.list("/d") == ["keep", "new"]
    assert tx.read("/d/gone/deep") is None
    assert xs.list("/d") == ["gone", "keep"]  # nothing reaches the store before the commit
    assert tx.commit()
    assert xs.list("/d") == ["keep", "new"]
    assert xs.read("/d/new/leaf") == "3" and xs.read("/d/gone/deep") is None


def test_a_transaction_conflicts_when_a_node_it_read_changed_meanwhile() -> None:
    store = SimXenStore()
    xs = store.connect(0)
    xs.write("/d/x", "1")
    tx = xs.transaction()
    assert tx.read("/d/x") == "1"
    tx.write("/d/y", "2")
    xs.write("/d/x", "changed")
    assert not tx.commit()
    assert xs.read("/d/y") is None
    tx = xs.transaction()
    tx.write("/d/sub/z", "3")
    xs.rm("/d")  # an ancestor of what it wrote went away
    assert not tx.commit()
    assert xs.read("/d/sub/z") is None


def test_removing_an_ancestor_fires_the_watches_below_it_only() -> None:
    store = SimXenStore()
    xs = store.connect(0)
    xs.write("/a/b/c", "1")
    xs.write("/z/q", "1")
    watcher = store.connect(0)
    watcher.watch("/a/b/c", "deep")
    watcher.watch("/z", "other")
    watcher.watch("/", "all")
    while watcher.next_event() is not None:
        pass
    xs.rm("/a")
    events = []
    while (event := watcher.next_event()) is not None:
        events.append(event)
    assert sorted(events, key=str) == sorted(
        [WatchEvent("/a/b/c", "deep"), WatchEvent("/a", "all")], key=str
    )
    store.disconnect(watcher)
    xs.rm("/z")
    assert watcher.next_event() is None  # a closed connection is told nothing


def test_removals_deeper_than_the_watch_index_fire_the_watches_below_them() -> None:
    store = SimXenStore()
    xs = store.connect(0)
    deep = "/" + "/".join(f"n{i}" for i in range(WATCH_INDEX_DEPTH + 6))
    xs.write(deep, "1")
    watcher = store.connect(0)
    watcher.watch(deep, "deep")
    watcher.watch(deep.rsplit("/", 3)[0] + "/sibling", "sibling")
    while watcher.next_event() is not None:
        pass
    cut = deep.rsplit("/", 2)[0]  # deeper than the index, above the watch
    assert cut.count("/") > WATCH_INDEX_DEPTH
    xs.rm(cut)
    assert watcher.next_event() == WatchEvent(deep, "deep")
    assert watcher.next_event() is None
    assert len(store.watched_below) == WATCH_INDEX_DEPTH  # one entry per indexed ancestor


def test_dom0_watches_one_frontend_per_guest_beyond_a_guests_quota() -> None:
    store = SimXenStore()
    dom0 = store.connect(0)
    for domid in range(1, MAX_WATCHES + 10):
        dom0.watch(f"/local/domain/{domid}/device/pci/0/state", "fe")
    guest: SimXenStoreClient = store.connect(5)
    for i in range(MAX_WATCHES):
        guest.watch(f"/local/domain/5/w{i}", "t")
    with pytest.raises(XenStoreError, match="too many watches"):
        guest.watch("/local/domain/5/one-more", "t")
