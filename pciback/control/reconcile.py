"""Start-up reconciliation: the saved ownership against what xenstore and the bus say now.

A device stays owned only if a live backend directory still lists it for that domain; a device
whose guest went away while the daemon was down is reset and returned to the pool; a device
that vanished from the bus loses its registration.

The daemon runs SimDataPath.sweep_saved just before: the guests resumed by then adopted their
saved interrupt and view records, and the PIRQs of every other record are unmapped there (the
data path holds the hypervisor port and knows what it serves).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from pciback.control.ownership import Ownership
from pciback.control.stub import StubPool

log = logging.getLogger("pciback.reconcile")


class _Backend(Protocol):
    @property
    def exported(self) -> Mapping[int, str]:
        """The guest's devices: device index -> physical address."""
        ...


class Backends(Protocol):
    """The xenbus backends (pciback.xenbus.manager.XenbusBackends) as read here: the control
    plane sits below the xenbus backend, which claims devices from it."""

    @property
    def backends(self) -> Mapping[tuple[int, int], _Backend]:
        """(domid, devid) -> that guest's backend."""
        ...


def reconcile(ownership: Ownership, pool: StubPool, backends: Backends) -> list[str]:
    """Release stale registrations; returns the addresses released."""
    held = {
        (address, key[0])
        for key, backend in backends.backends.items()
        for address in backend.exported.values()
    }
    present = set(pool.bus.addresses())
    released: list[str] = []
    for address, domid in ownership.all().items():
        if (address, domid) in held:
            continue
        if address in present and address in pool.devices:
            pool.release(address, domid)
        else:
            ownership.release(address, domid)
        log.warning("%s: domain %d no longer holds it; released", address, domid)
        released.append(address)
    return released
