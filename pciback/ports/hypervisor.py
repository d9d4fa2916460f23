"""The hypervisor port: the few hypercalls the backend needs (PHYSDEVOP_map_pirq / unmap_pirq
for MSI and MSI-X, PHYSDEVOP_prepare_msix / release_msix around a device's stay in the pool,
and destroying a domain that cannot handle a device error)."""

from __future__ import annotations

from enum import Enum
from typing import Protocol, runtime_checkable


class IrqKind(Enum):
    MSI = "msi"  # `index` 0; `count` consecutive PIRQs (multi-message MSI when > 1)
    MSIX = "msix"  # `index` is the MSI-X table entry; `count` is 1


class HypervisorError(Exception):
    """A hypercall failed; the message says which and why, `code` is its errno when known."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class HypervisorPort(Protocol):
    def map_pirq(self, domid: int, address: str, kind: IrqKind, index: int, count: int) -> int:
        """Map `count` interrupts of the device for `domid`; return the first PIRQ (the rest
        follow it consecutively). Raises HypervisorError."""
        ...

    def unmap_pirq(self, domid: int, pirq: int) -> None:
        """Undo one PIRQ of a `map_pirq` (each PIRQ of a block is unmapped on its own)."""
        ...

    def prepare_msix(self, address: str) -> None:
        """The device's MSI-X table stays where it is while the device serves guests: Xen may
        locate it now (and map MSI-X vectors later for a guest the device is assigned to)."""
        ...

    def release_msix(self, address: str) -> None:
        """Undo `prepare_msix` when the device goes back to the host."""
        ...

    def kill_domain(self, domid: int) -> None: ...


@runtime_checkable
class PirqLookup(Protocol):
    """What a hypervisor port may add: the PIRQs mapped for a domain on a device, so that a
    daemon restarted after a crash between a map hypercall and its record can find them."""

    def mapped_pirqs(self, domid: int, address: str) -> list[int]:
        """The MSI and MSI-X PIRQs mapped for `domid` on the device at `address`."""
        ...
