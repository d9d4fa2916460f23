"""An in-memory xenstore with per-domain connections, permissions, watches and transactions.

Domain 0 may do anything. Another domain may read its own home (/local/domain/N) and the
backend directories made for it (/local/domain/0/backend/*/N), and write only under its home:
enough to let a simulated guest be as hostile as a real one and no more. Permissions a toolstack
sets (`set_permissions`, as `xenstore-chmod`) are kept but not enforced, for that fixed rule;
setting them fires the node's watches, as xenstored does, so a toolstack's exact order can be
replayed.
"""

from __future__ import annotations

import errno
import threading
from collections import deque

from pciback.ports.xenstore import WatchEvent, XenStoreError, check_path, check_value

MAX_NODES = 1 << 16
MAX_WATCHES = 1024
MAX_PENDING = 1 << 14
DOMAIN_QUOTA = 1000


class SimXenStore:
    """The store itself; talk to it through `connect(domid)`."""

    def __init__(self, max_nodes: int = MAX_NODES) -> None:
        self.nodes: dict[str, str] = {"/": ""}
        self.perms: dict[str, tuple[str, ...]] = {}
        self.gens: dict[str, int] = {}
        self.gen = 0
        self.max_nodes = max_nodes
        self.lock = threading.RLock()
        self._clients: list[SimXenStoreClient] = []

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
        """A domain died: its home goes and @releaseDomain watchers are told."""
        with self.lock:
            self.apply_rm(self.nodes, f"/local/domain/{domid}")
            self.fire("@releaseDomain", removed=False)

    # -- node operations on a node map (the store's own, or a transaction's copy) ---------------
    def apply_write(self, nodes: dict[str, str], path: str, value: str) -> list[str]:
        created = [p for p in _ancestors(path) if p not in nodes]
        if len(nodes) + len(created) + (path not in nodes) > self.max_nodes:
            raise XenStoreError(errno.ENOSPC, path, "store quota exceeded")
        for p in created:
            nodes[p] = ""
        nodes[path] = value
        return [*created, path]

    def apply_rm(self, nodes: dict[str, str], path: str) -> list[str]:
        if path == "/":
            raise XenStoreError(errno.EINVAL, path, "cannot remove the root")
        prefix = path + "/"
        gone = [k for k in nodes if k == path or k.startswith(prefix)]
        for k in gone:
            del nodes[k]
            if nodes is self.nodes:
                self.perms.pop(k, None)
        return gone

    @staticmethod
    def children(nodes: dict[str, str], path: str) -> list[str] | None:
        if path not in nodes:
            return None
        prefix = "/" if path == "/" else path + "/"
        return sorted(
            k[len(prefix) :] for k in nodes if k.startswith(prefix) and "/" not in k[len(prefix) :]
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
    def _may_read(self, path: str) -> bool:
        if self.domid == 0:
            return True
        home = f"/local/domain/{self.domid}"
        if path == home or path.startswith(home + "/"):
            return True
        parts = path.split("/")
        # /local/domain/0/backend/<type>/<domid>/...
        return (
            len(parts) >= 7
            and parts[1:5] == ["local", "domain", "0", "backend"]
            and (parts[6] == str(self.domid))
        )

    def _may_write(self, path: str) -> bool:
        if self.domid == 0:
            return True
        home = f"/local/domain/{self.domid}"
        return path.startswith(home + "/")

    def check_read(self, path: str) -> str:
        check_path(path)
        if not self._may_read(path):
            raise XenStoreError(errno.EACCES, path, f"domain {self.domid} may not read")
        return path

    def check_write(self, path: str) -> str:
        check_path(path)
        if path.startswith("@") or not self._may_write(path):
            raise XenStoreError(errno.EACCES, path, f"domain {self.domid} may not write")
        return path

    # -- StoreOps ----------------------------------------------------------------------------
    def read(self, path: str) -> str | None:
        with self.store.lock:
            return self.store.nodes.get(self.check_read(path))

    def check_quota(self, nodes: dict[str, str], path: str) -> None:
        """A guest may own at most DOMAIN_QUOTA nodes, as xenstored's default quota: one
        guest filling the store must not starve the others."""
        if self.domid == 0 or path in nodes:
            return
        home = f"/local/domain/{self.domid}/"
        if sum(1 for k in nodes if k.startswith(home)) >= DOMAIN_QUOTA:
            raise XenStoreError(errno.EDQUOT, path, f"domain {self.domid} is over its quota")

    def write(self, path: str, value: str) -> None:
        with self.store.lock:
            self.check_write(path)
            self.check_quota(self.store.nodes, path)
            changed = self.store.apply_write(
                self.store.nodes, self.check_write(path), check_value(path, value)
            )
            self.store.touch(changed)
            for p in changed:
                self.store.fire(p, removed=False)

    def rm(self, path: str) -> None:
        with self.store.lock:
            gone = self.store.apply_rm(self.store.nodes, self.check_write(path))
            if gone:
                self.store.touch(gone)
                self.store.fire(path, removed=True)

    def list(self, path: str) -> list[str] | None:
        with self.store.lock:
            return self.store.children(self.store.nodes, self.check_read(path))

    def set_permissions(self, path: str, perms: tuple[str, ...]) -> None:
        """`xenstore-chmod PATH n0 r5`: ("n0", "r5"); the node must exist (ENOENT)."""
        with self.store.lock:
            self.check_write(path)
            if path not in self.store.nodes:
                raise XenStoreError(errno.ENOENT, path, "no such node")
            self.store.perms[path] = perms
            self.store.touch([path])
            self.store.fire(path, removed=False)

    def get_permissions(self, path: str) -> tuple[str, ...] | None:
        with self.store.lock:
            self.check_read(path)
            return self.store.perms.get(path) if path in self.store.nodes else None

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
            self.nodes = dict(store.nodes)
        self.touched: set[str] = set()
        self.removed: set[str] = set()
        self.written: set[str] = set()
        self.perms: dict[str, tuple[str, ...]] = {}
        self.done = False

    def _live(self) -> None:
        if self.done:
            raise XenStoreError(errno.EINVAL, "", "transaction already ended")

    def read(self, path: str) -> str | None:
        self._live()
        self.touched.add(self.client.check_read(path))
        return self.nodes.get(path)

    def write(self, path: str, value: str) -> None:
        self._live()
        self.client.check_write(path)
        self.client.check_quota(self.nodes, path)
        changed = self.client.store.apply_write(self.nodes, path, check_value(path, value))
        self.touched.update(changed)
        self.written.update(changed)

    def rm(self, path: str) -> None:
        self._live()
        self.client.check_write(path)
        if self.client.store.apply_rm(self.nodes, path):
            self.touched.add(path)
            self.removed.add(path)

    def list(self, path: str) -> list[str] | None:
        self._live()
        self.touched.add(self.client.check_read(path))
        return self.client.store.children(self.nodes, path)

    def set_permissions(self, path: str, perms: tuple[str, ...]) -> None:
        self._live()
        self.client.check_write(path)
        if path not in self.nodes:
            raise XenStoreError(errno.ENOENT, path, "no such node")
        self.perms[path] = perms
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
                gone = store.apply_rm(store.nodes, path)
                store.touch(gone)
            for path in sorted(self.written):
                if path in self.nodes:
                    store.nodes[path] = self.nodes[path]
            for path, perms in self.perms.items():
                if path in self.nodes:
                    store.perms[path] = perms
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
