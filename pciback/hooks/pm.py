"""Side effects of the Power Management capability: D-state changes through the host."""

from __future__ import annotations

from pciback.engine.chain import STD_END
from pciback.engine.hookapi import HookContext, seize_action, write_hook
from pciback.errors import PciOpError, XenPciError
from pciback.generated.names import PM
from pciback.ports.bus import PhysicalDevice

PMC, PMCSR = PM.PMC, PM.PMCSR


@write_hook("power_state")
def power_state(ctx: HookContext, old: int, new: int) -> bool:
    """Ask the host's PCI core for the new D-state, as Linux's pm_ctrl_write does.

    The field itself is read-only: the device's PMCSR only changes through the port, which
    knows the delays and the state to restore. What pci_set_power_state refuses is refused
    (the op fails with access_denied, Linux's PCIBIOS_SET_FAILED): a state the function does
    not support, and a move from a low-power state to a shallower one other than D0 (D3hot to
    D1, D2 to D1, ...: Linux's "can only go deeper", -EINVAL). `old` is the state the device's
    PMCSR reports, where Linux keeps its own `current_state`; the port keeps the two equal.
    """
    if old == new:
        return False
    if old != 0 and new != 0 and new < old:
        raise PciOpError(
            XenPciError.ACCESS_DENIED,
            f"D{old} to D{new}: from a low-power state only D0 or a deeper state",
        )
    # The port moves the function through the first PM capability of the chain: a device
    # listing another one before this (hidden, or out of reach) gets no D-state from here.
    first = next(p.found.offset for p in ctx.space.standard if p.found.ident == PM.id)
    if first != ctx.block_base:
        raise PciOpError(
            XenPciError.ACCESS_DENIED,
            f"PM capability at {ctx.block_base:#x} is not the function's first ({first:#x})",
        )
    device = ctx.space.device
    pmc = device.read(ctx.block_base + PMC.offset, PMC.width)
    if (new == 1 and not pmc & PMC.D1_SUPPORT.mask) or (new == 2 and not pmc & PMC.D2_SUPPORT.mask):
        raise PciOpError(XenPciError.ACCESS_DENIED, f"D{new} is not supported by the function")
    try:
        device.set_power_state(new)
    except ValueError as exc:
        raise PciOpError(XenPciError.ACCESS_DENIED, str(exc)) from None
    return False


@seize_action("pme_off")
def pme_off(device: PhysicalDevice, offset: int) -> None:
    """PME signalling off before a guest gets the device, as Linux's pm_ctrl_init: PMEs are
    the host's, and a guest can neither turn this on nor field what it would raise."""
    at = offset + PMCSR.offset
    if at + PMCSR.width > min(device.config_size, STD_END):
        return  # PMCSR would lie in extended space (or past the end): nothing of PM's
    pmcsr = device.read(at, PMCSR.width)
    if pmcsr & PMCSR.PME_ENABLE.mask:
        # PME status is write-1-to-clear: written as 0, a pending PME stays for the host.
        off = PMCSR.PME_ENABLE.mask | PMCSR.PME_STATUS.mask
        device.write(at, PMCSR.width, pmcsr & ~off)
