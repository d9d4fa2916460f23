"""The frontend's granted shared page through libxengnttab.

`GrantTable.map_page` maps the page the frontend granted (`pci-op-ref`) into this process and
returns a `XenSharedPage`: the SharedPage layout over that memory, with the flags word changed
only through the atomic bit operations of pciback.xen.atomic.
"""

from __future__ import annotations

import errno
import mmap
import threading
from collections.abc import Callable
from typing import Any

from cffi import FFI  # type: ignore[import-untyped]  # no stubs in the dev extra

from pciback.protocol.abi import PAGE_SIZE, Flag
from pciback.protocol.transport import SharedPage
from pciback.xen._loader import XenUnavailable, check_domid, load
from pciback.xen.atomic import AtomicWord, library

TYPEDEFS = {"xengnttab_handle": "struct xengntdev_handle"}
OPAQUE = ("struct xengntdev_handle", "struct xentoollog_logger")
DECLS = (
    "xengnttab_handle *xengnttab_open(struct xentoollog_logger *logger, unsigned open_flags);",
    "int xengnttab_close(xengnttab_handle *xgt);",
    "void *xengnttab_map_grant_ref(xengnttab_handle *xgt, uint32_t domid, uint32_t ref, int prot);",
    "int xengnttab_unmap(xengnttab_handle *xgt, void *start_address, uint32_t count);",
)
CONSTANTS = {"PROT_READ": mmap.PROT_READ, "PROT_WRITE": mmap.PROT_WRITE}
HEADERS = ("sys/mman.h", "xengnttab.h")

ffi = FFI()
ffi.cdef("\n".join([f"{s};" for s in OPAQUE] + [f"typedef {t} {n};" for n, t in TYPEDEFS.items()]))
ffi.cdef("\n".join(DECLS))

# The bits the protocol gives the backend to change; the frontend owns the others.
BACKEND_CLEARS = frozenset({Flag.PCIF_ACTIVE, Flag.PCIB_ACTIVE})
BACKEND_SETS = frozenset({Flag.PCIB_ACTIVE})


def gnttab_library() -> Any:
    return load(ffi, "xengnttab", ("libxengnttab.so.1",), "libxengnttab1")


class XenSharedPage(SharedPage):
    """struct xen_pci_sharedinfo over guest memory; `release` unmaps it (once)."""

    def __init__(self, buffer: Any, release: Callable[[], None] | None = None) -> None:
        super().__init__(buffer)
        self._release = release
        self._closed = threading.Lock()

    def _bind(self, buffer: Any) -> None:
        super()._bind(buffer)
        self._atomic = AtomicWord(self.buffer)
        # The op path's flag operations straight into libatomic (no Python frame): a
        # sequentially consistent load, and the fetch-and that clears _XEN_PCIF_active.
        self.load_flags = self._atomic.loader()
        self.finish_op = self._atomic.clearer(Flag.PCIF_ACTIVE)

    def test_bit(self, bit: Flag) -> bool:
        return self._atomic.test(bit)

    def set_bit(self, bit: Flag) -> bool:
        if bit not in BACKEND_SETS:
            raise ValueError(f"the backend never sets {bit.name}: the frontend owns it")
        return self._atomic.set(bit)

    def clear_bit(self, bit: Flag) -> bool:
        if bit not in BACKEND_CLEARS:
            raise ValueError(f"the backend never clears {bit.name}: the frontend owns it")
        return self._atomic.clear(bit)

    def close(self) -> None:
        """Unmap. A reader that is late (a service thread that did not stop in time) finds a
        zeroed private page, flags 0 and no op pending, instead of an unmapped address."""
        if not self._closed.acquire(blocking=False):
            return
        self._bind(bytearray(PAGE_SIZE))
        if self._release is not None:
            self._release()


class GrantTable:
    """An open grant-table device (/dev/xen/gntdev) mapping frontends' pages."""

    def __init__(self, lib: Any = None) -> None:
        library()  # no shared page without atomics: fail before mapping anything
        self.lib = lib if lib is not None else gnttab_library()
        ffi.errno = 0
        handle = self.lib.xengnttab_open(ffi.NULL, 0)
        if handle == ffi.NULL:
            code = ffi.errno or errno.ENOENT
            raise XenUnavailable(
                f"xengnttab_open failed ({errno.errorcode.get(code, code)}): "
                "is /dev/xen/gntdev there (xen-gntdev module loaded)?"
            )
        self._handle: Any = handle
        self._lock = threading.Lock()

    def map_page(self, domid: int, ref: int) -> XenSharedPage:
        check_domid(domid)
        if not isinstance(ref, int) or not 0 <= ref <= 0xFFFFFFFF:
            raise ValueError(f"grant reference {ref!r} is not a 32-bit number")
        with self._lock:
            if self._handle is None:
                raise OSError(errno.EBADF, "grant table closed")
            ffi.errno = 0
            address = self.lib.xengnttab_map_grant_ref(
                self._handle, domid, ref, mmap.PROT_READ | mmap.PROT_WRITE
            )
        if address == ffi.NULL:
            code = ffi.errno or errno.EIO
            raise OSError(code, f"cannot map grant {ref} of domain {domid}")

        def release() -> None:
            with self._lock:
                if self._handle is not None:
                    self.lib.xengnttab_unmap(self._handle, address, 1)

        return XenSharedPage(ffi.buffer(address, PAGE_SIZE), release)

    def close(self) -> None:
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            self.lib.xengnttab_close(handle)
