"""A simulated hypervisor: PIRQs from a deterministic lowest-free allocator; every call logged.

As Xen 4.17 does, it maps MSI-X vectors only for a device whose MSI-X was prepared
(PHYSDEVOP_prepare_msix) and refuses to prepare a device twice or to release one that still
has vectors mapped (EBUSY)."""

from __future__ import annotations

import errno
from dataclasses import dataclass

from pciback.ports.hypervisor import HypervisorError, IrqKind

FIRST_PIRQ = 64  # below: the legacy GSIs a real dom0 maps one to one
NR_PIRQS = 1024


@dataclass(frozen=True, slots=True)
class PirqMapping:
    domid: int
    address: str
    kind: IrqKind
    index: int


class SimHypervisor:
    def __init__(self, first_pirq: int = FIRST_PIRQ, nr_pirqs: int = NR_PIRQS) -> None:
        self.first_pirq = first_pirq
        self.nr_pirqs = nr_pirqs
        self.mapped: dict[int, PirqMapping] = {}
        self.calls: list[tuple[object, ...]] = []
        self.killed: list[int] = []
        self.fail_next_map = False  # tests: make the next map_pirq fail once
        self.prepared: set[str] = set()  # devices whose MSI-X table Xen knows

    def map_pirq(self, domid: int, address: str, kind: IrqKind, index: int, count: int) -> int:
        self.calls.append(("map_pirq", domid, address, kind.value, index, count))
        if self.fail_next_map:
            self.fail_next_map = False
            raise HypervisorError("map_pirq: injected failure")
        if count < 1 or (kind is IrqKind.MSIX and count != 1):
            raise HypervisorError(f"map_pirq: bad count {count} for {kind.value}")
        if kind is IrqKind.MSIX and address not in self.prepared:
            raise HypervisorError(
                f"map_pirq {address} msix[{index}]: ENODATA (MSI-X never prepared)", errno.ENODATA
            )
        base = self._find_free(count)
        for i in range(count):
            self.mapped[base + i] = PirqMapping(domid, address, kind, index + i)
        return base

    def unmap_pirq(self, domid: int, pirq: int) -> None:
        self.calls.append(("unmap_pirq", domid, pirq))
        mapping = self.mapped.get(pirq)
        if mapping is None or mapping.domid != domid:
            raise HypervisorError(f"unmap_pirq: {pirq} is not mapped for domain {domid}")
        del self.mapped[pirq]

    def prepare_msix(self, address: str) -> None:
        self.calls.append(("prepare_msix", address))
        if address in self.prepared:
            raise HypervisorError(f"prepare_msix {address}: EBUSY", errno.EBUSY)
        self.prepared.add(address)

    def release_msix(self, address: str) -> None:
        self.calls.append(("release_msix", address))
        in_use = any(m.address == address and m.kind is IrqKind.MSIX for m in self.mapped.values())
        if address not in self.prepared or in_use:
            raise HypervisorError(f"release_msix {address}: EBUSY", errno.EBUSY)
        self.prepared.discard(address)

    def kill_domain(self, domid: int) -> None:
        self.calls.append(("kill_domain", domid))
        self.killed.append(domid)

    def pirqs_of(self, domid: int) -> list[int]:
        return sorted(p for p, m in self.mapped.items() if m.domid == domid)

    def mapped_pirqs(self, domid: int, address: str) -> list[int]:
        """The hypervisor's own knowledge (a PirqLookup), read without a logged call."""
        return sorted(
            p for p, m in self.mapped.items() if m.domid == domid and m.address == address
        )

    def _find_free(self, count: int) -> int:
        # Multi-message MSI needs a block aligned to its size, as the vector allocator gives.
        align = 1 << (count - 1).bit_length()
        start = -(-self.first_pirq // align) * align
        for base in range(start, self.first_pirq + self.nr_pirqs - count + 1, align):
            if all(base + i not in self.mapped for i in range(count)):
                return base
        raise HypervisorError(f"map_pirq: no {count} free PIRQs")
