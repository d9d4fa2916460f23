"""Config reads by ECAM: a function's configuration page, mapped read-only from /dev/mem.

Why: every guest read the policy sends to the device is a physical read, and through sysfs each
is a system call (a pread of the function's config file: about 17 µs on a development machine,
60-150 µs in the lab's dom0 under emulation, where it also empties QEMU's TLB). The same bytes
read through a mapping of the function's page of the Enhanced Configuration Access Mechanism
are one load (14-19 µs there, the foreign call included), with no system call. It is how a PV
dom0's own kernel reads extended configuration space: Xen keeps the MMCONFIG regions read-only
to dom0 (it emulates the writes, to see MSI and MSI-X being switched), so a read-only mapping
asks nothing new of it. Writes stay with sysfs, where the kernel turns each into one config
cycle Xen sees.

Each access is one load of its own width, made by libatomic's __atomic_load_N on the page: a
copy through Python's buffers may read a word twice or wider (an unoptimised memcpy), and a
register with a side effect on read must be read once. The page stays mapped while any reader
holds its window: a load runs without the interpreter lock, so the mapping is never torn down
under it (a window is dropped, not closed, and the collector unmaps it once nothing uses it).

Where: the regions dom0's kernel uses, as /proc/iomem lists them ("PCI MMCONFIG ssss [bus
bb-ee]"; only root reads their addresses). A window serves reads only once it reads the
function's identity, class and first two BARs as sysfs reads them (`mismatch`), so a wrong
region, a wrong page or a device that does not answer keeps the function on sysfs. So does
anything missing: no region for the function's bus, or a /dev/mem that refuses the mapping
(Debian's kernel, built with CONFIG_IO_STRICT_DEVMEM, refuses the region it holds busy unless
booted with iomem=relaxed). Either way the daemon says which way each function's reads go, and
why. Only little-endian hosts map: the page holds the little-endian registers as loaded.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pciback.control.hide import parse_address
from pciback.generated.names import CAPABILITY_LISTS, COMMON_HEADER, ECAM, TYPE0
from pciback.xen import atomic
from pciback.xen._loader import XenUnavailable

log = logging.getLogger(__name__)

IOMEM = Path("/proc/iomem")
DEV_MEM = Path("/dev/mem")
ADDRESS = ECAM.ADDRESS
FUNCTION_SPACE = CAPABILITY_LISTS.EXTENDED_END  # a function's page: its whole config space
BUS_SPAN = ADDRESS.BUS.mask & -ADDRESS.BUS.mask  # the bytes of one bus's functions
MAX_IOMEM_BYTES = 1 << 20  # a real /proc/iomem is a few KiB
MAX_REGIONS = 256
_REGION = re.compile(
    r"\s*([0-9a-f]{1,16})-([0-9a-f]{1,16}) : PCI MMCONFIG ([0-9a-f]{4}) "
    r"\[bus ([0-9a-f]{2})-([0-9a-f]{2})\]"
)
# What a window must read as sysfs does before it serves: the identity, the class, and the
# first two BARs, which tell apart two functions of one model (the lab's two e1000e).
CHECKED = (
    COMMON_HEADER.VENDOR_ID.offset,  # with the device ID
    COMMON_HEADER.REVISION_ID.offset,  # with the class
    TYPE0.BAR0.offset,  # a bridge's BAR0 and BAR1 lie here too
    TYPE0.BAR1.offset,
)
_NO_DEVICE = (0, 0xFFFFFFFF)  # what an identity dword holds where no function answers
_LOADS = {1: "__atomic_load_1", 2: "__atomic_load_2", 4: "__atomic_load_4"}
_SEQ_CST = atomic.SEQ_CST  # read on every access: a module global, not an attribute of one


class EcamUnavailable(OSError):
    """A function's page cannot be mapped; the message says why."""


@dataclass(frozen=True, slots=True)
class EcamRegion:
    """One MMCONFIG region: segment `segment`, buses `first_bus` to `last_bus`, whose first
    bus's page 0 lies at physical address `start`."""

    segment: int
    first_bus: int
    last_bus: int
    start: int

    def page(self, bus: int, device: int, function: int) -> int | None:
        """The physical address of a function's page, None when its bus is not here."""
        if not self.first_bus <= bus <= self.last_bus:
            return None
        offset = ADDRESS.BUS.put(0, bus - self.first_bus)
        offset = ADDRESS.DEVICE.put(offset, device)
        return self.start + ADDRESS.FUNCTION.put(offset, function)


@dataclass(frozen=True, slots=True)
class Listing:
    """What /proc/iomem says of the MMCONFIG regions: those with an address, and how many it
    lists at address 0 (as it shows every address to a reader without CAP_SYS_ADMIN)."""

    regions: tuple[EcamRegion, ...]
    hidden: int = 0


def parse_iomem(text: str) -> Listing:
    """The MMCONFIG regions of a /proc/iomem text; a line whose span does not fit its buses, or
    that does not start on a bus's boundary, is left out."""
    regions: list[EcamRegion] = []
    hidden = 0
    for line in text[:MAX_IOMEM_BYTES].splitlines():
        match = _REGION.fullmatch(line)
        if match is None:
            continue
        start, end, segment, first, last = (int(part, 16) for part in match.groups())
        if not start:
            hidden += 1
            continue
        if last < first or start % BUS_SPAN or end - start + 1 != (last - first + 1) * BUS_SPAN:
            continue
        regions.append(EcamRegion(segment, first, last, start))
        if len(regions) == MAX_REGIONS:
            break
    return Listing(tuple(regions), hidden)


class EcamWindow:
    """One function's page, mapped read-only. Never closed explicitly: see the module's
    docstring (a reader inside a load holds the window, and with it the mapping)."""

    __slots__ = ("_base", "_loads", "_mapping", "page")

    def __init__(self, mapping: mmap.mmap, page: int, lib: Any) -> None:
        self.page = page
        self._mapping = mapping  # kept: the cdata below borrows its memory
        self._base = atomic.ffi.from_buffer(mapping)
        self._loads: dict[int, Callable[[Any, int], int]] = {
            size: getattr(lib, name) for size, name in _LOADS.items()
        }

    def read(self, offset: int, size: int) -> int:
        """An aligned access of 1, 2 or 4 bytes inside the function's space, as the caller has
        checked it: one load of that width."""
        return self._loads[size](self._base + offset, _SEQ_CST)


class EcamMap:
    """The regions of this dom0 and the memory device their pages are mapped from."""

    def __init__(self, listing: Listing, mem: Path = DEV_MEM) -> None:
        self.regions = listing.regions
        self.hidden = listing.hidden
        self.mem = mem

    @classmethod
    def from_system(cls, iomem: Path = IOMEM, mem: Path = DEV_MEM) -> EcamMap:
        try:
            with open(iomem, encoding="ascii", errors="replace") as f:
                text = f.read(MAX_IOMEM_BYTES)
        except OSError as exc:
            log.info("config reads by sysfs: %s unreadable (%s)", iomem, exc.strerror)
            text = ""
        return cls(parse_iomem(text), mem)

    def describe(self) -> str:
        """The regions, as a log line shows them."""
        if not self.regions:
            if self.hidden:
                hidden = self.hidden
                return f"/proc/iomem lists {hidden} MMCONFIG region(s) at address 0 (not root?)"
            return "no MMCONFIG region listed with its address in /proc/iomem"
        return ", ".join(
            f"segment {r.segment:04x} buses {r.first_bus:02x}-{r.last_bus:02x} at {r.start:#x}"
            for r in self.regions
        )

    def page_of(self, address: str) -> int | None:
        """The physical address of the page of function `address` (ssss:bb:dd.f), or None."""
        try:
            segment, bus, device, function = parse_address(address)
        except ValueError:
            return None
        for region in self.regions:
            if region.segment == segment:
                page = region.page(bus, device, function)
                if page is not None:
                    return page
        return None

    def window(self, address: str) -> EcamWindow:
        """Map the function's page read-only; EcamUnavailable says why it cannot be."""
        if sys.byteorder != "little":
            raise EcamUnavailable("the host is not little-endian")
        page = self.page_of(address)
        if page is None:
            raise EcamUnavailable(f"no MMCONFIG region covers {address} ({self.describe()})")
        try:
            lib = atomic.library()
        except XenUnavailable as exc:  # no libatomic to load with
            raise EcamUnavailable(str(exc)) from None
        try:
            fd = os.open(self.mem, os.O_RDONLY | os.O_SYNC | os.O_CLOEXEC)
        except OSError as exc:
            hint = " (not root, or a kernel in lockdown?)" if exc.errno == errno.EPERM else ""
            raise EcamUnavailable(f"{self.mem}: {exc.strerror}{hint}") from None
        try:
            mapping = mmap.mmap(fd, FUNCTION_SPACE, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            hint = ""
            if isinstance(exc, OSError) and exc.errno == errno.EPERM:
                hint = " (a kernel built with CONFIG_IO_STRICT_DEVMEM maps it with iomem=relaxed)"
            refused = f"{self.mem} refuses the page at {page:#x}: {why}{hint}"
            raise EcamUnavailable(refused) from None
        finally:
            os.close(fd)
        return EcamWindow(mapping, page, lib)


def mismatch(window: EcamWindow, read: Callable[[int, int], int]) -> str | None:
    """Why the window cannot serve the function `read` reads (by sysfs), or None when it reads
    the same identity, class and first two BARs, and a function answers there. Sysfs is read
    first: its read wakes a function the kernel suspended, which the page's would not."""
    for offset in CHECKED:
        expected = read(offset, 4)
        if offset == COMMON_HEADER.VENDOR_ID.offset and expected in _NO_DEVICE:
            return f"no function answers (its identity reads {expected:#010x})"
        mapped = window.read(offset, 4)
        if mapped != expected:
            return f"it reads {mapped:#010x} at {offset:#04x} where sysfs reads {expected:#010x}"
    return None


__all__ = [
    "CHECKED",
    "DEV_MEM",
    "IOMEM",
    "EcamMap",
    "EcamRegion",
    "EcamUnavailable",
    "EcamWindow",
    "Listing",
    "mismatch",
    "parse_iomem",
]
