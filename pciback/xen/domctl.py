"""The domain-control port over libxenctrl: the calls libxl's pci_add_dm_done and
do_pci_remove / pci_remove_detached make for a PV guest's PCI device.

A separate FFI from pciback.xen.xenctrl (the hypervisor port of the data path): the toolstack
role is its own party, with its own handle. Domain existence comes from
xc_domain_getinfolist: only the leading domid and flags of xc_domaininfo_t are read, the rest of
a buffer far larger than the structure is left alone, so a newer libxenctrl with a longer
structure cannot write past it (tests/xen checks the layout against xenctrl.h).
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from typing import Any

from cffi import FFI  # type: ignore[import-untyped]  # no stubs in the dev extra

from pciback.control.hide import parse_address
from pciback.ports.domain import DomainError
from pciback.xen._loader import check_domid, load
from pciback.xen.xenctrl import open_interface

DOMINF_DYING = 1
RDM_RELAXED = 1  # XEN_DOMCTL_DEV_RDM_RELAXED
DOMID_IO = 0x7FF1  # Xen's sentinel domain of quarantined devices (xen.h)
RDM_STRICT = 0  # libxl's default rdm_policy "strict": the flag word with RDM_RELAXED cleared
INFO_BUFFER = 1024  # bytes given for one xc_domaininfo_t (112 in Xen 4.17)
MAX_MFN = 1 << 52  # x86-64 physical address width, in pages
MAX_PIRQ = 1 << 20

TYPEDEFS = {
    "xc_interface": "struct xc_interface_core",
    "xentoollog_logger": "struct xentoollog_logger",
}
OPAQUE = ("struct xc_interface_core", "struct xentoollog_logger")
STRUCTS = (
    "typedef struct { uint16_t domain; uint16_t pad1; uint32_t flags;"
    f" uint64_t rest[{(INFO_BUFFER - 8) // 8}]; }} xc_domaininfo_t;",
)
DECLS = (
    "xc_interface *xc_interface_open(xentoollog_logger *logger,"
    " xentoollog_logger *dombuild_logger, unsigned open_flags);",
    "int xc_interface_close(xc_interface *xch);",
    "int xc_domain_getinfolist(xc_interface *xch, uint32_t first_domain,"
    " unsigned int max_domains, xc_domaininfo_t *info);",
    "int xc_domain_iomem_permission(xc_interface *xch, uint32_t domid,"
    " unsigned long first_mfn, unsigned long nr_mfns, uint8_t allow_access);",
    "int xc_domain_ioport_permission(xc_interface *xch, uint32_t domid,"
    " uint32_t first_port, uint32_t nr_ports, uint32_t allow_access);",
    "int xc_domain_irq_permission(xc_interface *xch, uint32_t domid, uint32_t pirq,"
    " bool allow_access);",
    "int xc_physdev_map_pirq(xc_interface *xch, uint32_t domid, int index, int *pirq);",
    "int xc_physdev_unmap_pirq(xc_interface *xch, uint32_t domid, int pirq);",
    "int xc_assign_device(xc_interface *xch, uint32_t domid, uint32_t machine_sbdf,"
    " uint32_t flag);",
    "int xc_deassign_device(xc_interface *xch, uint32_t domid, uint32_t machine_sbdf);",
)
HEADERS = ("xenctrl.h",)
# Checked by a C compiler against the headers: the fields read, and a buffer large enough.
CONSTANTS = {
    "XEN_DOMINF_dying": DOMINF_DYING,
    "XEN_DOMCTL_DEV_RDM_RELAXED": RDM_RELAXED,
    "DOMID_IO": DOMID_IO,
    "offsetof(xc_domaininfo_t, domain)": 0,
    "offsetof(xc_domaininfo_t, flags)": 4,
    "sizeof(((xc_domaininfo_t *)0)->domain)": 2,
    "sizeof(((xc_domaininfo_t *)0)->flags)": 4,
    f"sizeof(xc_domaininfo_t) <= {INFO_BUFFER}": 1,
}

ffi = FFI()
ffi.cdef(
    "\n".join(
        [f"{s};" for s in OPAQUE]
        + [f"typedef {t} {n};" for n, t in TYPEDEFS.items()]
        + list(STRUCTS)
        + list(DECLS)
    )
)


def library() -> Any:
    return load(ffi, "xenctrl", ("libxenctrl.so.4.17", "libxenctrl.so"), "libxenctrl4.17")


def machine_sbdf(address: str) -> int:
    """libxl's pci_encode_bdf: segment << 16 | bus << 8 | device << 3 | function."""
    segment, bus, slot, function = parse_address(address)
    return segment << 16 | bus << 8 | slot << 3 | function


class XenDomainResources:
    """The DomainResources port on a real dom0."""

    def __init__(self, lib: Any = None) -> None:
        self.lib = lib if lib is not None else library()
        self._lock = threading.Lock()
        self._handle: Any = open_interface(self.lib, ffi)

    def _call(self, what: str, fn: Callable[..., int], *args: Any) -> int:
        with self._lock:
            if self._handle is None:
                raise DomainError(f"{what} (interface closed)", errno.EBADF)
            ffi.errno = 0
            rc = fn(self._handle, *args)
        if rc < 0:
            raise DomainError(what, ffi.errno or errno.EIO)
        return rc

    @staticmethod
    def _guest(call: str, domid: int) -> None:
        try:
            check_domid(domid)
        except ValueError as exc:
            raise DomainError(f"{call}: {exc}", errno.EINVAL) from None

    def domain_exists(self, domid: int) -> bool:
        self._guest("xc_domain_getinfolist", domid)
        info = ffi.new("xc_domaininfo_t *")
        found = self._call(
            f"xc_domain_getinfolist dom{domid}", self.lib.xc_domain_getinfolist, domid, 1, info
        )
        # The first domain at or above `domid`: another one when `domid` is gone.
        return found == 1 and info.domain == domid and not info.flags & DOMINF_DYING

    def iomem_permission(self, domid: int, first_mfn: int, nr_mfns: int, allow: bool) -> None:
        what = f"xc_domain_iomem_permission dom{domid} {first_mfn:#x}+{nr_mfns:#x}"
        self._guest(what, domid)
        if not (first_mfn >= 0 and nr_mfns > 0 and first_mfn + nr_mfns <= MAX_MFN):
            raise DomainError(f"{what}: not a page range", errno.EINVAL)
        self._call(what, self.lib.xc_domain_iomem_permission, domid, first_mfn, nr_mfns, allow)

    def ioport_permission(self, domid: int, first_port: int, nr_ports: int, allow: bool) -> None:
        what = f"xc_domain_ioport_permission dom{domid} {first_port:#x}+{nr_ports:#x}"
        self._guest(what, domid)
        if not (first_port >= 0 and nr_ports > 0 and first_port + nr_ports <= 0x10000):
            raise DomainError(f"{what}: not a port range", errno.EINVAL)
        self._call(what, self.lib.xc_domain_ioport_permission, domid, first_port, nr_ports, allow)

    def map_gsi(self, domid: int, gsi: int) -> int:
        what = f"xc_physdev_map_pirq dom{domid} gsi {gsi}"
        self._guest(what, domid)
        if not 0 < gsi < MAX_PIRQ:
            raise DomainError(f"{what}: not a GSI", errno.EINVAL)
        pirq = ffi.new("int *", gsi)  # ask for PIRQ == GSI, as libxl does
        self._call(what, self.lib.xc_physdev_map_pirq, domid, gsi, pirq)
        return int(pirq[0])

    def unmap_gsi(self, domid: int, pirq: int) -> None:
        what = f"xc_physdev_unmap_pirq dom{domid} {pirq}"
        self._guest(what, domid)
        if not 0 < pirq < MAX_PIRQ:
            raise DomainError(f"{what}: not a PIRQ", errno.EINVAL)
        self._call(what, self.lib.xc_physdev_unmap_pirq, domid, pirq)

    def irq_permission(self, domid: int, pirq: int, allow: bool) -> None:
        what = f"xc_domain_irq_permission dom{domid} {pirq} {'allow' if allow else 'deny'}"
        self._guest(what, domid)
        if not 0 < pirq < MAX_PIRQ:
            raise DomainError(f"{what}: not a PIRQ", errno.EINVAL)
        self._call(what, self.lib.xc_domain_irq_permission, domid, pirq, allow)

    def assign_device(self, domid: int, address: str) -> None:
        what = f"xc_assign_device dom{domid} {address}"
        self._guest(what, domid)
        self._call(what, self.lib.xc_assign_device, domid, self._sbdf(what, address), RDM_STRICT)

    def deassign_device(self, domid: int, address: str) -> None:
        what = f"xc_deassign_device dom{domid} {address}"
        self._guest(what, domid)
        self._call(what, self.lib.xc_deassign_device, domid, self._sbdf(what, address))

    def dequarantine(self, address: str) -> None:
        what = f"xc_deassign_device DOMID_IO {address}"
        self._call(what, self.lib.xc_deassign_device, DOMID_IO, self._sbdf(what, address))

    @staticmethod
    def _sbdf(what: str, address: str) -> int:
        try:
            return machine_sbdf(address)
        except ValueError as exc:
            raise DomainError(f"{what}: {exc}", errno.EINVAL) from None

    def close(self) -> None:
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            self.lib.xc_interface_close(handle)
