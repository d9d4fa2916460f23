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

from pciback.engine.chain import (
    CAP_ID,
    CAP_NEXT,
    EXT_ID,
    EXT_LINK,
    EXT_NEXT,
    EXT_START,
    EXT_TTL,
    POINTER,
    STD_LINK,
    STD_START,
    STD_TTL,
)
from pciback.engine.space import ConfigSpace
from pciback.errors import PciOpError
from pciback.generated.names import (
    ACS,
    AER,
    ARI,
    ATS,
    COMMON_HEADER,
    CONST,
    DPC,
    DSN,
    EA,
    L1SS,
    LTR,
    MSI,
    MSIX,
    PCIE,
    PM,
    PTM,
    SRIOV,
    TYPE0,
    TYPE1,
    VIRTIO_PCI_CAP,
    VPD,
)
from pciback.policy import build_config_space
from pciback.ports.bus import BarResource, PhysicalDevice
from pciback.sim.device import SimDevice
from pciback.sim.fixtures import fixture_dir
from pciback.sim.frontend import SimFrontend
from pciback.tables import RegisterName

# What the guest kernel knows as pci_regs.h names it: the policy's names for the same registers.
H = COMMON_HEADER
VENDOR_ID, COMMAND, STATUS, HEADER_TYPE = H.VENDOR_ID, H.COMMAND, H.STATUS, H.HEADER_TYPE
# virtio 1.x 4.1.4: the structures a driver maps (type 5, the PCI configuration access window,
# is found but never mapped); struct virtio_pci_cap is the policy's VIRTIO_PCI_CAP.
VIRTIO_COMMON, VIRTIO_ISR, VIRTIO_DEVICE, VIRTIO_PCI_CFG = 1, 3, 4, 5
VIRTIO_NOTIFY = CONST.VIRTIO_PCI_CAP_NOTIFY_CFG


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
    # Not engine.chain's walk, on purpose: these reproduce the guest kernel's reads one for one
    # (ID and pointer in one 2-byte read), and those reads are what a scan's counts measure.
    def find_capability(self, cap_id: int, start: int | None = None) -> int:
        """pci_find_capability (start None) or pci_find_next_capability (from `start`)."""
        if start is None:
            if not self.read(STATUS.offset, STATUS.width) & STATUS.CAPABILITIES_LIST.mask:
                return 0
            pointer_at = POINTER.offset
        else:
            pointer_at = start + CAP_NEXT
        pos = self.read(pointer_at, 1)
        for _ in range(STD_TTL):  # the kernel's TTL
            if pos < STD_START:
                return 0
            pos &= ~3
            entry = self.read(pos, STD_LINK)  # the ID, and the next pointer above it
            ident = _byte(entry, CAP_ID)
            if ident == 0xFF:
                return 0
            if ident == cap_id:
                return pos
            pos = _byte(entry, CAP_NEXT)
        return 0

    def find_ext_capability(self, cap_id: int) -> int:
        """pci_find_ext_capability."""
        if self.config_size <= EXT_START:
            return 0
        pos = EXT_START
        for _ in range(EXT_TTL):  # the kernel's bound too
            header = self.read(pos, EXT_LINK)
            if header in (0, 0xFFFFFFFF):
                return 0
            if EXT_ID.get(header) == cap_id:
                return pos
            pos = EXT_NEXT.get(header) & ~3
            if pos < EXT_START:
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
    if guest.read(VENDOR_ID.offset, 4) in (0, 0xFFFFFFFF):  # vendor and device IDs
        return
    header_type = HEADER_TYPE.LAYOUT.get(guest.read(HEADER_TYPE.offset, HEADER_TYPE.width))
    guest.read(H.REVISION_ID.offset, 4)  # and the class code above it
    pcie = guest.find_capability(PCIE.id)  # set_pcie_port_type
    if pcie:
        _read(guest, pcie, PCIE.CAPS)  # PCI_EXP_FLAGS
        _read(guest, pcie, PCIE.DEVCAP)  # pcie_mpss
    _read(guest, 0, TYPE0.INTERRUPT_PIN)  # pci_read_irq (a bridge's are at the same place)
    _read(guest, 0, TYPE0.INTERRUPT_LINE)
    bars = 6 if header_type == TYPE0.header_type else 2 if header_type == TYPE1.header_type else 0
    for bar in range(bars):  # pci_read_bases (the sizing writes left out)
        guest.read(TYPE0.BAR0.offset + TYPE0.BAR0.width * bar, TYPE0.BAR0.width)
    if header_type == TYPE0.header_type:
        _read(guest, 0, TYPE0.SUBSYSTEM_VENDOR_ID)
        _read(guest, 0, TYPE0.SUBSYSTEM_ID)
    guest.find_capability(EA.id)  # pci_ea_init
    pm = guest.find_capability(PM.id)  # pci_pm_init
    if pm:
        _read(guest, pm, PM.PMC)
        _read(guest, pm, PM.PMCSR)  # the current state
    for cap, control in ((MSI.id, MSI.CONTROL), (MSIX.id, MSIX.CONTROL)):
        at = guest.find_capability(cap)  # pci_msi_init / pci_msix_init: control, to switch off
        if at:
            guest.read(at + control.offset, control.width)
    guest.find_capability(VPD.id)  # pci_vpd_init
    if pcie:
        _read(guest, pcie, PCIE.DEVCTL)  # pci_configure_mps
        _read(guest, pcie, PCIE.LINKCAP)  # pcie_update_link_speed
        _read(guest, pcie, PCIE.LINKSTA)
        if PCIE.CAPS.VERSION.get(_read(guest, pcie, PCIE.CAPS)) >= 2:
            _read(guest, pcie, PCIE.DEVCAP2)  # ARI, LTR, 10-bit tags
            _read(guest, pcie, PCIE.LINKCAP2)  # supported speeds
    for ext in (AER.id, ACS.id, ARI.id, ATS.id, SRIOV.id, PTM.id, DPC.id, LTR.id):
        at = guest.find_ext_capability(ext)
        if at and ext == AER.id:  # pci_aer_init: clears what it finds, reading first
            _read(guest, at, AER.UNCORRECTABLE_STATUS)
            _read(guest, at, AER.CORRECTABLE_STATUS)
            _read(guest, at, AER.CONTROL)
    guest.find_ext_capability(L1SS.id)
    guest.find_ext_capability(DSN.id)


def _byte(value: int, at: int) -> int:
    """The byte `at` bytes into a little-endian read."""
    return (value >> 8 * at) & 0xFF


def _read(guest: ScanGuest, base: int, register: RegisterName) -> int:
    return guest.read(base + register.offset, register.width)


def driver_probe(guest: ScanGuest) -> None:
    """A virtio-pci (modern) driver's probe: enable, find and map its structures, master."""
    pm = guest.find_capability(PM.id)  # pci_enable_device: to D0 first
    if pm:
        _read(guest, pm, PM.PMCSR)
    command = _read(guest, 0, COMMAND)
    guest.write(COMMAND.offset, COMMAND.width, command | COMMAND.MEMORY_SPACE.mask)
    virtio = VIRTIO_PCI_CAP
    for cfg_type in (VIRTIO_COMMON, VIRTIO_NOTIFY, VIRTIO_ISR, VIRTIO_DEVICE, VIRTIO_PCI_CFG):
        pos = guest.find_capability(virtio.id)
        while pos:  # virtio_pci_find_capability
            found_type = _read(guest, pos, virtio.CFG_TYPE)
            bar = _read(guest, pos, virtio.BAR)
            if bar < 6 and found_type == cfg_type:
                break
            pos = guest.find_capability(virtio.id, pos)
        if pos and cfg_type != VIRTIO_PCI_CFG:  # vp_modern_map_capability
            _read(guest, pos, virtio.BAR)
            _read(guest, pos, virtio.OFFSET)
            _read(guest, pos, virtio.SIZE)
            if cfg_type == VIRTIO_NOTIFY:
                _read(guest, pos, virtio.NOTIFY_OFF_MULTIPLIER)
    command = _read(guest, 0, COMMAND)  # pci_set_master
    guest.write(COMMAND.offset, COMMAND.width, command | COMMAND.BUS_MASTER.mask)
    _read(guest, 0, H.LATENCY_TIMER)  # pcibios_set_master
    msix = guest.find_capability(MSIX.id)  # pci_msix_vec_count
    if msix:
        _read(guest, msix, MSIX.CONTROL)


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
