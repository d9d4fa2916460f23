"""The host bus of a real dom0 through sysfs (/sys/bus/pci), root configurable.

Writes (config space, unbind/bind, reset) are off unless asked for, and asking for them on the
real /sys needs PCIBACK_ALLOW_SYSFS_WRITES=1 in the environment as well: a development or CI
machine must never have its devices touched. Tests exercise the write paths on a fake tree.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pciback.ports.bus import BarKind, BarResource
from pciback.ports.hostbus import STUB_DRIVER

DEFAULT_ROOT = Path("/sys/bus/pci")
KERNEL_STUB = "pci-stub"  # what holds a seized device on the host while this daemon drives it
MAX_DEVICES = 65536
_ADDRESS = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]")
_IO, _MEM, _PREFETCH, _MEM64 = 0x100, 0x200, 0x2000, 0x100000
_CAP_PM = 0x01
_CAP_NAMES = {_CAP_PM: "power management", 0x05: "MSI", 0x11: "MSI-X"}
_PMCSR_STATE = 0x0003
_PMCSR_PME_STATUS = 0x8000  # write-1-to-clear: never written back as read


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

    @property
    def address(self) -> str:
        return self._address

    @property
    def config_size(self) -> int:
        return self._size

    def _check(self, offset: int, size: int) -> None:
        if size not in (1, 2, 4) or offset < 0 or offset + size > self._size or offset % size:
            raise ValueError(f"bad config access {offset:#x}/{size} on {self._address}")

    def read(self, offset: int, size: int) -> int:
        self._check(offset, size)
        fd = os.open(self.dir / "config", os.O_RDONLY)
        try:
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        if len(data) != size:  # an unprivileged reader sees only the first 64 bytes
            raise SysfsError(f"{self._address}: short config read at {offset:#x}")
        return int.from_bytes(data, "little")

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
        self._write_file(
            "config", (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"), offset
        )

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
                BarResource(index, kind, size, bool(flags & _PREFETCH) and kind != BarKind.IO)
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
        pos = self.capability(_CAP_PM)
        pmcsr = self.read(pos + 4, 2) & ~(_PMCSR_STATE | _PMCSR_PME_STATUS)
        self.write(pos + 4, 2, pmcsr | state)

    def reset(self) -> None:
        if not (self.dir / "reset").exists():
            raise SysfsError(f"{self._address} offers no reset method")
        self._write_file("reset", b"1")

    # Enabling MSI/MSI-X on a real dom0 goes through the hypervisor's physdev operations;
    # turning them off is clearing the enable bit, which is all a seize or release needs.
    def enable_msi(self, vectors: int) -> None:
        raise ValueError(f"{self._address}: MSI is set up through the hypervisor port")

    def disable_msi(self) -> None:
        cap = self.capability(0x05)
        self.write(cap + 2, 2, self.read(cap + 2, 2) & ~0x71)

    def enable_msix(self, entries: tuple[int, ...]) -> None:
        raise ValueError(f"{self._address}: MSI-X is set up through the hypervisor port")

    def disable_msix(self) -> None:
        cap = self.capability(0x11)
        self.write(cap + 2, 2, self.read(cap + 2, 2) & ~0xC000)

    def capability(self, cap_id: int) -> int:
        """The offset of the first capability `cap_id` in the standard chain (a bounded walk);
        ValueError when there is none."""
        pos = self.read(0x34, 1) & ~3 if self.read(0x06, 2) & 0x10 else 0
        for _ in range(48):
            if pos < 0x40:
                break
            if self.read(pos, 1) == cap_id:
                return pos
            pos = self.read(pos + 1, 1) & ~3
        name = _CAP_NAMES.get(cap_id, f"{cap_id:#04x}")
        raise ValueError(f"{self._address} has no {name} capability")


class SysfsBus:
    def __init__(self, root: Path = DEFAULT_ROOT, writable: bool = False) -> None:
        _guard(root, writable)
        self.root = root
        self.writable = writable

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
        return SysfsDevice(self._dir(address), address, self.writable)

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
        if self.driver(address) is not None:
            self._write(self._dir(address) / "driver" / "unbind", address)

    def bind(self, address: str, driver: str) -> None:
        kernel = KERNEL_STUB if driver == STUB_DRIVER else driver
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", kernel):
            raise ValueError(f"not a driver name: {kernel!r}")
        self._write(self._dir(address) / "driver_override", kernel)
        self._write(self.root / "drivers" / kernel / "bind", address)
