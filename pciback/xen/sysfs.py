"""The host bus of a real dom0 through sysfs (/sys/bus/pci), root configurable.

Writes (config space, unbind/bind, reset) are off unless asked for, and asking for them on the
real /sys needs PCIBACK_ALLOW_SYSFS_WRITES=1 in the environment as well: a development or CI
machine must never have its devices touched. Tests exercise the write paths on a fake tree.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

from pciback.engine.chain import STATUS, STD_END, walk_standard
from pciback.generated.names import COMMON_HEADER, MSI, MSIX, PM
from pciback.ports.bus import BarKind, BarResource, config_access_fits
from pciback.ports.hostbus import STUB_DRIVER
from pciback.xen.ecam import EcamMap, EcamUnavailable, EcamWindow, mismatch

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/sys/bus/pci")
KERNEL_STUB = "pci-stub"  # what holds a seized device on the host while this daemon drives it
MAX_DEVICES = 65536
_ADDRESS = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]")
_IO, _MEM, _PREFETCH, _MEM64 = 0x100, 0x200, 0x2000, 0x100000
_CAP_NAMES = {PM.id: "power management", MSI.id: "MSI", MSIX.id: "MSI-X"}
COMMAND, PMCSR = COMMON_HEADER.COMMAND, PM.PMCSR
MSI_CONTROL, MSIX_CONTROL = MSI.CONTROL, MSIX.CONTROL
_MSI_OFF = MSI_CONTROL.MULTIPLE_MESSAGE_ENABLE.mask | MSI_CONTROL.ENABLE.mask
_MSIX_OFF = MSIX_CONTROL.ENABLE.mask | MSIX_CONTROL.FUNCTION_MASK.mask


class SysfsError(OSError):
    pass


def _guard(root: Path, writable: bool) -> None:
    if not writable:
        return
    real = root.resolve()
    if real.is_relative_to("/sys") and os.environ.get("PCIBACK_ALLOW_SYSFS_WRITES") != "1":
        raise SysfsError(f"refusing to write under {real}: set PCIBACK_ALLOW_SYSFS_WRITES=1")


class SysfsDevice:
    def __init__(self, directory: Path, address: str, writable: bool = False) -> None:
        self.dir = directory
        self._address = address
        self.writable = writable
        size = (directory / "config").stat().st_size
        self._size = 4096 if size >= 4096 else 256
        self._fd: int | None = None
        self._fd_lock = threading.Lock()
        self._window: EcamWindow | None = None  # while set, config reads go through it
        self._closed = False

    @property
    def address(self) -> str:
        return self._address

    @property
    def config_size(self) -> int:
        return self._size

    def _check(self, offset: int, size: int) -> None:
        if not config_access_fits(offset, size, self._size):
            raise ValueError(f"bad config access {offset:#x}/{size} on {self._address}")

    def _config_fd(self) -> int:
        # Kept open: opening the file costs more than the read itself, and guests read often.
        with self._fd_lock:
            if self._fd is None:
                flags = os.O_RDWR if self.writable else os.O_RDONLY
                self._fd = os.open(self.dir / "config", flags | os.O_CLOEXEC)
            return self._fd

    @property
    def reads_by(self) -> str:
        """How config reads reach the device now: "ecam" or "sysfs"."""
        return "sysfs" if self._window is None else "ecam"

    def use_ecam(self, ecam: EcamMap) -> bool:
        """Read config space through the function's ECAM page from now on, once the page reads
        as sysfs does (pciback.xen.ecam); else stay with sysfs. Logs which, and why."""
        try:
            window = ecam.window(self._address)
        except EcamUnavailable as exc:
            log.info("%s: config reads by sysfs: %s", self._address, exc)
            return False
        try:
            why = mismatch(window, self.read)
        except (OSError, ValueError) as exc:
            why = f"sysfs could not be read to check it ({exc})"
        if why is not None:
            # A region that maps and reads otherwise: the platform's listing is wrong.
            log.warning("%s: config reads by sysfs: its ECAM page %s", self._address, why)
            return False
        log.info("%s: config reads by its ECAM page (%#x)", self._address, window.page)
        self._window = window
        return True

    def read(self, offset: int, size: int) -> int:
        # The guest's reads come here: `_check` (config_access_fits) and the fd's lock in line,
        # one Python call less each (under emulation every call costs tens of µs). `close` can
        # race a read with or without the lock: the daemon closes a device only once nothing
        # serves it (a read racing it reads the page it holds, or fails on the closed file).
        if size not in (1, 2, 4) or offset < 0 or offset + size > self._size or offset % size:
            self._check(offset, size)
        window = self._window
        if window is not None:
            return window.read(offset, size)
        fd = self._fd
        data = os.pread(self._config_fd() if fd is None else fd, size, offset)
        if len(data) != size:  # an unprivileged reader sees only the first 64 bytes
            raise SysfsError(f"{self._address}: short config read at {offset:#x}")
        return int.from_bytes(data, "little")

    def close(self) -> None:
        with self._fd_lock:
            fd, self._fd = self._fd, None
            # Dropped, not unmapped: a read on another thread may be inside its load.
            self._window, self._closed = None, True
        if fd is not None:
            os.close(fd)

    def _write_file(self, name: str, data: bytes, offset: int | None = None) -> None:
        if not self.writable:
            raise SysfsError(f"{self._address}: sysfs bus opened read-only")
        fd = os.open(self.dir / name, os.O_WRONLY)
        try:
            if offset is None:
                os.write(fd, data)
            else:
                os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    def write(self, offset: int, size: int, value: int) -> None:
        self._check(offset, size)
        if not self.writable:
            raise SysfsError(f"{self._address}: sysfs bus opened read-only")
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        # One pwrite of the access's width: the kernel makes it one config cycle of that size,
        # which Xen's intercepts of the MSI/MSI-X control registers require.
        if os.pwrite(self._config_fd(), data, offset) != size:
            raise SysfsError(f"{self._address}: short config write at {offset:#x}")

    def bars(self) -> tuple[BarResource, ...]:
        lines = (self.dir / "resource").read_text().splitlines()[:7]
        bars: list[BarResource] = []
        upper = False
        for index in range(7):
            parts = lines[index].split() if index < len(lines) else []
            start, end, flags = (int(p, 16) for p in parts[:3]) if len(parts) >= 3 else (0, 0, 0)
            size = end - start + 1 if end > start else 0
            if upper:
                bars.append(
                    BarResource(index, BarKind.MEM64_UPPER, bars[-1].size, bars[-1].prefetchable)
                )
                upper = False
                continue
            if index == 6:
                kind = BarKind.ROM if size else BarKind.UNUSED
            elif not size:
                kind = BarKind.UNUSED
            elif flags & _IO:
                kind = BarKind.IO
            elif flags & _MEM64:
                kind, upper = BarKind.MEM64, index < 5
            else:
                kind = BarKind.MEM32
            bars.append(
                BarResource(
                    index,
                    kind,
                    size,
                    bool(flags & _PREFETCH) and kind != BarKind.IO,
                    start if kind is not BarKind.UNUSED else 0,
                )
            )
        return tuple(bars)

    def host_irq(self) -> int:
        text = (self.dir / "irq").read_text().strip()
        if not text.isdigit() or len(text) > 10:
            raise SysfsError(f"{self._address}: unexpected irq {text[:16]!r}")
        return int(text)

    def set_power_state(self, state: int) -> None:
        if not 0 <= state <= 3:
            raise ValueError(f"no power state D{state}")
        at = self.capability(PM.id) + PMCSR.offset
        # PME status is write-1-to-clear: never written back as read.
        pmcsr = self.read(at, PMCSR.width) & ~PMCSR.PME_STATUS.mask
        self.write(at, PMCSR.width, PMCSR.POWER_STATE.put(pmcsr, state))

    def reset(self) -> None:
        if not (self.dir / "reset").exists():
            raise SysfsError(f"{self._address} offers no reset method")
        # The kernel makes sysfs reads wait while it resets the function; the page would let a
        # guest's read reach a device in the middle of its reset. Reads go by sysfs meanwhile.
        with self._fd_lock:
            window, self._window = self._window, None
        try:
            self._write_file("reset", b"1")
        finally:
            with self._fd_lock:
                if window is not None and not self._closed:
                    self._window = window

    def enable(self) -> None:
        if (self.dir / "enable").read_text().strip() == "0":
            self._write_file("enable", b"1")

    # On Xen the split is the one Linux's dom0 kernel follows: mapping a PIRQ (the hypervisor
    # port) makes Xen write the message (MSI address/data, or the MSI-X table entry, which
    # Xen keeps masked until the guest binds the PIRQ); dom0 then sets the enable bit and
    # masks INTx, and on the way back clears the enable bit and unmasks INTx before the PIRQs
    # are unmapped. Xen accepts only 16-bit writes of the control registers from dom0.
    def enable_msi(self, vectors: int) -> None:
        if vectors < 1 or vectors > 32 or vectors & (vectors - 1):
            raise ValueError(f"{self._address}: {vectors} MSI vectors")
        at = self.capability(MSI.id) + MSI_CONTROL.offset
        control = self.read(at, MSI_CONTROL.width)
        control = MSI_CONTROL.MULTIPLE_MESSAGE_ENABLE.put(control, vectors.bit_length() - 1)
        self.write(at, MSI_CONTROL.width, control | MSI_CONTROL.ENABLE.mask)
        self._set_intx_disable(True)

    def disable_msi(self) -> None:
        at = self.capability(MSI.id) + MSI_CONTROL.offset
        self.write(at, MSI_CONTROL.width, self.read(at, MSI_CONTROL.width) & ~_MSI_OFF)
        self._set_intx_disable(False)

    def enable_msix(self, entries: tuple[int, ...]) -> None:
        at = self.capability(MSIX.id) + MSIX_CONTROL.offset
        control = self.read(at, MSIX_CONTROL.width)
        table_size = MSIX_CONTROL.TABLE_SIZE.get(control) + 1
        if not entries or any(not 0 <= e < table_size for e in entries):
            raise ValueError(f"{self._address}: MSI-X table has {table_size} entries")
        control = (control | MSIX_CONTROL.ENABLE.mask) & ~MSIX_CONTROL.FUNCTION_MASK.mask
        self.write(at, MSIX_CONTROL.width, control)
        self._set_intx_disable(True)

    def disable_msix(self) -> None:
        at = self.capability(MSIX.id) + MSIX_CONTROL.offset
        self.write(at, MSIX_CONTROL.width, self.read(at, MSIX_CONTROL.width) & ~_MSIX_OFF)
        self._set_intx_disable(False)

    def _set_intx_disable(self, on: bool) -> None:
        command = self.read(COMMAND.offset, COMMAND.width)
        bit = COMMAND.INTX_DISABLE.mask
        wanted = command | bit if on else command & ~bit
        if wanted != command:
            self.write(COMMAND.offset, COMMAND.width, wanted)

    def capability(self, cap_id: int) -> int:
        """The offset of the first capability `cap_id` in the standard chain (a bounded walk);
        ValueError when there is none."""
        if self.read(STATUS.offset, STATUS.width) & STATUS.CAPABILITIES_LIST.mask:
            # The standard list alone: each read here is a system call.
            for cap in walk_standard(self.read, min(self._size, STD_END)):
                if cap.ident == cap_id:
                    return cap.offset
        name = _CAP_NAMES.get(cap_id, f"{cap_id:#04x}")
        raise ValueError(f"{self._address} has no {name} capability")


class SysfsBus:
    def __init__(
        self, root: Path = DEFAULT_ROOT, writable: bool = False, ecam: EcamMap | None = None
    ) -> None:
        """`ecam`: the regions a function's config reads may go through (pciback.xen.ecam);
        None: every read is a pread of sysfs."""
        _guard(root, writable)
        self.root = root
        self.writable = writable
        self.ecam = ecam
        self._lock = threading.Lock()
        self._devices: dict[str, SysfsDevice] = {}

    def addresses(self) -> list[str]:
        names: list[str] = []
        for entry in os.scandir(self.root / "devices"):
            if len(names) >= MAX_DEVICES:
                break
            if _ADDRESS.fullmatch(entry.name):
                names.append(entry.name)
        return sorted(names)

    def _dir(self, address: str) -> Path:
        if not _ADDRESS.fullmatch(address):
            raise KeyError(address)
        path = self.root / "devices" / address
        if not path.is_dir():
            raise KeyError(address)
        return path

    def device(self, address: str) -> SysfsDevice:
        """One object per function, so its config file stays open between accesses."""
        directory = self._dir(address)
        with self._lock:
            device = self._devices.get(address)
            if device is None:
                device = self._devices[address] = SysfsDevice(directory, address, self.writable)
                if self.ecam is not None:
                    device.use_ecam(self.ecam)
            return device

    def upstream(self, address: str) -> tuple[str, ...]:
        """From where the function's directory sits in the device tree: on a real sysfs,
        /sys/bus/pci/devices/BDF links to /sys/devices/pci0000:00/<bridge>/.../BDF."""
        where = os.path.realpath(self._dir(address))
        parts = where.split(os.sep)[:-1]
        return tuple(part for part in reversed(parts) if _ADDRESS.fullmatch(part))

    def driver(self, address: str) -> str | None:
        link = self._dir(address) / "driver"
        if not link.is_symlink():
            return None
        name = os.path.basename(os.readlink(link))
        return STUB_DRIVER if name == KERNEL_STUB else name

    def _write(self, path: Path, text: str) -> None:
        if not self.writable:
            raise SysfsError(f"sysfs bus opened read-only: not writing {path}")
        with open(path, "w") as f:
            f.write(text)

    def unbind(self, address: str) -> None:
        driver = self.driver(address)
        if driver is not None:
            self._write(self._dir(address) / "driver" / "unbind", address)
        if driver == STUB_DRIVER:
            # The stub's override leaves with the stub: while it names pci-stub, the kernel
            # refuses every other driver's bind (xl pci-assignable-add's bind to pciback fails
            # with ENODEV), so a device given back unbound would stay unusable.
            self._write(self._dir(address) / "driver_override", "\n")

    def bind(self, address: str, driver: str) -> None:
        kernel = KERNEL_STUB if driver == STUB_DRIVER else driver
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", kernel):
            raise ValueError(f"not a driver name: {kernel!r}")
        # The stub takes the device through driver_override, which also keeps a host driver
        # from probing it again. A device given back to its host driver gets the override
        # cleared (a lone newline clears it), or it would stay tied to the stub's name and the
        # host driver's bind would be refused; nothing of the stub is left on the device.
        override = kernel if driver == STUB_DRIVER else "\n"
        self._write(self._dir(address) / "driver_override", override)
        self._write(self.root / "drivers" / kernel / "bind", address)
