"""What a guest can have changed on a device beyond its header: the bits a release writes back
from the config space saved when the device was seized.

Linux's backend reloads the whole saved state of the function when a guest lets it go. Writing
all 4 KiB back blindly would also write ones into bits that clear on a one (error and event
status) and into registers whose writes act (a VPD address starts a transfer). So the restore
covers exactly a guest's reach: every bit a guest in permissive mode (the wider mode) writes
through to the device, as the audit of the device under the policy lists it, the same model a
reviewer reads. A register's write-1-to-clear bits are written as zeros.

The layout comes from the saved bytes themselves (a simulated copy), not from the device:
building a view writes to its device (PME off), and the device is the one being given back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pciback.audit.model import HEADER_END, Category, Row, audit
from pciback.dumps.device import SimDevice
from pciback.policy import build_config_space
from pciback.tables import Register


@dataclass(frozen=True, slots=True)
class RestoreSpan:
    """One register, or one byte no register describes, that a guest writes through to."""

    offset: int
    width: int  # bytes: 1, 2 or 4
    mask: int  # the bits a guest can change on the device
    clear: int = 0  # the register's write-1-to-clear bits, written as zeros

    def write_value(self, current: int, saved: int) -> int | None:
        """What to write for the saved bits to be back, given what the device holds now;
        None when they already are."""
        if not (current ^ saved) & self.mask:
            return None
        return (current & ~self.mask & ~self.clear) | (saved & self.mask)


def guest_reach(
    address: str, saved: bytes, extra_registers: Iterable[Register] = ()
) -> list[RestoreSpan]:
    """The spans past the header (`HEADER_END`) that a permissive guest writes through to on
    the function whose config space at seize was `saved`; `extra_registers`: its operator
    quirk fields. In address order."""
    copy = SimDevice(address, saved)
    space = build_config_space(copy, permissive=True, extra_registers=extra_registers)
    spans: list[RestoreSpan] = []
    for row in audit(space, address).rows:
        if row.offset >= HEADER_END:
            spans.extend(_spans(row))
    return spans


def _spans(row: Row) -> list[RestoreSpan]:
    mask = clear = 0
    for fld in row.fields:
        category = fld.category(permissive=True)
        if category is Category.RW and fld.reaches_device:
            mask |= fld.mask
        elif category is Category.RW1C:
            clear |= fld.mask
    if not mask:
        return []
    if row.width in (1, 2, 4):
        return [RestoreSpan(row.offset, row.width, mask, clear)]
    # A run of undescribed bytes, or a register wider than one access: byte by byte, so no
    # write reaches a neighbour the row does not own.
    return [
        RestoreSpan(row.offset + i, 1, (mask >> (8 * i)) & 0xFF, (clear >> (8 * i)) & 0xFF)
        for i in range(row.width)
        if (mask >> (8 * i)) & 0xFF
    ]
