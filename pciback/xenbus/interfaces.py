"""What the xenbus backend needs from the rest of the daemon, as small injectable protocols."""

from __future__ import annotations

from typing import Protocol

from pciback.control.claimed import Claimed


class DeviceBroker(Protocol):
    """The stub pool and ownership registry, seen from a guest's backend."""

    def claim(self, address: str, domid: int) -> Claimed:
        """Reserve a seized device for `domid`; raises ClaimError (a ValueError) when the device
        is not in the pool or another domain owns it. Claiming again for the owner succeeds."""
        ...

    def release(self, address: str, domid: int) -> None:
        """Give the device back to the pool (reset, restore, forget per-guest state)."""
        ...


class DataPath(Protocol):
    """The shared page and event channel of one guest connection (issue 4's transport)."""

    def connect(self, domid: int, devid: int, gnt_ref: int, evtchn: int) -> None:
        """Map the granted page, bind the event channel and start servicing ops."""
        ...

    def set_devices(self, domid: int, devid: int, devices: dict[str, str]) -> None:
        """The guest-address -> physical-address map the connection serves (hot add/remove)."""
        ...

    def disconnect(self, domid: int, devid: int) -> None:
        """Stop servicing, finish an op in flight, tear down interrupts, unmap the page;
        idempotent."""
        ...

    def suspend(self, domid: int, devid: int) -> None:
        """The daemon is stopping: stop servicing but leave the guest's devices and interrupts
        exactly as they are, for the next daemon to resume."""
        ...
