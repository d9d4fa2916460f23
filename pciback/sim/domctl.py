"""A simulated Xen's domain control: domains, and per domain what the toolstack granted it (I/O
memory pages and ports as Xen's rangesets, mapped and permitted IRQs) and the devices assigned
to it. It refuses what Xen refuses (a call for a domain that does not exist, a device assigned
elsewhere, an unmapped PIRQ), forgets everything a domain held when it dies, as Xen does, and
lets tests assert that nothing is left granted.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from pciback.ports.domain import DomainError

MAX_RANGES = 4096  # a rangeset Xen keeps per domain; far more than any device needs


class SimulatedCrash(BaseException):
    """Raised from a port call to stand for the daemon dying there: no `except Exception`
    catches it, so nothing is undone, as after a real crash."""


class RangeSet:
    """Disjoint inclusive ranges, merged on add and split on remove (Xen's rangeset)."""

    def __init__(self) -> None:
        self._ranges: list[tuple[int, int]] = []

    def add(self, first: int, last: int) -> None:
        merged = [(first, last)]
        kept = []
        for lo, hi in self._ranges:
            if hi + 1 < merged[0][0] or lo > merged[0][1] + 1:
                kept.append((lo, hi))
            else:
                merged[0] = (min(lo, merged[0][0]), max(hi, merged[0][1]))
        if len(kept) + 1 > MAX_RANGES:
            raise DomainError("rangeset_add", errno.ENOMEM)
        self._ranges = sorted(kept + merged)

    def remove(self, first: int, last: int) -> None:
        kept = []
        for lo, hi in self._ranges:
            if hi < first or lo > last:
                kept.append((lo, hi))
                continue
            if lo < first:
                kept.append((lo, first - 1))
            if hi > last:
                kept.append((last + 1, hi))
        self._ranges = kept

    def contains(self, first: int, last: int) -> bool:
        return any(lo <= first and last <= hi for lo, hi in self._ranges)

    def ranges(self) -> list[tuple[int, int]]:
        return list(self._ranges)


@dataclass
class XenDomain:
    domid: int
    iomem: RangeSet = field(default_factory=RangeSet)
    ioports: RangeSet = field(default_factory=RangeSet)
    irqs: set[int] = field(default_factory=set)  # PIRQs the domain may use
    pirqs: dict[int, int] = field(default_factory=dict)  # PIRQ -> GSI mapped for the domain


@dataclass(frozen=True)
class Granted:
    """What a domain holds, for assertions: empty lists when nothing."""

    iomem: list[tuple[int, int]]
    ioports: list[tuple[int, int]]
    irqs: list[int]
    pirqs: dict[int, int]
    devices: list[str]

    def empty(self) -> bool:
        return not (self.iomem or self.ioports or self.irqs or self.pirqs or self.devices)


class SimDomctl:
    """The DomainResources port over a simulated Xen."""

    def __init__(self, iommu: bool = True) -> None:
        self.iommu = iommu  # False: a Xen (or domain) without an IOMMU: assignment refused
        self.domains: dict[int, XenDomain] = {}
        self.assigned: dict[str, int] = {}  # device -> the guest Xen assigned it to
        # Devices in Xen's quarantine (DOMID_IO): where Xen 4.17 puts a device a guest gives
        # back (deassigned, or its domain destroyed), until dom0 takes it back.
        self.quarantined: set[str] = set()
        self.calls: list[tuple[object, ...]] = []
        self.fail: dict[str, int] = {}  # tests: the named call fails once with this errno
        self.crash_on: set[str] = set()  # tests: the named call raises SimulatedCrash once

    # -- what the toolstack's domain builder and destroyer do ----------------------------
    def create_domain(self, domid: int) -> None:
        self.domains.setdefault(domid, XenDomain(domid))

    def destroy_domain(self, domid: int) -> None:
        """The domain dies: Xen drops its permissions and PIRQs and takes its devices back."""
        self.domains.pop(domid, None)
        self.quarantined |= {a for a, d in self.assigned.items() if d == domid}
        self.assigned = {a: d for a, d in self.assigned.items() if d != domid}

    # -- assertions --------------------------------------------------------------------------
    def granted(self, domid: int) -> Granted:
        dom = self.domains.get(domid) or XenDomain(domid)
        return Granted(
            dom.iomem.ranges(),
            dom.ioports.ranges(),
            sorted(dom.irqs),
            dict(dom.pirqs),
            sorted(a for a, d in self.assigned.items() if d == domid),
        )

    def leftovers(self) -> dict[int, Granted]:
        """Every guest still holding something."""
        held = {d: self.granted(d) for d in set(self.domains) | set(self.assigned.values())}
        return {d: g for d, g in held.items() if not g.empty()}

    # -- the port ----------------------------------------------------------------------------
    def _enter(self, call: str, domid: int, *args: object) -> XenDomain:
        self.calls.append((call, domid, *args))
        if call in self.crash_on:
            self.crash_on.discard(call)
            raise SimulatedCrash(call)
        what = f"{call} dom{domid} " + " ".join(str(a) for a in args)
        code = self.fail.pop(call, None)
        if code is not None:
            raise DomainError(what.strip(), code)
        dom = self.domains.get(domid)
        if dom is None:
            raise DomainError(what.strip(), errno.ESRCH)
        return dom

    def domain_exists(self, domid: int) -> bool:
        return domid in self.domains

    def iomem_permission(self, domid: int, first_mfn: int, nr_mfns: int, allow: bool) -> None:
        dom = self._enter("iomem_permission", domid, first_mfn, nr_mfns, allow)
        if nr_mfns < 1 or first_mfn < 0:
            raise DomainError("iomem_permission", errno.EINVAL)
        last = first_mfn + nr_mfns - 1
        (dom.iomem.add if allow else dom.iomem.remove)(first_mfn, last)

    def ioport_permission(self, domid: int, first_port: int, nr_ports: int, allow: bool) -> None:
        dom = self._enter("ioport_permission", domid, first_port, nr_ports, allow)
        last = first_port + nr_ports - 1
        if nr_ports < 1 or first_port < 0 or last > 0xFFFF:
            raise DomainError("ioport_permission", errno.EINVAL)
        (dom.ioports.add if allow else dom.ioports.remove)(first_port, last)

    def map_gsi(self, domid: int, gsi: int) -> int:
        dom = self._enter("map_gsi", domid, gsi)
        if dom.pirqs.get(gsi, gsi) != gsi:
            raise DomainError(f"map_gsi dom{domid} {gsi}", errno.EEXIST)
        dom.pirqs[gsi] = gsi  # Xen gives the PIRQ asked for, and libxl asks for the GSI
        return gsi

    def unmap_gsi(self, domid: int, pirq: int) -> None:
        dom = self._enter("unmap_gsi", domid, pirq)
        if pirq not in dom.pirqs:
            raise DomainError(f"unmap_gsi dom{domid} {pirq}", errno.EINVAL)
        del dom.pirqs[pirq]

    def irq_permission(self, domid: int, pirq: int, allow: bool) -> None:
        dom = self._enter("irq_permission", domid, pirq, allow)
        if allow:
            dom.irqs.add(pirq)
        else:
            dom.irqs.discard(pirq)

    def assign_device(self, domid: int, address: str) -> None:
        self._enter("assign_device", domid, address)
        if not self.iommu:
            raise DomainError(f"assign_device dom{domid} {address}", errno.EOPNOTSUPP)
        if address in self.assigned:  # Xen: owned by neither dom0 nor the quarantine
            raise DomainError(f"assign_device dom{domid} {address}", errno.EBUSY)
        self.assigned[address] = domid
        self.quarantined.discard(address)

    def deassign_device(self, domid: int, address: str) -> None:
        self._enter("deassign_device", domid, address)
        if not self.iommu:
            raise DomainError(f"deassign_device dom{domid} {address}", errno.EOPNOTSUPP)
        if self.assigned.get(address) != domid:
            raise DomainError(f"deassign_device dom{domid} {address}", errno.ENODEV)
        del self.assigned[address]
        self.quarantined.add(address)

    def dequarantine(self, address: str) -> None:
        self.calls.append(("dequarantine", address))
        code = self.fail.pop("dequarantine", None)
        if code is not None:
            raise DomainError(f"dequarantine {address}", code)
        if not self.iommu:
            raise DomainError(f"dequarantine {address}", errno.EOPNOTSUPP)
        if address not in self.quarantined:
            raise DomainError(f"dequarantine {address}", errno.ENODEV)
        self.quarantined.discard(address)
