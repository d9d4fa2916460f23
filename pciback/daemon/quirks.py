"""Whether a guest's view would take an operator's quirk field, asked before it is stored."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pciback.control.hide import QuirkSpec
from pciback.control.quirks import quirk_register

if TYPE_CHECKING:
    from pciback.control.stub import StubPool
    from pciback.ports.hostbus import HostBus


def quirk_ignored(bus: HostBus, pool: StubPool, spec: QuirkSpec) -> str | None:
    """Why the device's guest view would ignore this quirk field (it would cover the
    capability chain, a hidden capability or part of a described register, or not fit), or
    None when the view takes it. The view is built as the data path builds it, with the
    device's other quirk fields, over a copy of the device's config space (building a view
    may write to its device, PME off, and a guest may hold this one), and thrown away."""
    from pciback.control.stub import save_config
    from pciback.dumps.device import SimDevice
    from pciback.policy import build_config_space  # loads the generated tables

    permissive, existing = pool.policy(spec.address)  # refuses a device not in the pool
    register = quirk_register(spec)
    others = [quirk_register(q) for q in existing if q.offset != spec.offset]
    copy = SimDevice(spec.address, save_config(bus.device(spec.address)))
    space = build_config_space(copy, permissive=permissive, extra_registers=[*others, register])
    mine = f"quirk register {register.name} "
    return next((p for p in space.problems if p.startswith(mine)), None)
