"""The grant port: what the data path needs from the hypervisor to reach a guest, the page the
guest granted (its shared page) and the event channel it bound, each by the number the guest
published in xenstore. The simulation keeps them in memory (pciback.sim.grants); a real dom0
maps and binds them through libxengnttab and libxenevtchn (pciback.xen.environment).

Generic in what a page and a channel are, so that the port does not depend on the transport
(pciback.protocol.transport) that depends on the other ports.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

Page_co = TypeVar("Page_co", covariant=True)
Channel_co = TypeVar("Channel_co", covariant=True)


class GrantPort(Protocol[Page_co, Channel_co]):
    def map(self, domid: int, ref: int) -> Page_co:
        """The page `domid` granted with reference `ref`; OSError when there is none."""
        ...

    def channel(self, domid: int, port: int) -> Channel_co:
        """The event channel `domid` offered on `port`; OSError when there is none."""
        ...
