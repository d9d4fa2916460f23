"""The simulated hypervisor's grant table: pages a guest granted and ports it bound, in memory.
The guest's side grants and binds (pciback.sim.domain); the data path's side maps and looks
up, as pciback.ports.grants has it."""

from __future__ import annotations

import errno
import threading

from pciback.protocol.transport import EventChannel, SharedPage

MAX_GRANTS = 4096


class SimGrantTable:
    """What the hypervisor keeps for the simulation: pages a guest granted, ports it bound."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # By domain first, so that a domain's death does not look at every other domain's.
        self._pages: dict[int, dict[int, SharedPage]] = {}
        self._channels: dict[int, dict[int, EventChannel]] = {}
        self._granted = 0
        self._next = 8  # low grant references are the guest kernel's own

    def grant(self, domid: int, page: SharedPage) -> int:
        with self._lock:
            if self._granted >= MAX_GRANTS:
                raise OSError(errno.ENOSPC, "grant table full")
            ref, self._next = self._next, self._next + 1
            self._pages.setdefault(domid, {})[ref] = page
            self._granted += 1
            return ref

    def bind(self, domid: int, channel: EventChannel) -> int:
        with self._lock:
            port, self._next = self._next, self._next + 1
            self._channels.setdefault(domid, {})[port] = channel
            return port

    def map(self, domid: int, ref: int) -> SharedPage:
        with self._lock:
            page = self._pages.get(domid, {}).get(ref)
        if page is None:
            raise OSError(errno.ENOENT, f"domain {domid} granted no page with reference {ref}")
        return page

    def channel(self, domid: int, port: int) -> EventChannel:
        with self._lock:
            channel = self._channels.get(domid, {}).get(port)
        if channel is None:
            raise OSError(errno.ENOENT, f"domain {domid} has no unbound event channel {port}")
        return channel

    def revoke(self, domid: int) -> None:
        with self._lock:
            self._granted -= len(self._pages.pop(domid, {}))
            self._channels.pop(domid, None)
