"""What a guest can change on the device: per register, the bits whose writes land in the
device, directly (device-backed and writable) or through a write hook (which acts on the
device itself: what it does is its declaration's reason)."""

from __future__ import annotations

from dataclasses import dataclass

from pciback.audit.model import Audit, Category, FieldAudit, Row

_WRITABLE = (Category.RW, Category.RW1C)


@dataclass(frozen=True, slots=True)
class Reach:
    row: Row
    direct: tuple[FieldAudit, ...]  # device-backed fields a guest write changes
    hooked: tuple[FieldAudit, ...]  # fields whose write runs a hook (it may touch the device)

    @property
    def direct_mask(self) -> int:
        mask = 0
        for fld in self.direct:
            mask |= fld.mask
        return mask


def reach(audit: Audit, permissive: bool) -> list[Reach]:
    found: list[Reach] = []
    for row in audit.rows:
        direct = tuple(
            f for f in row.fields if f.reaches_device and f.category(permissive) in _WRITABLE
        )
        hooked = tuple(f for f in row.fields if "on_write" in f.hook)
        if direct or hooked:
            found.append(Reach(row, direct, hooked))
    return found
