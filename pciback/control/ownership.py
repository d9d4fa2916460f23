"""Which domain owns which device: at most one, registered when a guest's backend takes the
device and unregistered on guest shutdown, hot removal or release from the backend.

The Linux driver, on a second registration, logs "Stealing ownership" and re-registers; here a
second claim is refused, because two guests driving one function is never what anyone wants.
"""

from __future__ import annotations

import logging
import threading

from pciback.control.state import StateStore

log = logging.getLogger("pciback.ownership")


class OwnershipError(ValueError):
    def __init__(self, address: str, owner: int, claimant: int) -> None:
        super().__init__(
            f"{address} is owned by domain {owner}; the claim by domain {claimant} is refused"
        )
        self.address = address
        self.owner = owner
        self.claimant = claimant


class Ownership:
    def __init__(self, state: StateStore | None = None) -> None:
        self._state = state
        self._lock = threading.Lock()
        self._owners: dict[str, int] = dict(state.owners()) if state else {}

    def claim(self, address: str, domid: int) -> None:
        """Register `domid` as the owner; claiming again for the same owner is a no-op."""
        with self._lock:
            owner = self._owners.get(address)
            if owner is not None and owner != domid:
                raise OwnershipError(address, owner, domid)
            if owner is None:
                if self._state:
                    self._state.set_owner(address, domid)
                self._owners[address] = domid
                log.info("%s now owned by domain %d", address, domid)

    def release(self, address: str, domid: int | None = None) -> bool:
        """Unregister; with `domid`, only that owner's registration. True if one was removed."""
        with self._lock:
            owner = self._owners.get(address)
            if owner is None or (domid is not None and owner != domid):
                return False
            if self._state:
                self._state.clear_owner(address)
            del self._owners[address]
            log.info("%s released by domain %d", address, owner)
            return True

    def owner(self, address: str) -> int | None:
        with self._lock:
            return self._owners.get(address)

    def owned_by(self, domid: int) -> list[str]:
        with self._lock:
            return sorted(a for a, d in self._owners.items() if d == domid)

    def all(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._owners.items()))
