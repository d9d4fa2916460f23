"""A simulated guest domain seen from outside the backend: its pcifront's xenbus half and its
op path over a page it granted and an event channel it bound, as a guest kernel would."""

from __future__ import annotations

import time
from collections.abc import Callable

from pciback.control.hide import format_address
from pciback.daemon.datapath import SimGrantTable
from pciback.protocol.transport import EventChannel, SharedPage
from pciback.sim.frontend import GuestDevice, SimFrontend
from pciback.sim.toolstack import SimPcifront
from pciback.sim.xenstore import SimXenStore
from pciback.xenbus.states import XenbusState

MAX_ROOTS = 32


class SimDomain:
    def __init__(
        self, store: SimXenStore, grants: SimGrantTable, domid: int, op_timeout: float = 10.0
    ) -> None:
        self.domid = domid
        self.page = SharedPage()
        self.channel = EventChannel()
        gnt_ref = grants.grant(domid, self.page)
        evtchn = grants.bind(domid, self.channel)
        self.xenbus = SimPcifront(store, domid, gnt_ref=gnt_ref, evtchn=evtchn)
        self.ops = SimFrontend(self.page, self.channel.frontend, timeout=op_timeout)
        self.ops.start()

    def boot(self, timeout: float = 10.0) -> None:
        """Publish the page and follow the backend until Connected (TimeoutError otherwise)."""
        self.xenbus.publish()
        self.follow(lambda: self.xenbus.state() == XenbusState.CONNECTED, timeout)

    def follow(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            self.xenbus.step()
            if self.xenbus.backend_state() in (XenbusState.CLOSING, XenbusState.CLOSED):
                raise RuntimeError(f"domain {self.domid}: the backend closed")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"domain {self.domid}: frontend {self.xenbus.state().name}, "
                    f"backend {self.xenbus.backend_state().name}"
                )
            time.sleep(0.002)

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
        self.ops.close()
        self.channel.close()
