"""What a guest's config-space traffic costs in physical reads: a replayable workload.

Three phases a Linux PV guest goes through with a passed-through function, each written as the
sequence of config accesses the guest kernel (or tool) makes, discovering the device through
its own reads as the guest does:

- boot scan: the PCI core's probe order (pci_scan_device, pci_setup_device,
  pci_init_capabilities): IDs, header type, class, BARs (read, not sized), capability finds
  (each one reads the status word, the pointer, then the list a byte and a word per entry),
  the PCIe capability's registers, extended capability finds (each from 0x100);
- driver probe: what a virtio-pci driver does (pci_enable_device, the vendor capability walks
  of virtio_pci_find_capability and the reads of each structure it maps, pci_set_master,
  counting MSI-X vectors), with its command writes;
- lspci -vvv -xxxx: the whole space read through sysfs, which the kernel turns into one read
  per dword.

The counts are deterministic: the benchmark prints them, and the tests hold them to targets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pciback.engine.space import ConfigSpace, build_config_space
from pciback.errors import PciOpError
from pciback.ports.bus import BarResource, PhysicalDevice
from pciback.sim.device import SimDevice
from pciback.sim.fixtures import fixture_dir
from pciback.sim.frontend import SimFrontend

# Offsets the guest kernel uses (include/uapi/linux/pci_regs.h), as the guest knows them.
VENDOR_ID, COMMAND, STATUS, CLASS_REVISION = 0x00, 0x04, 0x06, 0x08
LATENCY_TIMER, HEADER_TYPE, BAR0, SUBSYSTEM = 0x0D, 0x0E, 0x10, 0x2C
CAPABILITY_LIST, INTERRUPT_LINE, INTERRUPT_PIN = 0x34, 0x3C, 0x3D
STATUS_CAP_LIST = 0x10
COMMAND_MEMORY, COMMAND_MASTER = 0x2, 0x4
CAP_PM, CAP_VPD, CAP_MSI, CAP_VENDOR, CAP_PCIE, CAP_MSIX, CAP_EA = (
    0x01,
    0x03,
    0x05,
    0x09,
    0x10,
    0x11,
    0x14,
)
EXT_AER, EXT_DSN, EXT_ACS, EXT_ARI, EXT_ATS, EXT_SRIOV = 0x01, 0x03, 0x0D, 0x0E, 0x0F, 0x10
EXT_LTR, EXT_DPC, EXT_L1SS, EXT_PTM = 0x18, 0x1D, 0x1E, 0x1F
# virtio 1.x 4.1.4: struct virtio_pci_cap and the structures a driver maps (type 5, the PCI
# configuration access window, is found but never mapped).
VIRTIO_CFG_TYPE, VIRTIO_BAR, VIRTIO_OFFSET, VIRTIO_LENGTH, VIRTIO_NOTIFY_MULT = 3, 4, 8, 12, 16
VIRTIO_COMMON, VIRTIO_NOTIFY, VIRTIO_ISR, VIRTIO_DEVICE, VIRTIO_PCI_CFG = 1, 2, 3, 4, 5


class CountingDevice:
    """A PhysicalDevice that counts the config reads made of it."""

    def __init__(self, inner: PhysicalDevice) -> None:
        self.inner = inner
        self.reads = 0

    @property
    def address(self) -> str:
        return self.inner.address

    @property
    def config_size(self) -> int:
        return self.inner.config_size

    def read(self, offset: int, size: int) -> int:
        self.reads += 1
        return self.inner.read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.inner.write(offset, size, value)

    def bars(self) -> tuple[BarResource, ...]:
        return self.inner.bars()

    def host_irq(self) -> int:
        return self.inner.host_irq()

    def enable(self) -> None:
        self.inner.enable()

    def set_power_state(self, state: int) -> None:
        self.inner.set_power_state(state)

    def reset(self) -> None:
        self.inner.reset()

    def enable_msi(self, vectors: int) -> None:
        self.inner.enable_msi(vectors)

    def disable_msi(self) -> None:
        self.inner.disable_msi()

    def enable_msix(self, entries: tuple[int, ...]) -> None:
        self.inner.enable_msix(entries)

    def disable_msix(self) -> None:
        self.inner.disable_msix()


@dataclass
class PhaseCount:
    """One phase's guest accesses and the physical reads they caused."""

    name: str
    guest_reads: int = 0
    guest_writes: int = 0
    physical_reads: int = 0  # caused by guest reads
    write_reads: int = 0  # physical reads caused by guest writes (read-modify-write, hooks)
    worst: int = 0  # the most physical reads one guest read caused
    worst_at: tuple[int, int] = (0, 0)  # (offset, size) of that read

    @property
    def ratio(self) -> float:
        return self.physical_reads / self.guest_reads if self.guest_reads else 0.0


class ScanGuest:
    """What a phase needs of a guest: its config accesses, and the PCI core's helpers made of
    them. `Guest` goes straight to a view; `FrontendGuest` through pcifront's ops."""

    @property
    def config_size(self) -> int:
        raise NotImplementedError

    def read(self, offset: int, size: int) -> int:
        raise NotImplementedError

    def write(self, offset: int, size: int, value: int) -> None:
        raise NotImplementedError

    # -- the PCI core's helpers, as drivers/pci/pci.c does them --------------------------------
    def find_capability(self, cap_id: int, start: int | None = None) -> int:
        """pci_find_capability (start None) or pci_find_next_capability (from `start`)."""
        if start is None:
            if not self.read(STATUS, 2) & STATUS_CAP_LIST:
                return 0
            pointer_at = CAPABILITY_LIST
        else:
            pointer_at = start + 1
        pos = self.read(pointer_at, 1)
        for _ in range(48):  # the kernel's TTL
            if pos < 0x40:
                return 0
            pos &= ~3
            entry = self.read(pos, 2)
            ident = entry & 0xFF
            if ident == 0xFF:
                return 0
            if ident == cap_id:
                return pos
            pos = entry >> 8
        return 0

    def find_ext_capability(self, cap_id: int) -> int:
        """pci_find_ext_capability."""
        if self.config_size <= 0x100:
            return 0
        pos = 0x100
        for _ in range(480):
            header = self.read(pos, 4)
            if header in (0, 0xFFFFFFFF):
                return 0
            if header & 0xFFFF == cap_id:
                return pos
            pos = (header >> 20) & 0xFFC
            if pos < 0x100:
                return 0
        return 0


@dataclass
class Guest(ScanGuest):
    """The guest's side of one view: every access goes through the view and is counted."""

    view: ConfigSpace
    device: CountingDevice
    phase: PhaseCount = field(default_factory=lambda: PhaseCount(""))

    @property
    def config_size(self) -> int:
        return self.view.size

    def read(self, offset: int, size: int) -> int:
        before = self.device.reads
        value = self.view.read(offset, size)
        caused = self.device.reads - before
        phase = self.phase
        phase.guest_reads += 1
        phase.physical_reads += caused
        if caused > phase.worst:
            phase.worst, phase.worst_at = caused, (offset, size)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        before = self.device.reads
        self.view.write(offset, size, value)
        self.phase.guest_writes += 1
        self.phase.write_reads += self.device.reads - before


class FrontendGuest(ScanGuest):
    """The same phases as a guest's kernel runs them: every access an op over the shared page
    to the daemon (a failed op reads all ones, as a PCI read that nothing answers)."""

    def __init__(self, frontend: SimFrontend, address: str, config_size: int = 4096) -> None:
        self.frontend = frontend
        self.address = address
        self._size = config_size

    @property
    def config_size(self) -> int:
        return self._size

    def read(self, offset: int, size: int) -> int:
        try:
            return self.frontend.conf_read(self.address, offset, size)
        except PciOpError:
            return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        with contextlib.suppress(PciOpError):
            self.frontend.conf_write(self.address, offset, size, value)


def boot_scan(guest: ScanGuest) -> None:
    """pci_scan_device, pci_setup_device and pci_init_capabilities, in that order."""
    if guest.read(VENDOR_ID, 4) in (0, 0xFFFFFFFF):
        return
    header_type = guest.read(HEADER_TYPE, 1) & 0x7F
    guest.read(CLASS_REVISION, 4)
    pcie = guest.find_capability(CAP_PCIE)  # set_pcie_port_type
    if pcie:
        guest.read(pcie + 2, 2)  # PCI_EXP_FLAGS
        guest.read(pcie + 4, 4)  # PCI_EXP_DEVCAP: pcie_mpss
    guest.read(INTERRUPT_PIN, 1)  # pci_read_irq
    guest.read(INTERRUPT_LINE, 1)
    bars = 6 if header_type == 0 else 2 if header_type == 1 else 0
    for bar in range(bars):  # pci_read_bases (the sizing writes left out)
        guest.read(BAR0 + 4 * bar, 4)
    if header_type == 0:
        guest.read(SUBSYSTEM, 2)
        guest.read(SUBSYSTEM + 2, 2)
    guest.find_capability(CAP_EA)  # pci_ea_init
    pm = guest.find_capability(CAP_PM)  # pci_pm_init
    if pm:
        guest.read(pm + 2, 2)  # PMC
        guest.read(pm + 4, 2)  # PMCSR: the current state
    for cap in (CAP_MSI, CAP_MSIX):  # pci_msi_init / pci_msix_init: control, to switch off
        at = guest.find_capability(cap)
        if at:
            guest.read(at + 2, 2)
    guest.find_capability(CAP_VPD)  # pci_vpd_init
    if pcie:
        guest.read(pcie + 8, 2)  # DEVCTL: pci_configure_mps
        guest.read(pcie + 0x0C, 4)  # LNKCAP: pcie_update_link_speed
        guest.read(pcie + 0x12, 2)  # LNKSTA
        if guest.read(pcie + 2, 2) & 0xF >= 2:
            guest.read(pcie + 0x24, 4)  # DEVCAP2: ARI, LTR, 10-bit tags
            guest.read(pcie + 0x2C, 4)  # LNKCAP2: supported speeds
    for ext in (EXT_AER, EXT_ACS, EXT_ARI, EXT_ATS, EXT_SRIOV, EXT_PTM, EXT_DPC, EXT_LTR):
        at = guest.find_ext_capability(ext)
        if at and ext == EXT_AER:  # pci_aer_init: clears what it finds, reading first
            guest.read(at + 0x04, 4)
            guest.read(at + 0x10, 4)
            guest.read(at + 0x18, 4)
    guest.find_ext_capability(EXT_L1SS)
    guest.find_ext_capability(EXT_DSN)


def driver_probe(guest: ScanGuest) -> None:
    """A virtio-pci (modern) driver's probe: enable, find and map its structures, master."""
    pm = guest.find_capability(CAP_PM)  # pci_enable_device: to D0 first
    if pm:
        guest.read(pm + 4, 2)
    command = guest.read(COMMAND, 2)
    guest.write(COMMAND, 2, command | COMMAND_MEMORY)
    for cfg_type in (VIRTIO_COMMON, VIRTIO_NOTIFY, VIRTIO_ISR, VIRTIO_DEVICE, VIRTIO_PCI_CFG):
        pos = guest.find_capability(CAP_VENDOR)
        while pos:  # virtio_pci_find_capability
            found_type = guest.read(pos + VIRTIO_CFG_TYPE, 1)
            bar = guest.read(pos + VIRTIO_BAR, 1)
            if bar < 6 and found_type == cfg_type:
                break
            pos = guest.find_capability(CAP_VENDOR, pos)
        if pos and cfg_type != VIRTIO_PCI_CFG:  # vp_modern_map_capability
            guest.read(pos + VIRTIO_BAR, 1)
            guest.read(pos + VIRTIO_OFFSET, 4)
            guest.read(pos + VIRTIO_LENGTH, 4)
            if cfg_type == VIRTIO_NOTIFY:
                guest.read(pos + VIRTIO_NOTIFY_MULT, 4)
    command = guest.read(COMMAND, 2)  # pci_set_master
    guest.write(COMMAND, 2, command | COMMAND_MASTER)
    guest.read(LATENCY_TIMER, 1)  # pcibios_set_master
    msix = guest.find_capability(CAP_MSIX)  # pci_msix_vec_count
    if msix:
        guest.read(msix + 2, 2)


def lspci(guest: ScanGuest) -> None:
    """`lspci -vvv -xxxx` as root: the config file read whole, one dword read each."""
    for offset in range(0, guest.config_size, 4):
        guest.read(offset, 4)


PHASES: tuple[tuple[str, Callable[[ScanGuest], None]], ...] = (
    ("boot scan", boot_scan),
    ("driver probe", driver_probe),
    ("lspci -vvv", lspci),
)


def replay(view: ConfigSpace, device: CountingDevice) -> list[PhaseCount]:
    """Every phase over one view, in order; `device` is the counting device under the view."""
    guest = Guest(view, device)
    counts = []
    for name, phase in PHASES:
        guest.phase = PhaseCount(name)
        phase(guest)
        counts.append(guest.phase)
    return counts


def dumps() -> list[Path]:
    """Every dump of the fixture directory and its qemu/ subdirectory (MANIFEST.md there)."""
    base = fixture_dir()
    found = [p for d in (base, base / "qemu") if d.is_dir() for p in sorted(d.iterdir())]
    return [p for p in found if p.suffix == ".bin" or p.name.endswith(".lspci.txt")]


def view_of(dump: Path) -> tuple[ConfigSpace, CountingDevice]:
    """A guest view over a simulated device made from `dump`, its reads counted from here on
    (the reads of building the view, at seize time, are not the guest's)."""
    device = CountingDevice(SimDevice("0000:03:00.0", dump))
    view = build_config_space(device)
    device.reads = 0
    return view, device
