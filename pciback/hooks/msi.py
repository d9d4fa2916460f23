"""MSI and MSI-X: the control bits a guest may toggle, and the MSI-X layout checked at seize.

Interrupts are normally set up by the enable_msi / enable_msix ops, which map PIRQs first. A
config write that flips an enable bit bypasses that mapping, so it is taken only when the
operator allowed interrupt control (Linux's allow_interrupt_control, used by device models that
drive the capability themselves), and never while the other message type is on; the bit is
then written by the view's interrupt owner (InterruptControl), never by these hooks. INTx in use
is no bar: a function with MSI or MSI-X on does not use it, and Linux turns MSI on before it
turns INTx off (xen-pciback allows that order too).
"""

from __future__ import annotations

from pciback.engine.chain import STD_END
from pciback.engine.hookapi import HookContext, capability_check, write_hook
from pciback.errors import PciOpError, XenPciError
from pciback.generated.names import MSI, MSIX, MSIX_TABLE_ENTRY
from pciback.hooks.header import COMMAND
from pciback.ports.bus import BarKind, PhysicalDevice

INTX = 0  # in the set of interrupt types in use, beside the capability IDs
_MEMORY_BARS = (BarKind.MEM32, BarKind.MEM64)


def _enabled(ctx: HookContext, cap_id: int, bit: int) -> bool:
    """Whether a capability's enable bit is set on the device, hidden capabilities included:
    a hidden capability can still be live on the device."""
    control = MSI.CONTROL if cap_id == MSI.id else MSIX.CONTROL
    for placed in ctx.space.standard:
        if placed.found.ident == cap_id:
            at = placed.found.offset + control.offset
            return bool(ctx.space.device.read(at, control.width) & bit)
    return False


def _in_use(ctx: HookContext) -> set[int]:
    """The interrupt types the device uses now, judged from the device as Linux does."""
    types = set()
    if _enabled(ctx, MSI.id, MSI.CONTROL.ENABLE.mask):
        types.add(MSI.id)
    if _enabled(ctx, MSIX.id, MSIX.CONTROL.ENABLE.mask):
        types.add(MSIX.id)
    intx_disabled = ctx.space.device.read(COMMAND.offset, COMMAND.width) & COMMAND.INTX_DISABLE.mask
    if not types and not intx_disabled:
        types.add(INTX)  # a function with MSI/MSI-X on cannot use it, so only then
    return types


def _toggle(ctx: HookContext, bit: int, on: bool) -> None:
    """The device's bit is the interrupt owner's to write (pciback.engine.interrupt_owner)."""
    owner = ctx.space.interrupts
    if owner is None:
        raise PciOpError(XenPciError.ACCESS_DENIED, "no interrupt owner serves this view")
    owner.write_control_bit(ctx.offset, bit, on)


def _control(ctx: HookContext, old: int, new: int, cap_id: int, bit: int, what: str) -> bool:
    if old == new:
        return False
    if not ctx.space.allow_interrupt_control:
        raise PciOpError(
            XenPciError.ACCESS_DENIED, f"{what} changes only through the op (interrupt control)"
        )
    if new and bit != MSIX.CONTROL.FUNCTION_MASK.mask and not _in_use(ctx) <= {cap_id, INTX}:
        raise PciOpError(XenPciError.ACCESS_DENIED, f"{what}: another interrupt type is in use")
    _toggle(ctx, bit, bool(new))
    return False


@write_hook("msi_enable")
def msi_enable(ctx: HookContext, old: int, new: int) -> bool:
    return _control(ctx, old, new, MSI.id, MSI.CONTROL.ENABLE.mask, "MSI enable")


@write_hook("msix_enable")
def msix_enable(ctx: HookContext, old: int, new: int) -> bool:
    return _control(ctx, old, new, MSIX.id, MSIX.CONTROL.ENABLE.mask, "MSI-X enable")


@write_hook("msix_function_mask")
def msix_function_mask(ctx: HookContext, old: int, new: int) -> bool:
    mask = MSIX.CONTROL.FUNCTION_MASK.mask
    return _control(ctx, old, new, MSIX.id, mask, "MSI-X function mask")


@capability_check("msix_layout")
def msix_layout(device: PhysicalDevice, offset: int) -> str | None:
    """Table and PBA must lie inside an implemented memory BAR of the function.

    The BIR, offsets and table size come from the device; a table outside its BAR would have
    the host program (and Xen write-protect) memory that belongs to something else.
    """
    if offset + MSIX.length > min(device.config_size, STD_END):
        return f"MSI-X capability at {offset:#x} runs past the end of standard config space"
    control = MSIX.CONTROL
    entries = control.TABLE_SIZE.get(device.read(offset + control.offset, control.width)) + 1
    bars = {bar.index: bar for bar in device.bars() if bar.index < 6}
    for name, reg, size in (
        ("table", MSIX.TABLE.offset, entries * MSIX_TABLE_ENTRY.length),
        ("PBA", MSIX.PBA.offset, (entries + 63) // 64 * 8),
    ):
        value = device.read(offset + reg, 4)
        # Table and PBA name their BAR the same way.
        bir, start = MSIX.TABLE.BIR.get(value), value & MSIX.TABLE.OFFSET.mask
        bar = bars.get(bir)
        if bar is None or bar.kind not in _MEMORY_BARS:
            return f"MSI-X {name} BIR {bir} names no memory BAR of the function"
        if start + size > bar.size:
            return (
                f"MSI-X {name} at {start:#x}+{size:#x} does not fit BAR{bir} ({bar.size:#x} bytes)"
            )
    return None
