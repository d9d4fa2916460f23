"""Operator quirk fields (the `quirks` attribute) as config-space engine registers."""

from __future__ import annotations

from pciback.control.hide import QuirkSpec
from pciback.tables import Access, Backing, Field, Register


def quirk_register(spec: QuirkSpec) -> Register:
    """The bits of `mask` read and write through to the device; the register's other bits
    read from the device and ignore guest writes, as a field of the Linux driver would."""
    full = (1 << (8 * spec.size)) - 1
    source = f"operator quirk {spec.address}-{spec.offset:x}:{spec.size}:{spec.mask:x}"
    fields = []
    if spec.mask & full:
        fields.append(Field("passthrough", spec.mask & full, Backing.HW, Access.RW, source))
    if full & ~spec.mask:
        fields.append(Field("rest", full & ~spec.mask, Backing.HW, Access.RO, source))
    return Register(
        name=f"quirk_{spec.offset:03x}",
        offset=spec.offset,
        width=spec.size,
        fields=tuple(fields),
        source=source,
        reason="added by the operator through the quirks control",
    )
