"""The simulated hypervisor allocates deterministically and keeps a record."""

from __future__ import annotations

import errno

import pytest

from pciback.ports.hypervisor import HypervisorError, IrqKind
from pciback.sim.hypervisor import FIRST_PIRQ, SimHypervisor

DEV = "0000:03:00.0"


def test_allocation_is_lowest_free_and_repeatable() -> None:
    runs = []
    for _ in range(2):
        hv = SimHypervisor()
        hv.prepare_msix(DEV)
        a = hv.map_pirq(1, DEV, IrqKind.MSIX, 0, 1)
        b = hv.map_pirq(1, DEV, IrqKind.MSIX, 1, 1)
        hv.unmap_pirq(1, a)
        c = hv.map_pirq(2, DEV, IrqKind.MSI, 0, 1)
        runs.append((a, b, c))
    assert runs[0] == runs[1] == (FIRST_PIRQ, FIRST_PIRQ + 1, FIRST_PIRQ)


def test_multi_message_blocks_are_aligned() -> None:
    hv = SimHypervisor()
    hv.prepare_msix(DEV)
    hv.map_pirq(1, DEV, IrqKind.MSIX, 0, 1)
    base = hv.map_pirq(1, DEV, IrqKind.MSI, 0, 8)
    assert base % 8 == 0 and base > FIRST_PIRQ
    assert hv.pirqs_of(1) == [FIRST_PIRQ, *range(base, base + 8)]


def test_calls_are_recorded_and_mistakes_refused() -> None:
    hv = SimHypervisor(nr_pirqs=2)
    pirq = hv.map_pirq(1, DEV, IrqKind.MSI, 0, 1)
    with pytest.raises(HypervisorError):
        hv.unmap_pirq(2, pirq)  # not that domain's
    with pytest.raises(HypervisorError):
        hv.map_pirq(1, DEV, IrqKind.MSI, 0, 2)  # no aligned pair left
    with pytest.raises(HypervisorError):
        hv.map_pirq(1, DEV, IrqKind.MSIX, 0, 2)
    hv.kill_domain(1)
    assert hv.killed == [1]
    assert hv.calls[0] == ("map_pirq", 1, DEV, "msi", 0, 1)
    assert hv.calls[-1] == ("kill_domain", 1)


def test_msix_needs_the_table_prepared_as_xen_does() -> None:
    """Xen 4.17 answers ENODATA for an MSI-X vector of a device never prepared, refuses a second
    prepare and a release while vectors are mapped (EBUSY)."""
    hv = SimHypervisor()
    with pytest.raises(HypervisorError, match="ENODATA") as info:
        hv.map_pirq(1, DEV, IrqKind.MSIX, 0, 1)
    assert info.value.code == errno.ENODATA
    assert hv.map_pirq(1, DEV, IrqKind.MSI, 0, 1)  # MSI has no table to know
    hv.prepare_msix(DEV)
    with pytest.raises(HypervisorError) as busy:
        hv.prepare_msix(DEV)
    assert busy.value.code == errno.EBUSY
    pirq = hv.map_pirq(1, DEV, IrqKind.MSIX, 0, 1)
    with pytest.raises(HypervisorError):
        hv.release_msix(DEV)
    hv.unmap_pirq(1, pirq)
    hv.release_msix(DEV)
    with pytest.raises(HypervisorError, match="ENODATA"):
        hv.map_pirq(1, DEV, IrqKind.MSIX, 0, 1)
