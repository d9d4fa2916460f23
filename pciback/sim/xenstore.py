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
from collections.abc import Sequence

from pciback.ports.xenstore import (
    Access,
    Permission,
    WatchEvent,
    XenStoreError,
    check_path,
    check_value,
)

MAX_NODES = 1 << 16
MAX_WATCHES = 1024
MAX_PENDING = 1 << 14
DOMAIN_QUOTA = 1000
MAX_PERMS = 5  # xenstored's default quota of permission entries per node

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
    """Node values and permission lists: the store's own, or a transaction's copy."""

    def __init__(
        self, values: dict[str, str] | None = None, perms: dict[str, Perms] | None = None
    ) -> None:
        self.values: dict[str, str] = {"/": ""} if values is None else values
        self.perms: dict[str, Perms] = {"/": ROOT_PERMS} if perms is None else perms

    def copy(self) -> Tree:
        return Tree(dict(self.values), dict(self.perms))

    def nearest(self, path: str) -> str:
        """The node itself when it exists, else its nearest existing ancestor."""
        while path not in self.values:
            path = path.rsplit("/", 1)[0] or "/"
        return path

    def allowed(self, domid: int, path: str, want: Access) -> bool:
        if path.startswith("@"):
            return domid == 0 and want == Access.READ
        return want in access_of(domid, self.perms[self.nearest(path)])

    def owned_by(self, domid: int) -> int:
        return sum(1 for p in self.perms.values() if p[0].domid == domid)


class SimXenStore:
    """The store itself; talk to it through `connect(domid)`."""

    def __init__(self, max_nodes: int = MAX_NODES) -> None:
        self.tree = Tree()
        self.gens: dict[str, int] = {}
        self.gen = 0
        self.max_nodes = max_nodes
        self.lock = threading.RLock()
        self._clients: list[SimXenStoreClient] = []

    @property
    def nodes(self) -> dict[str, str]:
        return self.tree.values

    def connect(self, domid: int = 0) -> SimXenStoreClient:
        client = SimXenStoreClient(self, domid)
        with self.lock:
            self._clients.append(client)
        return client

    def disconnect(self, client: SimXenStoreClient) -> None:
        with self.lock:
            if client in self._clients:
                self._clients.remove(client)

    def release_domain(self, domid: int) -> None:
        """A domain died: its home goes (libxl removes it), what it owned elsewhere passes to
        dom0 (xenstored does, so a later domain with the same id inherits nothing), and
        @releaseDomain watchers are told."""
        with self.lock:
            gone = self.apply_rm(self.tree, f"/local/domain/{domid}")
            if gone:
                self.touch(gone)
                self.fire(f"/local/domain/{domid}", removed=True)
            for path, perms in list(self.tree.perms.items()):
                if perms[0].domid == domid:
                    self.tree.perms[path] = (Permission(0, perms[0].access), *perms[1:])
            self.fire("@releaseDomain", removed=False)

    # -- node operations on a tree (the store's own, or a transaction's copy) ----------------
    def apply_write(self, tree: Tree, domid: int, path: str, value: str) -> list[str]:
        created = [p for p in [*_ancestors(path), path] if p not in tree.values]
        if len(tree.values) + len(created) > self.max_nodes:
            raise XenStoreError(errno.ENOSPC, path, "store quota exceeded")
        for p in created:
            parent = p.rsplit("/", 1)[0] or "/"
            inherited = tree.perms[parent]
            if domid != 0:  # unprivileged domains own what they create
                inherited = (Permission(domid, inherited[0].access), *inherited[1:])
            tree.values[p] = ""
            tree.perms[p] = inherited
        tree.values[path] = value
        return created if path in created else [*created, path]

    def apply_rm(self, tree: Tree, path: str) -> list[str]:
        if path == "/":
            raise XenStoreError(errno.EINVAL, path, "cannot remove the root")
        prefix = path + "/"
        gone = [k for k in tree.values if k == path or k.startswith(prefix)]
        for k in gone:
            del tree.values[k]
            del tree.perms[k]
        return gone

    @staticmethod
    def apply_set_permissions(
        tree: Tree, domid: int, path: str, given: Sequence[Permission | str]
    ) -> None:
        if path not in tree.values:
            raise XenStoreError(errno.ENOENT, path, "no such node")
        try:
            perms = tuple(p if isinstance(p, Permission) else Permission.parse(p) for p in given)
        except ValueError as exc:
            raise XenStoreError(errno.EINVAL, path, str(exc)) from None
        if not perms or len(perms) > MAX_PERMS:
            raise XenStoreError(errno.EINVAL, path, f"1 to {MAX_PERMS} permission entries")
        current = tree.perms[path]
        if domid != 0 and current[0].domid != domid:
            raise XenStoreError(errno.EACCES, path, f"domain {domid} does not own it")
        if domid != 0 and perms[0].domid != current[0].domid:
            raise XenStoreError(errno.EPERM, path, "only dom0 may change a node's owner")
        tree.perms[path] = perms

    @staticmethod
    def children(tree: Tree, path: str) -> list[str] | None:
        if path not in tree.values:
            return None
        prefix = "/" if path == "/" else path + "/"
        return sorted(
            k[len(prefix) :]
            for k in tree.values
            if k.startswith(prefix) and "/" not in k[len(prefix) :] and k != "/"
        )

    def touch(self, paths: list[str]) -> None:
        self.gen += 1
        for p in paths:
            self.gens[p] = self.gen

    def changed_since(self, start: int, paths: set[str]) -> bool:
        for k, g in self.gens.items():
            if g <= start:
                continue
            for p in paths:
                if k == p or k.startswith(p + "/") or p.startswith(k + "/"):
                    return True
        return False

    def fire(self, path: str, removed: bool) -> None:
        for client in list(self._clients):
            client.notify(path, removed)


class SimXenStoreClient:
    """One connection to the store, as domain `domid`; implements the XenStore port."""

    def __init__(self, store: SimXenStore, domid: int) -> None:
        self.store = store
        self.domid = domid
        self._watches: set[tuple[str, str]] = set()
        self._events: deque[WatchEvent] = deque()
        self._pending: set[WatchEvent] = set()
        self._cond = threading.Condition(store.lock)

    # -- permissions -------------------------------------------------------------------------
    def check_read(self, tree: Tree, path: str) -> str:
        check_path(path)
        if not tree.allowed(self.domid, path, Access.READ):
            raise XenStoreError(errno.EACCES, path, f"domain {self.domid} may not read")
        return path

    def check_write(self, tree: Tree, path: str) -> str:
        check_path(path)
        if path.startswith("@") or not tree.allowed(self.domid, path, Access.WRITE):
            raise XenStoreError(errno.EACCES, path, f"domain {self.domid} may not write")
        return path

    def check_quota(self, tree: Tree, path: str) -> None:
        """A guest may own at most DOMAIN_QUOTA nodes, as xenstored's default quota: one
        guest filling the store must not starve the others."""
        if self.domid == 0 or path in tree.values:
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
            if self.check_write(self.store.tree, path) not in self.store.tree.values:
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
            if len(self._watches) >= MAX_WATCHES:
                raise XenStoreError(errno.E2BIG, path, "too many watches")
            self._watches.add((path, token))
            self._queue(WatchEvent(path, token))

    def unwatch(self, path: str, token: str) -> None:
        with self.store.lock:
            self._watches.discard((path, token))

    def next_event(self, timeout: float | None = 0.0) -> WatchEvent | None:
        with self._cond:
            if not self._events and timeout != 0.0:
                self._cond.wait_for(lambda: bool(self._events), timeout)
            if not self._events:
                return None
            event = self._events.popleft()
            self._pending.discard(event)
            return event

    def fileno(self) -> int | None:
        return None

    def notify(self, path: str, removed: bool) -> None:
        for wpath, token in list(self._watches):
            if path == wpath or path.startswith(wpath + "/") or wpath == "/":
                self._queue(WatchEvent(path, token))
            elif removed and wpath.startswith(path + "/"):
                self._queue(WatchEvent(wpath, token))

    def _queue(self, event: WatchEvent) -> None:
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
            self.tree = store.tree.copy()
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
        return self.tree.values.get(path)

    def write(self, path: str, value: str) -> None:
        self._live()
        self._write(path, check_value(path, value))

    def mkdir(self, path: str) -> None:
        self._live()
        if self.client.check_write(self.tree, path) not in self.tree.values:
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
                gone = store.apply_rm(store.tree, path) if path in store.tree.values else []
                store.touch(gone)
            for path in sorted(self.written):
                if path in self.tree.values:
                    store.tree.values[path] = self.tree.values[path]
                    store.tree.perms[path] = self.tree.perms[path]
            store.touch(sorted(self.written))
            for path in sorted(self.removed):
                store.fire(path, removed=True)
            for path in sorted(self.written):
                store.fire(path, removed=False)
        return True

    def abort(self) -> None:
        self.done = True


def _ancestors(path: str) -> list[str]:
    if path.startswith("@"):
        return []
    parts = path.split("/")[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
