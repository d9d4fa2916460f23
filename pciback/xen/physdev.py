"""PHYSDEVOP_prepare_msix / release_msix through libxencall: telling Xen that a device's MSI-X
table stays where it is while the device serves guests.

Xen locates a device's MSI-X table (and marks its pages read-only for everyone) when the first
vector is set up, but only if dom0 sets it up for a device dom0 still holds. A device assigned
to a guest (xc_assign_device) that was never prepared has no known table, and mapping an MSI-X
PIRQ for the guest then fails with ENODATA (seen on Xen 4.17). Linux's xen-pciback prepares
every MSI-X capable device when it takes it and releases it when it gives it back; this does
the same from user space. libxenctrl has no wrapper for these two operations, so they go
through the generic hypercall interface: a hypercall-safe buffer from libxencall holding a
`struct physdev_pci_device`.

Xen needs memory decoding on when it prepares (it maps the table) and refuses to prepare a
device twice (EBUSY) or to release one whose vectors are still in use (EBUSY).
"""

from __future__ import annotations

import errno
import threading
from typing import Any

from cffi import FFI  # type: ignore[import-untyped]  # no stubs in the dev extra

from pciback.control.hide import parse_address
from pciback.ports.hypervisor import HypervisorError
from pciback.xen._loader import XenUnavailable, load

HYPERVISOR_PHYSDEV_OP = 33
PHYSDEVOP_PREPARE_MSIX = 30
PHYSDEVOP_RELEASE_MSIX = 31

TYPEDEFS = {"xencall_handle": "struct xencall_handle"}
OPAQUE = ("struct xencall_handle", "struct xentoollog_logger")
STRUCTS = ("struct physdev_pci_device { uint16_t seg; uint8_t bus; uint8_t devfn; };",)
DECLS = (
    "xencall_handle *xencall_open(struct xentoollog_logger *logger, unsigned open_flags);",
    "int xencall_close(xencall_handle *xcall);",
    "int xencall2(xencall_handle *xcall, unsigned int op, uint64_t arg1, uint64_t arg2);",
    "void *xencall_alloc_buffer(xencall_handle *xcall, size_t size);",
    "void xencall_free_buffer(xencall_handle *xcall, void *p);",
)
HEADERS = ("xencall.h", "xen/xen.h", "xen/physdev.h")
# The public headers pick the hypercall numbers of an old interface unless told otherwise.
DEFINES = ("__XEN_TOOLS__",)
CONSTANTS = {
    "__HYPERVISOR_physdev_op": HYPERVISOR_PHYSDEV_OP,
    "PHYSDEVOP_prepare_msix": PHYSDEVOP_PREPARE_MSIX,
    "PHYSDEVOP_release_msix": PHYSDEVOP_RELEASE_MSIX,
    "sizeof(struct physdev_pci_device)": 4,
    "offsetof(struct physdev_pci_device, devfn)": 3,
}

ffi = FFI()
ffi.cdef("\n".join([f"{s};" for s in OPAQUE] + [f"typedef {t} {n};" for n, t in TYPEDEFS.items()]))
ffi.cdef("\n".join(STRUCTS))
ffi.cdef("\n".join(DECLS))


def library() -> Any:
    return load(ffi, "xencall", ("libxencall.so.1",), "libxencall1")


class PhysdevCalls:
    """The two physdev operations libxenctrl lacks, on one libxencall handle."""

    def __init__(self, lib: Any = None) -> None:
        self.lib = lib if lib is not None else library()
        self._lock = threading.Lock()
        ffi.errno = 0
        handle = self.lib.xencall_open(ffi.NULL, 0)
        if handle == ffi.NULL:
            code = ffi.errno or errno.ENOENT
            raise XenUnavailable(
                f"xencall_open failed ({errno.errorcode.get(code, code)}): "
                "is /dev/xen/privcmd there and this process root?"
            )
        self._handle: Any = handle

    def prepare_msix(self, address: str) -> None:
        self._pci_device_op(PHYSDEVOP_PREPARE_MSIX, "PHYSDEVOP_prepare_msix", address)

    def release_msix(self, address: str) -> None:
        self._pci_device_op(PHYSDEVOP_RELEASE_MSIX, "PHYSDEVOP_release_msix", address)

    def _pci_device_op(self, op: int, what: str, address: str) -> None:
        try:
            segment, bus, slot, function = parse_address(address)
        except ValueError as exc:
            raise HypervisorError(f"{what}: {exc}") from None
        with self._lock:
            if self._handle is None:
                raise HypervisorError(f"{what} {address}: hypercall interface closed")
            buffer = self.lib.xencall_alloc_buffer(
                self._handle, ffi.sizeof("struct physdev_pci_device")
            )
            if buffer == ffi.NULL:
                raise HypervisorError(f"{what} {address}: no hypercall buffer")
            try:
                device = ffi.cast("struct physdev_pci_device *", buffer)
                device.seg, device.bus, device.devfn = segment, bus, slot << 3 | function
                ffi.errno = 0
                rc = self.lib.xencall2(
                    self._handle,
                    HYPERVISOR_PHYSDEV_OP,
                    op,
                    int(ffi.cast("uintptr_t", buffer)),
                )
                code = ffi.errno
            finally:
                self.lib.xencall_free_buffer(self._handle, buffer)
        if rc != 0:
            code = code or (-rc if rc < 0 else errno.EIO)
            raise HypervisorError(f"{what} {address}: {errno.errorcode.get(code, code)}", code)

    def close(self) -> None:
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            self.lib.xencall_close(handle)
