"""The simulated Xen behind the toolstack role refuses what Xen refuses and forgets a dead
domain's grants, so the role's tests can trust its answers."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from pciback.ports.domain import DomainError
from pciback.sim.domctl import RangeSet, SimDomctl, SimulatedCrash


def test_rangesets_merge_adjacent_ranges_and_split_on_removal() -> None:
    ranges = RangeSet()
    ranges.add(10, 19)
    ranges.add(20, 29)  # adjacent: one range, as Xen's rangeset keeps it
    ranges.add(40, 49)
    assert ranges.ranges() == [(10, 29), (40, 49)]
    ranges.remove(15, 44)
    assert ranges.ranges() == [(10, 14), (45, 49)]
    ranges.remove(100, 200)  # revoking what was never granted is not an error
    assert ranges.contains(46, 49) and not ranges.contains(14, 15)


def test_what_xen_refuses() -> None:
    xen = SimDomctl()
    xen.create_domain(3)
    xen.create_domain(4)
    xen.assign_device(3, "0000:03:00.0")
    refusals: list[tuple[Callable[[], object], int]] = [
        (lambda: xen.assign_device(4, "0000:03:00.0"), errno.EBUSY),  # assigned elsewhere
        (lambda: xen.deassign_device(4, "0000:03:00.0"), errno.ENODEV),  # not its device
        (lambda: xen.iomem_permission(9, 1, 1, True), errno.ESRCH),  # no such domain
        (lambda: xen.unmap_gsi(3, 23), errno.EINVAL),  # never mapped
        (lambda: xen.ioport_permission(3, 0xFFF0, 0x20, True), errno.EINVAL),
    ]
    for call, code in refusals:
        with pytest.raises(DomainError) as info:
            call()
        assert info.value.errno == code
    assert xen.map_gsi(3, 23) == 23


def test_a_dead_domain_loses_everything_and_failures_are_one_shot() -> None:
    xen = SimDomctl()
    xen.create_domain(3)
    xen.iomem_permission(3, 0x100, 4, True)
    xen.map_gsi(3, 23)
    xen.irq_permission(3, 23, True)
    xen.assign_device(3, "0000:03:00.0")
    assert set(xen.leftovers()) == {3}
    xen.destroy_domain(3)
    assert xen.leftovers() == {} and not xen.domain_exists(3)
    xen.create_domain(4)
    xen.fail["assign_device"] = errno.EPERM
    with pytest.raises(DomainError):
        xen.assign_device(4, "0000:03:00.0")
    xen.assign_device(4, "0000:03:00.0")
    xen.crash_on = {"deassign_device"}
    with pytest.raises(SimulatedCrash):
        xen.deassign_device(4, "0000:03:00.0")
    xen.deassign_device(4, "0000:03:00.0")
    assert xen.leftovers() == {}
