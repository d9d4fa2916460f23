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

from pciback.control.ownership import Ownership
from pciback.control.stub import StubPool
from pciback.xenbus.manager import XenbusBackends

log = logging.getLogger("pciback.reconcile")


def reconcile(ownership: Ownership, pool: StubPool, backends: XenbusBackends) -> list[str]:
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
