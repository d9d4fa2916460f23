"""The domain-control port: what a toolstack asks of Xen to give a PV guest a PCI device.

libxl's pci_add_dm_done grants the guest the device's BARs (I/O ports and memory pages) and its
legacy interrupt (the GSI mapped as a PIRQ of the same number, then permitted), then assigns the
device to the guest in Xen (its IOMMU context, and the owner Xen looks MSI/MSI-X requests up
in); removal undoes each. When a guest dies Xen itself drops all of it.
"""

from __future__ import annotations

import errno as errno_module
import os
from typing import Protocol

# Errors of xc_assign_device that mean "this Xen has no IOMMU for the device", which a PV guest
# can live without (libxl tolerates ENOSYS for PV; Xen 4.17 answers EOPNOTSUPP).
NO_IOMMU = frozenset({errno_module.ENOSYS, errno_module.EOPNOTSUPP})


class DomainError(Exception):
    """A domain-control call failed; the message names the call, its arguments and the errno."""

    def __init__(self, call: str, code: int) -> None:
        name = errno_module.errorcode.get(code, "?")
        super().__init__(f"{call}: {os.strerror(code)} ({name}, errno {code})")
        self.call = call
        self.errno = code


class DomainResources(Protocol):
    def domain_exists(self, domid: int) -> bool:
        """The domain exists and is not dying (a dying domain has lost its resources already)."""
        ...

    def iomem_permission(self, domid: int, first_mfn: int, nr_mfns: int, allow: bool) -> None:
        """xc_domain_iomem_permission: machine pages [first_mfn, first_mfn + nr_mfns)."""
        ...

    def ioport_permission(self, domid: int, first_port: int, nr_ports: int, allow: bool) -> None:
        """xc_domain_ioport_permission: I/O ports [first_port, first_port + nr_ports)."""
        ...

    def map_gsi(self, domid: int, gsi: int) -> int:
        """xc_physdev_map_pirq (MAP_PIRQ_TYPE_GSI) asking for PIRQ == GSI, since a PV guest
        binds the number its config space shows; returns the PIRQ Xen gave."""
        ...

    def unmap_gsi(self, domid: int, pirq: int) -> None:
        """xc_physdev_unmap_pirq."""
        ...

    def irq_permission(self, domid: int, pirq: int, allow: bool) -> None:
        """xc_domain_irq_permission."""
        ...

    def assign_device(self, domid: int, address: str) -> None:
        """xc_assign_device with libxl's default rdm_policy "strict" (flag 0). DomainError with
        an errno in NO_IOMMU when this Xen cannot assign devices at all."""
        ...

    def deassign_device(self, domid: int, address: str) -> None:
        """xc_deassign_device: the device goes to Xen's quarantine (DOMID_IO), where Xen 4.17
        puts every device a guest gives back, or to dom0 when quarantine is off."""
        ...

    def dequarantine(self, address: str) -> None:
        """xc_deassign_device from DOMID_IO: the device is dom0's again, so a host driver can
        use it (in quarantine its DMA reaches only a scratch page). DomainError ENODEV when it
        was not in quarantine, an errno in NO_IOMMU when this Xen has no IOMMU."""
        ...
