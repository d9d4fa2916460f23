"""What a device needs granted to the PV guest it is given to, as libxl's pci_add_dm_done
computes it from sysfs: each BAR and the ROM with a host address (I/O ports, or the machine
pages the memory range touches), and the legacy interrupt when the function has an INTx pin
and dom0 gave it an IRQ (the GSI, mapped to the guest as the PIRQ of the same number, since a
PV guest binds the number its config space shows).

Grants are recorded as JSON before anything is granted and read back untrusted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pciback.generated.names import TYPE0
from pciback.ports.bus import BarKind, PhysicalDevice

PAGE_SHIFT = 12
INTERRUPT_PIN = TYPE0.INTERRUPT_PIN  # at the same offset in a bridge's header
MAX_RANGES = 8  # six BARs and the ROM
MAX_MFN = 1 << 52
MAX_GSI = 1 << 20
PORTS = 0x10000

Range = tuple[int, int]  # (first, count): pages for memory, ports for I/O


class GrantsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Grants:
    iomem: tuple[Range, ...] = ()
    ioports: tuple[Range, ...] = ()
    gsi: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "iomem": [list(r) for r in self.iomem],
            "ioports": [list(r) for r in self.ioports],
            "gsi": self.gsi,
        }

    @classmethod
    def from_json(cls, data: object) -> Grants:
        if not isinstance(data, dict):
            raise GrantsError("grants: not an object")
        gsi = data.get("gsi")
        if gsi is not None and not (_is_int(gsi) and 0 < gsi < MAX_GSI):
            raise GrantsError(f"grants: bad GSI {gsi!r}")
        return cls(
            _ranges(data.get("iomem"), MAX_MFN, "iomem"),
            _ranges(data.get("ioports"), PORTS, "ioports"),
            gsi,
        )


def grants_for(device: PhysicalDevice) -> Grants:
    """Read from the device (its BARs as the host placed them, its pin and dom0's IRQ)."""
    iomem: list[Range] = []
    ioports: list[Range] = []
    for bar in device.bars()[:7]:
        if bar.kind in (BarKind.UNUSED, BarKind.MEM64_UPPER) or not bar.start or bar.size <= 0:
            continue
        if bar.kind is BarKind.IO:
            if bar.start + bar.size > PORTS:
                raise GrantsError(f"BAR {bar.index}: I/O ports {bar.start:#x}+{bar.size:#x}")
            ioports.append((bar.start, bar.size))
        else:
            # Every page the range touches; libxl's rounding gives the same for the aligned
            # BARs PCI requires.
            first = bar.start >> PAGE_SHIFT
            last = (bar.start + bar.size - 1) >> PAGE_SHIFT
            if last >= MAX_MFN:
                raise GrantsError(f"BAR {bar.index}: memory {bar.start:#x}+{bar.size:#x}")
            iomem.append((first, last - first + 1))
    gsi = None
    if device.read(INTERRUPT_PIN.offset, INTERRUPT_PIN.width):
        irq = device.host_irq()
        if not 0 <= irq < MAX_GSI:
            raise GrantsError(f"dom0's IRQ {irq} is not a GSI")
        gsi = irq or None
    return Grants(tuple(iomem), tuple(ioports), gsi)


def subtract(ranges: Iterable[Range], keep: Iterable[Range]) -> list[Range]:
    """The parts of `ranges` not covered by `keep`: what may be revoked when other devices of
    the same guest still need some pages or ports (two small BARs may share a page)."""
    kept = sorted(keep)
    out: list[Range] = []
    for first, count in ranges:
        pieces = [(first, first + count - 1)]
        for k_first, k_count in kept:
            k_last = k_first + k_count - 1
            next_pieces = []
            for lo, hi in pieces:
                if k_last < lo or k_first > hi:
                    next_pieces.append((lo, hi))
                    continue
                if lo < k_first:
                    next_pieces.append((lo, k_first - 1))
                if hi > k_last:
                    next_pieces.append((k_last + 1, hi))
            pieces = next_pieces
        out += [(lo, hi - lo + 1) for lo, hi in pieces]
    return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ranges(data: object, limit: int, what: str) -> tuple[Range, ...]:
    if not isinstance(data, list) or len(data) > MAX_RANGES:
        raise GrantsError(f"grants: {what} is not a short list")
    out: list[Range] = []
    for item in data:
        if not (isinstance(item, list) and len(item) == 2 and all(_is_int(v) for v in item)):
            raise GrantsError(f"grants: {what} entry {item!r:.40}")
        first, count = item
        if not (first >= 0 and count > 0 and first + count <= limit):
            raise GrantsError(f"grants: {what} range {first:#x}+{count:#x}")
        out.append((first, count))
    return tuple(out)
