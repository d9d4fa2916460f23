"""Operator quirk fields (the `quirks` attribute) as config-space engine registers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pciback.control.hide import QuirkSpec
from pciback.tables import Access, Backing, Field, Register

if TYPE_CHECKING:
    from pciback.control.stub import StubPool
    from pciback.ports.hostbus import HostBus


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


def quirk_ignored(bus: HostBus, pool: StubPool, spec: QuirkSpec) -> str | None:
    """Why the device's guest view would ignore this quirk field (it would cover the
    capability chain, a hidden capability or part of a described register, or not fit), or
    None when the view takes it. The view is built as the data path builds it, with the
    device's other quirk fields, over a copy of the device's config space (building a view
    may write to its device, PME off, and a guest may hold this one), and thrown away."""
    from pciback.control.stub import save_config
    from pciback.engine import build_config_space  # loads the generated tables
    from pciback.sim.device import SimDevice

    permissive, existing = pool.policy(spec.address)  # refuses a device not in the pool
    register = quirk_register(spec)
    others = [quirk_register(q) for q in existing if q.offset != spec.offset]
    copy = SimDevice(spec.address, save_config(bus.device(spec.address)))
    space = build_config_space(copy, permissive=permissive, extra_registers=[*others, register])
    mine = f"quirk register {register.name} "
    return next((p for p in space.problems if p.startswith(mine)), None)
