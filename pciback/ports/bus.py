"""The physical-bus port: what the backend may ask of a real (or simulated) PCI function.

The core never touches sysfs or a device file directly; it holds a `PhysicalDevice`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol


class BarKind(Enum):
    UNUSED = "unused"
    IO = "io"
    MEM32 = "mem32"
    MEM64 = "mem64"  # the lower half; the next BAR is its UPPER half
    MEM64_UPPER = "mem64-upper"
    ROM = "rom"


@dataclass(frozen=True, slots=True)
class BarResource:
    """One BAR as the host resource allocator sees it (sysfs `resource`), sizes in bytes."""

    index: int  # 0..5, 6 = expansion ROM
    kind: BarKind
    size: int  # 0 for unused
    prefetchable: bool = False
    # The host address the resource allocator gave it (0: unassigned): what a guest driving the
    # BAR must be granted by the hypervisor (iomem pages or I/O ports).
    start: int = 0


class PhysicalDevice(Protocol):
    """A PCI function the backend drives. Offsets are config-space byte offsets."""

    @property
    def address(self) -> str:
        """`DDDD:BB:DD.F`."""
        ...

    @property
    def config_size(self) -> int:
        """256 for conventional PCI, 4096 with extended config space."""
        ...

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...

    def bars(self) -> tuple[BarResource, ...]:
        """BARs 0..5 then the ROM (index 6); sized by the host, never by writing the BAR."""
        ...

    def host_irq(self) -> int:
        """The IRQ dom0 routed for the function's INTx pin (Linux's `dev->irq`, sysfs `irq`):
        for a PV guest the GSI it binds, which may differ from the firmware's interrupt line."""
        ...

    def enable(self) -> None:
        """What the host's pci_enable_device does, once: decode on for the BARs the device
        has and its INTx pin routed to an IRQ (`host_irq`). A seized device stays enabled on
        the host for its stay in the pool, as the hypervisor needs memory decoding to prepare
        its MSI-X table."""
        ...

    def set_power_state(self, state: int) -> None:
        """Move to D0..D3hot (0..3) the way the host's PCI core does."""
        ...

    def reset(self) -> None:
        """Function-level reset (or the best reset the device supports)."""
        ...

    # Interrupt set-up the host's PCI core does once the hypervisor has mapped the PIRQs: it
    # programs the capability (and the MSI-X table) and masks INTx. Raise ValueError when the
    # device lacks the capability or cannot take the request.
    def enable_msi(self, vectors: int) -> None:
        """Enable MSI with `vectors` (a power of two) messages."""
        ...

    def disable_msi(self) -> None: ...

    def enable_msix(self, entries: tuple[int, ...]) -> None:
        """Enable MSI-X with these table entries unmasked."""
        ...

    def disable_msix(self) -> None: ...


def config_access_fits(offset: int, size: int, config_size: int) -> bool:
    """The one rule for a config-space access: 1, 2 or 4 bytes, naturally aligned, inside the
    function's `config_size` bytes. The measured paths (the op dispatcher, the sysfs read)
    write it in line; tests/test_access_rule.py holds them to it."""
    return size in (1, 2, 4) and not offset % size and 0 <= offset <= config_size - size
