"""MSI and MSI-X: the control bits a guest may toggle, and the MSI-X layout checked at seize.

Interrupts are normally set up by the enable_msi / enable_msix ops, which map PIRQs first. A
config write that flips an enable bit bypasses that mapping, so it is taken only when the
operator allowed interrupt control (Linux's allow_interrupt_control, used by device models that
drive the capability themselves), and never while the other message type is on. INTx in use
is no bar: a function with MSI or MSI-X on does not use it, and Linux turns MSI on before it
turns INTx off (xen-pciback allows that order too).
"""

from __future__ import annotations

from pciback.engine.chain import STD_END
from pciback.engine.hookapi import HookContext, capability_check, write_hook
from pciback.errors import PciOpError, XenPciError
from pciback.hooks.header import COMMAND, COMMAND_INTX_DISABLE
from pciback.ports.bus import BarKind, PhysicalDevice

CAP_MSI = 0x05
CAP_MSIX = 0x11
INTX = 0  # in the set of interrupt types in use, beside the capability IDs
CONTROL = 0x02  # from the capability's start
MSI_ENABLE = 1 << 0
MSIX_FUNCTION_MASK = 1 << 14
MSIX_ENABLE = 1 << 15
MSIX_TABLE_SIZE = 0x7FF
MSIX_TABLE = 0x04
MSIX_PBA = 0x08
MSIX_BIR = 0x7
MSIX_ENTRY_SIZE = 16
_MEMORY_BARS = (BarKind.MEM32, BarKind.MEM64)


def _enabled(ctx: HookContext, cap_id: int, bit: int) -> bool:
    """Whether a capability's enable bit is set on the device, hidden capabilities included:
    a hidden capability can still be live on the device."""
    for placed in ctx.space.standard:
        if placed.found.ident == cap_id:
            return bool(ctx.space.device.read(placed.found.offset + CONTROL, 2) & bit)
    return False


def _in_use(ctx: HookContext) -> set[int]:
    """The interrupt types the device uses now, judged from the device as Linux does."""
    types = set()
    if _enabled(ctx, CAP_MSI, MSI_ENABLE):
        types.add(CAP_MSI)
    if _enabled(ctx, CAP_MSIX, MSIX_ENABLE):
        types.add(CAP_MSIX)
    if not types and not ctx.space.device.read(COMMAND, 2) & COMMAND_INTX_DISABLE:
        types.add(INTX)  # a function with MSI/MSI-X on cannot use it, so only then
    return types


def _toggle(ctx: HookContext, bit: int, on: bool) -> None:
    device = ctx.space.device
    current = device.read(ctx.offset, 2)
    wanted = current | bit if on else current & ~bit
    if wanted != current:
        device.write(ctx.offset, 2, wanted)


def _control(ctx: HookContext, old: int, new: int, cap_id: int, bit: int, what: str) -> bool:
    if old == new:
        return False
    if not ctx.space.allow_interrupt_control:
        raise PciOpError(
            XenPciError.ACCESS_DENIED, f"{what} changes only through the op (interrupt control)"
        )
    if new and bit != MSIX_FUNCTION_MASK and not _in_use(ctx) <= {cap_id, INTX}:
        raise PciOpError(XenPciError.ACCESS_DENIED, f"{what}: another interrupt type is in use")
    _toggle(ctx, bit, bool(new))
    return False


@write_hook("msi_enable")
def msi_enable(ctx: HookContext, old: int, new: int) -> bool:
    return _control(ctx, old, new, CAP_MSI, MSI_ENABLE, "MSI enable")


@write_hook("msix_enable")
def msix_enable(ctx: HookContext, old: int, new: int) -> bool:
    return _control(ctx, old, new, CAP_MSIX, MSIX_ENABLE, "MSI-X enable")


@write_hook("msix_function_mask")
def msix_function_mask(ctx: HookContext, old: int, new: int) -> bool:
    return _control(ctx, old, new, CAP_MSIX, MSIX_FUNCTION_MASK, "MSI-X function mask")


@capability_check(CAP_MSIX)
def msix_layout(device: PhysicalDevice, offset: int) -> str | None:
    """Table and PBA must lie inside an implemented memory BAR of the function.

    The BIR, offsets and table size come from the device; a table outside its BAR would have
    the host program (and Xen write-protect) memory that belongs to something else.
    """
    if offset + MSIX_PBA + 4 > min(device.config_size, STD_END):
        return f"MSI-X capability at {offset:#x} runs past the end of standard config space"
    entries = (device.read(offset + CONTROL, 2) & MSIX_TABLE_SIZE) + 1
    bars = {bar.index: bar for bar in device.bars() if bar.index < 6}
    for name, reg, size in (
        ("table", MSIX_TABLE, entries * MSIX_ENTRY_SIZE),
        ("PBA", MSIX_PBA, (entries + 63) // 64 * 8),
    ):
        value = device.read(offset + reg, 4)
        bir, start = value & MSIX_BIR, value & ~MSIX_BIR
        bar = bars.get(bir)
        if bar is None or bar.kind not in _MEMORY_BARS:
            return f"MSI-X {name} BIR {bir} names no memory BAR of the function"
        if start + size > bar.size:
            return (
                f"MSI-X {name} at {start:#x}+{size:#x} does not fit BAR{bir} ({bar.size:#x} bytes)"
            )
    return None
