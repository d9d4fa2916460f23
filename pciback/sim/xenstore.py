"""An in-memory xenstore with per-domain connections, permissions, watches and transactions.

Permissions follow xenstored (tools/xenstore/xenstored_core.c): every node carries a permission
list (owner and default access first, then per-domain entries); domain 0 and a node's owner may
do anything with it; a node created inherits its parent's list, and a guest owns what it
creates; reading or writing a node that does not exist is decided by its nearest existing
ancestor. So a guest may write only where the toolstack gave it a directory, and a directory
created and filled before being given to the guest is, meanwhile, read-only to it: the ordering
mistake the lab hit (xen-lab/README.md) fails here as it fails on Xen.
"""

from __future__ import annotations

import errno
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from pciback.ports.xenstore import (
    Access,
    Permission,
    WatchEvent,
    XenStoreError,
    check_path,
    check_value,
)

MAX_NODES = 1 << 16
MAX_WATCHES = 1024  # per guest connection
# xenstored holds dom0 to no watch quota; the daemon watches one frontend per backend, so its
# bound is the manager's (MAX_GUESTS x MAX_DEVIDS) and the two roots, not a guest's.
MAX_WATCHES_DOM0 = 4096 * 16 + 2
MAX_PENDING = 1 << 14
DOMAIN_QUOTA = 1000
MAX_PERMS = 5  # xenstored's default quota of permission entries per node
# A watch is indexed under its ancestors down to this depth only: a guest's watch on a path
# 1500 levels deep must not cost 1500 index entries (and their strings).
WATCH_INDEX_DEPTH = 8

Perms = tuple[Permission, ...]
ROOT_PERMS: Perms = (Permission(0, Access.NONE),)
_ALL = Access.READ | Access.WRITE


def access_of(domid: int, perms: Perms) -> Access:
    """What `domid` may do with a node of these permissions (xenstored's perm_for_conn)."""
    if domid == 0 or perms[0].domid == domid:
        return _ALL
    for entry in perms[1:]:
        if entry.domid == domid:
            return entry.access
    return perms[0].access


class Tree:
    """Node values and permission lists, indexed so that nothing walks every node: each node's
    child names, and the nodes each domain owns (quota, and what passes to dom0 when the domain
    dies)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {"/": ""}
        self.perms: dict[str, Perms] = {"/": ROOT_PERMS}
        self.kids: dict[str, set[str]] = {"/": set()}
        self.owners: dict[int, set[str]] = {0: {"/"}}

    def has(self, path: str) -> bool:
        return path in self.values

    def get(self, path: str) -> str | None:
        return self.values.get(path)

    def perms_of(self, path: str) -> Perms:
        return self.perms[path]

    def owned_by(self, domid: int) -> int:
        return len(self.owners.get(domid, ()))

    def child_names(self, path: str) -> list[str]:
        return sorted(self.kids[path])

    def put(self, path: str, value: str, perms: Perms) -> None:
        """Set a node whose parent exists (creating it when new)."""
        if path in self.values:
            self._disown(path)
        else:
            self.kids[_parent(path)].add(_name(path))
            self.kids[path] = set()
        self.values[path] = value
        self.perms[path] = perms
        self.owners.setdefault(perms[0].domid, set()).add(path)

    def set_perms(self, path: str, perms: Perms) -> None:
        self.put(path, self.values[path], perms)

    def remove(self, path: str) -> list[str]:
        """Remove the node and its subtree; the paths gone, parents first."""
        if path not in self.values:
            return []
        gone = _subtree(path, self.kids.__getitem__)
        self.kids[_parent(path)].discard(_name(path))
        for p in gone:
            self._disown(p)
            del self.values[p], self.perms[p], self.kids[p]
        return gone

    def _disown(self, path: str) -> None:
        owner = self.perms[path][0].domid
        owned = self.owners[owner]
        owned.discard(path)
        if not owned:
            del self.owners[owner]


class Overlay:
    """A transaction's view: its own changes over the live store, so that starting one does
    not copy the store. What it read or listed that changed meanwhile fails its commit (the
    store's generations), which is what a copy taken at the start would have given too."""

    def __init__(self, base: Tree) -> None:
        self.base = base
        self.values: dict[str, str | None] = {}  # None: removed here
        self.perms: dict[str, Perms] = {}
        self.added: dict[str, set[str]] = {}  # child names created here, by parent
        self.owned: dict[int, int] = {}  # change of each domain's node count

    def has(self, path: str) -> bool:
        if path in self.values:
            return self.values[path] is not None
        return self.base.has(path)

    def get(self, path: str) -> str | None:
        if path in self.values:
            return self.values[path]
        return self.base.get(path)

    def perms_of(self, path: str) -> Perms:
        found = self.perms.get(path)
        return self.base.perms_of(path) if found is None else found

    def owned_by(self, domid: int) -> int:
        return self.base.owned_by(domid) + self.owned.get(domid, 0)

    def child_names(self, path: str) -> list[str]:
        prefix = "/" if path == "/" else path + "/"
        names = set(self.base.kids.get(path, ())) | self.added.get(path, set())
        return sorted(n for n in names if self.has(prefix + n))

    def put(self, path: str, value: str, perms: Perms) -> None:
        if self.has(path):
            self._count(self.perms_of(path), -1)
        else:
            self.added.setdefault(_parent(path), set()).add(_name(path))
        self.values[path] = value
        self.perms[path] = perms
        self._count(perms, +1)

    def set_perms(self, path: str, perms: Perms) -> None:
        value = self.get(path)
        assert value is not None
        self.put(path, value, perms)

    def remove(self, path: str) -> list[str]:
        if not self.has(path):
            return []
        gone = _subtree(path, self._names)
        for p in gone:
            self._count(self.perms_of(p), -1)
            self.values[p] = None
            self.perms.pop(p, None)
        return gone

    def _names(self, path: str) -> list[str]:
        return self.child_names(path)

    def _count(self, perms: Perms, delta: int) -> None:
        owner = perms[0].domid
        self.owned[owner] = self.owned.get(owner, 0) + delta


AnyTree = Tree | Overlay


def nearest(tree: AnyTree, path: str) -> str:
    """The node itself when it exists, else its nearest existing ancestor."""
    while not tree.has(path):
        path = _parent(path)
    return path


def allowed(tree: AnyTree, domid: int, path: str, want: Access) -> bool:
    if domid == 0 and not path.startswith("@"):
        return True  # dom0 may do anything with any node: no walk to the nearest one
    if path.startswith("@"):
        return domid == 0 and want == Access.READ
    return want in access_of(domid, tree.perms_of(nearest(tree, path)))


class SimXenStore:
    """The store itself; talk to it through `connect(domid)`."""

    def __init__(self, max_nodes: int = MAX_NODES) -> None:
        self.tree = Tree()
        # Generations: of each node's own last change, and of the last change at or below it,
        # so that a commit checks what it touched without looking at every change made.
        self.own_gen: dict[str, int] = {}
        self.sub_gen: dict[str, int] = {}
        self.gen = 0
        self.max_nodes = max_nodes
        self.lock = threading.RLock()
        self._clients: dict[SimXenStoreClient, None] = {}
        # Watched path -> who watches it; and each path down to WATCH_INDEX_DEPTH -> the
        # watched paths strictly below it (a removal fires those). Events are found from the
        # changed path, not by asking every connection.
        self.watchers: dict[str, dict[tuple[SimXenStoreClient, str], None]] = {}
        self.watched_below: dict[str, dict[str, int]] = {}

    @property
    def nodes(self) -> dict[str, str]:
        return self.tree.values

    def connect(self, domid: int = 0) -> SimXenStoreClient:
        client = SimXenStoreClient(self, domid)
        with self.lock:
            self._clients[client] = None
        return client

    def disconnect(self, client: SimXenStoreClient) -> None:
        with self.lock:
            if self._clients.pop(client, 0) is None:
                for path, token in list(client.watches):
                    self.remove_watch(client, path, token)

    def add_watch(self, client: SimXenStoreClient, path: str, token: str) -> None:
        self.watchers.setdefault(path, {})[(client, token)] = None
        for above in _ancestors(path)[:WATCH_INDEX_DEPTH]:
            below = self.watched_below.setdefault(above, {})
            below[path] = below.get(path, 0) + 1

    def remove_watch(self, client: SimXenStoreClient, path: str, token: str) -> None:
        watchers = self.watchers.get(path)
        if watchers is None or watchers.pop((client, token), 0) is not None:
            return
        if not watchers:
            del self.watchers[path]
        for above in _ancestors(path)[:WATCH_INDEX_DEPTH]:
            below = self.watched_below[above]
            below[path] -= 1
            if not below[path]:
                del below[path]
                if not below:
                    del self.watched_below[above]

    def release_domain(self, domid: int) -> None:
        """A domain died: its home goes (libxl removes it), what it owned elsewhere passes to
        dom0 (xenstored does, so a later domain with the same id inherits nothing), and
        @releaseDomain watchers are told."""
        with self.lock:
            gone = self.apply_rm(self.tree, f"/local/domain/{domid}")
            if gone:
                self.touch(gone)
                self.fire(f"/local/domain/{domid}", removed=True)
            for path in sorted(self.tree.owners.get(domid, ())):
                perms = self.tree.perms[path]
                self.tree.set_perms(path, (Permission(0, perms[0].access), *perms[1:]))
            self.fire("@releaseDomain", removed=False)

    # -- node operations on a tree (the store's own, or a transaction's overlay) -------------
    def apply_write(self, tree: AnyTree, domid: int, path: str, value: str) -> list[str]:
        created = [p for p in [*_ancestors(path), path] if not tree.has(p)]
        if len(self.tree.values) + len(created) > self.max_nodes:
            raise XenStoreError(errno.ENOSPC, path, "store quota exceeded")
        for p in created:
            inherited = tree.perms_of(_parent(p))
            if domid != 0:  # unprivileged domains own what they create
                inherited = (Permission(domid, inherited[0].access), *inherited[1:])
            tree.put(p, "", inherited)
        tree.put(path, value, tree.perms_of(path))
        return created if path in created else [*created, path]

    @staticmethod
    def apply_rm(tree: AnyTree, path: str) -> list[str]:
        if path == "/":
            raise XenStoreError(errno.EINVAL, path, "cannot remove the root")
        return tree.remove(path)

    @staticmethod
    def apply_set_permissions(
        tree: AnyTree, domid: int, path: str, given: Sequence[Permission | str]
    ) -> None:
        if not tree.has(path):
            raise XenStoreError(errno.ENOENT, path, "no such node")
        try:
            perms = tuple(p if isinstance(p, Permission) else Permission.parse(p) for p in given)
        except ValueError as exc:
            raise XenStoreError(errno.EINVAL, path, str(exc)) from None
        if not perms or len(perms) > MAX_PERMS:
            raise XenStoreError(errno.EINVAL, path, f"1 to {MAX_PERMS} permission entries")
        current = tree.perms_of(path)
        if domid != 0 and current[0].domid != domid:
            raise XenStoreError(errno.EACCES, path, f"domain {domid} does not own it")
        if domid != 0 and perms[0].domid != current[0].domid:
            raise XenStoreError(errno.EPERM, path, "only dom0 may change a node's owner")
        tree.set_perms(path, perms)

    @staticmethod
    def children(tree: AnyTree, path: str) -> list[str] | None:
        return tree.child_names(path) if tree.has(path) else None

    def touch(self, paths: list[str]) -> None:
        self.gen += 1
        for p in paths:
            self.own_gen[p] = self.gen
            for above in [p, *reversed(_ancestors(p))]:
                if self.sub_gen.get(above) == self.gen:
                    break  # and so are its ancestors, from an earlier path of this change
                self.sub_gen[above] = self.gen

    def changed_since(self, start: int, paths: set[str]) -> bool:
        """Whether a node in `paths`, below one, or an ancestor of one changed after `start`."""
        for p in paths:
            if p == "/":
                if self.own_gen.get(p, 0) > start:
                    return True
                continue
            if self.sub_gen.get(p, 0) > start:
                return True
            if any(self.own_gen.get(a, 0) > start for a in _ancestors(p) if a != "/"):
                return True
        return False

    def fire(self, path: str, removed: bool) -> None:
        event_paths = [path, *_ancestors(path)] if not path.startswith("@") else [path]
        if "/" not in event_paths:
            event_paths.append("/")
        for watched in event_paths:
            for client, token in list(self.watchers.get(watched, ())):
                client.queue(WatchEvent(path, token))
        if removed:
            for watched in self._watched_below(path):
                for client, token in list(self.watchers.get(watched, ())):
                    client.queue(WatchEvent(watched, token))

    def _watched_below(self, path: str) -> list[str]:
        above = _ancestors(path)
        if len(above) < WATCH_INDEX_DEPTH:  # `path` itself is an indexed ancestor
            return list(self.watched_below.get(path, ()))
        prefix = path + "/"
        indexed = self.watched_below.get(above[WATCH_INDEX_DEPTH - 1], ())
        return [watched for watched in indexed if watched.startswith(prefix)]


class SimXenStoreClient:
    """One connection to the store, as domain `domid`; implements the XenStore port."""

    def __init__(self, store: SimXenStore, domid: int) -> None:
        self.store = store
        self.domid = domid
        self.watches: set[tuple[str, str]] = set()
        self._events: deque[WatchEvent] = deque()
        self._pending: set[WatchEvent] = set()
        self._cond = threading.Condition(store.lock)
        self._woken = False

    # -- permissions -------------------------------------------------------------------------
    def check_read(self, tree: AnyTree, path: str) -> str:
        check_path(path)
        if not allowed(tree, self.domid, path, Access.READ):
            raise XenStoreError(errno.EACCES, path, f"domain {self.domid} may not read")
        return path

    def check_write(self, tree: AnyTree, path: str) -> str:
        check_path(path)
        if path.startswith("@") or not allowed(tree, self.domid, path, Access.WRITE):
            raise XenStoreError(errno.EACCES, path, f"domain {self.domid} may not write")
        return path

    def check_quota(self, tree: AnyTree, path: str) -> None:
        """A guest may own at most DOMAIN_QUOTA nodes, as xenstored's default quota: one
        guest filling the store must not starve the others."""
        if self.domid == 0 or tree.has(path):
            return
        if tree.owned_by(self.domid) >= DOMAIN_QUOTA:
            raise XenStoreError(errno.EDQUOT, path, f"domain {self.domid} is over its quota")

    def permissions(self, path: str) -> Perms | None:
        """The node's permission list (xs_get_permissions), None when it does not exist."""
        with self.store.lock:
            tree = self.store.tree
            return tree.perms.get(self.check_read(tree, path))

    # -- StoreOps ----------------------------------------------------------------------------
    def read(self, path: str) -> str | None:
        with self.store.lock:
            tree = self.store.tree
            return tree.values.get(self.check_read(tree, path))

    def write(self, path: str, value: str) -> None:
        with self.store.lock:
            self._write(path, check_value(path, value))

    def mkdir(self, path: str) -> None:
        with self.store.lock:
            if not self.store.tree.has(self.check_write(self.store.tree, path)):
                self._write(path, "")

    def _write(self, path: str, value: str) -> None:
        tree = self.store.tree
        self.check_write(tree, path)
        self.check_quota(tree, path)
        changed = self.store.apply_write(tree, self.domid, path, value)
        self.store.touch(changed)
        for p in changed:
            self.store.fire(p, removed=False)

    def rm(self, path: str) -> None:
        with self.store.lock:
            tree = self.store.tree
            self.check_write(tree, path)
            if path not in tree.values:
                return
            gone = self.store.apply_rm(tree, path)
            self.store.touch(gone)
            self.store.fire(path, removed=True)

    def list(self, path: str) -> list[str] | None:
        with self.store.lock:
            tree = self.store.tree
            return self.store.children(tree, self.check_read(tree, path))

    def get_permissions(self, path: str) -> tuple[str, ...] | None:
        """The permissions as `xenstore-ls -p` shows them ("n0", "r5"), None when absent."""
        perms = self.permissions(path)
        return None if perms is None else tuple(str(p) for p in perms)

    def set_permissions(self, path: str, perms: Sequence[Permission | str]) -> None:
        """The port's call, also taking xenstore-chmod's words ("n0", "r5")."""
        with self.store.lock:
            check_path(path)
            self.store.apply_set_permissions(self.store.tree, self.domid, path, perms)
            self.store.touch([path])
            self.store.fire(path, removed=False)

    def transaction(self) -> SimTransaction:
        return SimTransaction(self)

    # -- watches -----------------------------------------------------------------------------
    def watch(self, path: str, token: str) -> None:
        with self.store.lock:
            check_path(path)
            if (path, token) not in self.watches:
                if len(self.watches) >= (MAX_WATCHES_DOM0 if self.domid == 0 else MAX_WATCHES):
                    raise XenStoreError(errno.E2BIG, path, "too many watches")
                self.watches.add((path, token))
                self.store.add_watch(self, path, token)
            self.queue(WatchEvent(path, token))

    def unwatch(self, path: str, token: str) -> None:
        with self.store.lock:
            if (path, token) in self.watches:
                self.watches.discard((path, token))
                self.store.remove_watch(self, path, token)

    def next_event(self, timeout: float | None = 0.0) -> WatchEvent | None:
        with self._cond:
            if not self._events and timeout != 0.0:
                self._cond.wait_for(lambda: bool(self._events) or self._woken, timeout)
            if not self._events:
                if timeout != 0.0:
                    self._woken = False  # consumed by a wait it ended
                return None
            event = self._events.popleft()
            self._pending.discard(event)
            return event

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def fileno(self) -> int | None:
        return None

    def queue(self, event: WatchEvent) -> None:
        # Identical pending events coalesce: the reader re-reads state, so one suffices.
        if event in self._pending:
            return
        if len(self._events) >= MAX_PENDING:
            raise XenStoreError(errno.ENOSPC, event.path, "watch event queue full")
        self._pending.add(event)
        self._events.append(event)
        self._cond.notify_all()


class SimTransaction:
    """Optimistic: works on a copy, commits only when nothing it touched changed meanwhile."""

    def __init__(self, client: SimXenStoreClient) -> None:
        self.client = client
        store = client.store
        with store.lock:
            self.start = store.gen
            self.tree = Overlay(store.tree)
        self.touched: set[str] = set()
        self.removed: set[str] = set()
        self.written: set[str] = set()
        self.done = False

    def _live(self) -> None:
        if self.done:
            raise XenStoreError(errno.EINVAL, "", "transaction already ended")

    def read(self, path: str) -> str | None:
        self._live()
        self.touched.add(self.client.check_read(self.tree, path))
        return self.tree.get(path)

    def write(self, path: str, value: str) -> None:
        self._live()
        self._write(path, check_value(path, value))

    def mkdir(self, path: str) -> None:
        self._live()
        if not self.tree.has(self.client.check_write(self.tree, path)):
            self._write(path, "")

    def _write(self, path: str, value: str) -> None:
        self.client.check_write(self.tree, path)
        self.client.check_quota(self.tree, path)
        changed = self.client.store.apply_write(self.tree, self.client.domid, path, value)
        self.touched.update(changed)
        self.written.update(changed)

    def rm(self, path: str) -> None:
        self._live()
        self.client.check_write(self.tree, path)
        if self.client.store.apply_rm(self.tree, path):
            self.touched.add(path)
            self.removed.add(path)

    def list(self, path: str) -> list[str] | None:
        self._live()
        self.touched.add(self.client.check_read(self.tree, path))
        return self.client.store.children(self.tree, path)

    def set_permissions(self, path: str, perms: Sequence[Permission | str]) -> None:
        self._live()
        check_path(path)
        self.client.store.apply_set_permissions(self.tree, self.client.domid, path, perms)
        self.touched.add(path)
        self.written.add(path)

    def commit(self) -> bool:
        self._live()
        self.done = True
        store = self.client.store
        with store.lock:
            if store.changed_since(self.start, self.touched):
                return False
            for path in sorted(self.removed):
                store.touch(store.tree.remove(path))
            for path in sorted(self.written):
                value = self.tree.get(path)
                if value is not None:
                    store.tree.put(path, value, self.tree.perms_of(path))
            store.touch(sorted(self.written))
            for path in sorted(self.removed):
                store.fire(path, removed=True)
            for path in sorted(self.written):
                store.fire(path, removed=False)
        return True

    def abort(self) -> None:
        self.done = True


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _name(path: str) -> str:
    return path.rsplit("/", 1)[1]


def _subtree(path: str, names_of: Callable[[str], Iterable[str]]) -> list[str]:
    """`path` and every node below it, parents first; walks only that subtree."""
    found = [path]
    i = 0
    while i < len(found):
        here = found[i]
        prefix = "/" if here == "/" else here + "/"
        found.extend(prefix + name for name in sorted(names_of(here)))
        i += 1
    return found


def _ancestors(path: str) -> list[str]:
    if path.startswith("@"):
        return []
    parts = path.split("/")[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
