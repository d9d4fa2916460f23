"""The hypervisor port over libxenctrl.

PIRQs are mapped straight into the guest (as Linux dom0 does for a device whose owner is
registered): xc_physdev_map_pirq_msi with the guest's domid lets Xen allocate the PIRQ and,
in map_domain_pirq, grant the guest access to it, so no xc_domain_irq_permission is needed;
unmapping revokes it. Xen finds the device among the guest's own, so the device must have
been assigned to the guest (xc_assign_device) and, for MSI-X, prepared while dom0 held it
(PHYSDEVOP_prepare_msix, pciback.xen.physdev). Xen writes the message (MSI address/data, or the
MSI-X table entry); the enable bits are dom0's to set (pciback.xen.sysfs).

libxenctrl issues MAP_PIRQ_TYPE_MSI, which Xen reads as PCI segment 0, and no
MAP_PIRQ_TYPE_MULTI_MSI: a device on another segment and multi-message MSI are refused here
rather than mapped for the wrong device or emulated with unrelated PIRQs.

A domain that cannot survive a device error is shut down with reason "crash", so the toolstack
applies the guest's on_crash policy and cleans up; destroying it behind the toolstack's back is
the fallback when the shutdown itself fails.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cffi import FFI  # type: ignore[import-untyped]  # no stubs in the dev extra

from pciback.control.hide import parse_address
from pciback.generated.names import MSIX
from pciback.ports.hypervisor import HypervisorError, IrqKind
from pciback.xen._loader import XenUnavailable, check_domid, load
from pciback.xen.physdev import PhysdevCalls
from pciback.xen.sysfs import DEFAULT_ROOT, SysfsBus

SHUTDOWN_CRASH = 3
MSIX_MAX_ENTRIES = MSIX.CONTROL.TABLE_SIZE.mask + 1
AUTO = -1  # index and pirq: let Xen choose

TYPEDEFS = {
    "xc_interface": "struct xc_interface_core",
    "xentoollog_logger": "struct xentoollog_logger",
}
OPAQUE = ("struct xc_interface_core", "struct xentoollog_logger")
DECLS = (
    "xc_interface *xc_interface_open(xentoollog_logger *logger,"
    " xentoollog_logger *dombuild_logger, unsigned open_flags);",
    "int xc_interface_close(xc_interface *xch);",
    "int xc_physdev_map_pirq_msi(xc_interface *xch, uint32_t domid, int index, int *pirq,"
    " int devfn, int bus, int entry_nr, uint64_t table_base);",
    "int xc_physdev_unmap_pirq(xc_interface *xch, uint32_t domid, int pirq);",
    "int xc_domain_irq_permission(xc_interface *xch, uint32_t domid, uint32_t pirq,"
    " bool allow_access);",
    "int xc_domain_shutdown(xc_interface *xch, uint32_t domid, int reason);",
    "int xc_domain_destroy(xc_interface *xch, uint32_t domid);",
)
HEADERS = ("xenctrl.h",)
CONSTANTS = {"SHUTDOWN_crash": SHUTDOWN_CRASH}

ffi = FFI()
ffi.cdef("\n".join([f"{s};" for s in OPAQUE] + [f"typedef {t} {n};" for n, t in TYPEDEFS.items()]))
ffi.cdef("\n".join(DECLS))


def library() -> Any:
    return load(ffi, "xenctrl", ("libxenctrl.so.4.17", "libxenctrl.so"), "libxenctrl4.17")


def open_interface(lib: Any, lib_ffi: FFI) -> Any:
    """A libxenctrl handle (each adapter over libxenctrl has its own FFI and handle), or
    XenUnavailable saying what is likely missing."""
    lib_ffi.errno = 0
    handle = lib.xc_interface_open(lib_ffi.NULL, lib_ffi.NULL, 0)
    if handle == lib_ffi.NULL:
        code = lib_ffi.errno or errno.ENOENT
        raise XenUnavailable(
            f"xc_interface_open failed ({errno.errorcode.get(code, code)}): "
            "is /dev/xen/privcmd there and this process root?"
        )
    return handle


def msix_table_base(address: str, root: Path = DEFAULT_ROOT) -> int:
    """The host address of the BAR holding the device's MSI-X table (Xen checks it against its
    own reading of the BAR), from sysfs, read-only."""
    device = SysfsBus(root).device(address)
    table = device.read(device.capability(MSIX.id) + MSIX.TABLE.offset, MSIX.TABLE.width)
    bir = MSIX.TABLE.BIR.get(table)
    lines = (device.dir / "resource").read_text().splitlines()
    if bir > 5 or bir >= len(lines):
        raise ValueError(f"{address}: MSI-X table in BAR {bir}, which is not there")
    start = int(lines[bir].split()[0], 16)
    if not start:
        raise ValueError(f"{address}: BAR {bir} holding the MSI-X table is unassigned")
    return start


class XenHypervisor:
    """The HypervisorPort on a real dom0."""

    def __init__(
        self,
        lib: Any = None,
        table_base: Callable[[str], int] = msix_table_base,
        physdev: PhysdevCalls | None = None,
    ) -> None:
        """`physdev`: the libxencall handle for prepare/release_msix (None: refused)."""
        self.lib = lib if lib is not None else library()
        self.table_base = table_base
        self.physdev = physdev
        self._lock = threading.Lock()
        self._handle: Any = open_interface(self.lib, ffi)

    def _call(self, what: str, fn: Callable[..., int], *args: Any) -> None:
        with self._lock:
            if self._handle is None:
                raise HypervisorError(f"{what}: hypervisor interface closed")
            ffi.errno = 0
            rc = fn(self._handle, *args)
        if rc != 0:
            code = ffi.errno or errno.EIO
            raise HypervisorError(f"{what}: {errno.errorcode.get(code, code)}", code)

    def map_pirq(self, domid: int, address: str, kind: IrqKind, index: int, count: int) -> int:
        try:
            check_domid(domid)
            segment, bus, slot, function = parse_address(address)
        except ValueError as exc:
            raise HypervisorError(f"map_pirq: {exc}") from None
        if count != 1:
            raise HypervisorError(
                f"map_pirq {address}: {count} vectors; multi-message MSI needs "
                "MAP_PIRQ_TYPE_MULTI_MSI, which libxenctrl does not issue"
            )
        if segment != 0:
            raise HypervisorError(
                f"map_pirq {address}: PCI segment {segment}; libxenctrl's MAP_PIRQ_TYPE_MSI "
                "reaches segment 0 only"
            )
        if kind is IrqKind.MSI:
            if index != 0:
                raise HypervisorError(f"map_pirq {address}: MSI index {index}, expected 0")
            entry, base = 0, 0
        else:
            if not 0 <= index < MSIX_MAX_ENTRIES:
                raise HypervisorError(f"map_pirq {address}: no MSI-X entry {index}")
            try:
                entry, base = index, self.table_base(address)
            except (OSError, ValueError, KeyError) as exc:
                raise HypervisorError(f"map_pirq {address}: MSI-X table: {exc}") from None
        pirq = ffi.new("int *", AUTO)
        self._call(
            f"xc_physdev_map_pirq_msi dom{domid} {address} {kind.value}[{index}]",
            self.lib.xc_physdev_map_pirq_msi,
            domid,
            AUTO,
            pirq,
            slot << 3 | function,
            bus,
            entry,
            base,
        )
        if pirq[0] < 0:
            raise HypervisorError(f"map_pirq {address}: Xen returned PIRQ {pirq[0]}")
        return int(pirq[0])

    def unmap_pirq(self, domid: int, pirq: int) -> None:
        try:
            check_domid(domid)
        except ValueError as exc:
            raise HypervisorError(f"unmap_pirq: {exc}") from None
        if not isinstance(pirq, int) or not 0 <= pirq < 1 << 31:
            raise HypervisorError(f"unmap_pirq: bad PIRQ {pirq!r}")
        self._call(
            f"xc_physdev_unmap_pirq dom{domid} {pirq}", self.lib.xc_physdev_unmap_pirq, domid, pirq
        )

    def irq_permission(self, domid: int, pirq: int, allow: bool) -> None:
        """Grant or revoke a PIRQ outside map_pirq (a PIRQ in dom0's own numbering)."""
        try:
            check_domid(domid)
        except ValueError as exc:
            raise HypervisorError(f"irq_permission: {exc}") from None
        self._call(
            f"xc_domain_irq_permission dom{domid} {pirq}",
            self.lib.xc_domain_irq_permission,
            domid,
            pirq,
            allow,
        )

    def prepare_msix(self, address: str) -> None:
        if self.physdev is None:
            raise HypervisorError(f"PHYSDEVOP_prepare_msix {address}: libxencall not opened")
        self.physdev.prepare_msix(address)

    def release_msix(self, address: str) -> None:
        if self.physdev is None:
            raise HypervisorError(f"PHYSDEVOP_release_msix {address}: libxencall not opened")
        self.physdev.release_msix(address)

    def kill_domain(self, domid: int) -> None:
        try:
            check_domid(domid)  # never dom0: that is this host
        except ValueError as exc:
            raise HypervisorError(f"kill_domain: {exc}") from None
        try:
            self._call(
                f"xc_domain_shutdown dom{domid}", self.lib.xc_domain_shutdown, domid, SHUTDOWN_CRASH
            )
        except HypervisorError:
            self._call(f"xc_domain_destroy dom{domid}", self.lib.xc_domain_destroy, domid)

    def close(self) -> None:
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            self.lib.xc_interface_close(handle)
        if self.physdev is not None:
            self.physdev.close()
