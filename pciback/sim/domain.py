"""A simulated guest domain seen from outside the backend: its pcifront's xenbus half and its
op path over a page it granted and an event channel it bound, as a guest kernel would.

Following the backend works two ways. With the daemon's loop on its own thread (the demo) the
domain polls xenstore until the backend has answered. With a `pump` (the simulated host, which
drives the daemon in-process) each round hands the daemon its pending watch events instead, so
the handshake is deterministic and a round where neither side moved means it is stuck.
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Callable

from pciback.control.hide import format_address
from pciback.protocol.abi import PAGE_SIZE
from pciback.protocol.transport import EventChannel, SharedPage
from pciback.sim.frontend import GuestDevice, SimFrontend
from pciback.sim.grants import SimGrantTable
from pciback.sim.toolstack import SimPcifront
from pciback.sim.xenstore import SimXenStore
from pciback.xenbus.states import XenbusState

MAX_ROOTS = 32
POLL = 0.002

S = XenbusState


class BackendClosed(RuntimeError):
    """The backend went to Closing or Closed while the guest waited for it."""


class SimDomain:
    def __init__(
        self,
        store: SimXenStore,
        grants: SimGrantTable,
        domid: int,
        op_timeout: float = 10.0,
        pump: Callable[[], int] | None = None,
    ) -> None:
        self.domid = domid
        self.store = store
        self.grants = grants
        self.pump = pump
        # Shared memory, as a granted page is: a forked process can play the guest's kernel
        # (bench/bench_fairness.py keeps every guest out of the backend's interpreter).
        self.page = SharedPage(mmap.mmap(-1, PAGE_SIZE))
        self.channel = EventChannel()
        gnt_ref = grants.grant(domid, self.page)
        evtchn = grants.bind(domid, self.channel)
        self.xenbus = SimPcifront(store, domid, gnt_ref=gnt_ref, evtchn=evtchn)
        self.ops = SimFrontend(self.page, self.channel.frontend, timeout=op_timeout)
        self.ops.start()
        self.closed = False

    def boot(self, timeout: float = 10.0) -> None:
        """Publish the page and follow the backend until Connected (BackendClosed when it
        refuses, TimeoutError when it does not answer)."""
        self.xenbus.publish()
        self.follow(lambda: self.xenbus.state() == S.CONNECTED, timeout)

    def settled(self, timeout: float = 10.0) -> None:
        """Both ends Connected again: what libxl waits for between two reconfigurations."""
        self.follow(
            lambda: (
                self.xenbus.state() == S.CONNECTED and self.xenbus.backend_state() == S.CONNECTED
            ),
            timeout,
        )

    def follow(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            moved = self.pump() if self.pump is not None else 0
            moved += self.xenbus.step()
            if done():
                return
            if self.xenbus.backend_state() in (S.CLOSING, S.CLOSED):
                raise BackendClosed(f"domain {self.domid}: the backend closed")
            if self.pump is not None and not moved:
                raise TimeoutError(f"domain {self.domid}: {self._states()}, and nothing moves")
            if time.monotonic() > deadline:
                raise TimeoutError(f"domain {self.domid}: {self._states()}")
            if self.pump is None:
                time.sleep(POLL)

    def _states(self) -> str:
        return f"frontend {self.xenbus.state().name}, backend {self.xenbus.backend_state().name}"

    def buses(self) -> list[tuple[int, int]]:
        found = []
        for root in self.xenbus.roots[:MAX_ROOTS]:
            domain, _, bus = root.partition(":")
            found.append((int(domain, 16), int(bus, 16)))
        return found

    def enumerate(self) -> list[GuestDevice]:
        return self.ops.enumerate(self.buses())

    def address(self, domain: int, bus: int, slot: int, function: int) -> str:
        return format_address(domain, bus, slot, function)

    def close(self) -> None:
        """The domain is gone. The backend should have stopped servicing first (a closed
        channel only ends its service thread, but an op in flight would be lost)."""
        if self.closed:
            return
        self.closed = True
        self.ops.close()
        self.channel.close()
        self.grants.revoke(self.domid)
        self.store.disconnect(self.xenbus.xs)
