"""Side effects of the configuration header: command bits, BIST, BARs, the capability list."""

from __future__ import annotations

from pciback.engine.hookapi import HookContext, read_hook, write_hook
from pciback.generated.names import (
    COMMON_HEADER,
    EXPANSION_ROM,
    IO_BAR,
    MEMORY_BAR,
    TYPE0,
    TYPE1,
)
from pciback.ports.bus import BarKind, BarResource

COMMAND = COMMON_HEADER.COMMAND
DECODE = COMMAND.IO_SPACE.mask | COMMAND.MEMORY_SPACE.mask


def _set_command_bits(ctx: HookContext, bits: int, on: bool) -> None:
    device = ctx.space.device
    current = device.read(COMMAND.offset, COMMAND.width)
    wanted = current | bits if on else current & ~bits
    if wanted != current:
        device.write(COMMAND.offset, COMMAND.width, wanted)


@write_hook("decode_enable")
def decode_enable(ctx: HookContext, old: int, new: int) -> bool:
    """Decode on asks the host to enable the device; it is never switched off under the host."""
    state = ctx.state
    if "enabled" not in state:
        state["enabled"] = bool(ctx.old_register & DECODE)
    wants = bool(ctx.new_register & DECODE)
    if wants and not state["enabled"]:
        bars = ctx.space.device.bars()
        decode = 0
        if any(b.kind is BarKind.IO for b in bars):
            decode |= COMMAND.IO_SPACE.mask
        if any(b.kind in (BarKind.MEM32, BarKind.MEM64, BarKind.ROM) for b in bars):
            decode |= COMMAND.MEMORY_SPACE.mask
        _set_command_bits(ctx, decode, True)
    elif not wants and state["enabled"]:
        # Disabling a device stops its DMA; decode stays on for the host (XSA-120).
        _set_command_bits(ctx, COMMAND.BUS_MASTER.mask, False)
    state["enabled"] = wants
    return True


@write_hook("bus_master")
def bus_master(ctx: HookContext, old: int, new: int) -> bool:
    if old != new:
        _set_command_bits(ctx, COMMAND.BUS_MASTER.mask, bool(new))
    return True


@write_hook("memory_write_invalidate")
def memory_write_invalidate(ctx: HookContext, old: int, new: int) -> bool:
    # MWI needs a cache line size the device accepts; 0 means the host never set one.
    cache_line = COMMON_HEADER.CACHE_LINE_SIZE
    if new and not ctx.space.device.read(cache_line.offset, cache_line.width):
        return False
    if old != new:
        _set_command_bits(ctx, COMMAND.MWI_ENABLE.mask, bool(new))
    return True


@write_hook("intx_disable")
def intx_disable(ctx: HookContext, old: int, new: int) -> bool:
    if ctx.space.allow_interrupt_control and old != new:
        _set_command_bits(ctx, COMMAND.INTX_DISABLE.mask, bool(new))
    return True


@write_hook("bist_start")
def bist_start(ctx: HookContext, old: int, new: int) -> bool:
    """Start BIST only where the function says it has one (`capable`, read from the device).

    Called on every write of the byte: a write that does not start BIST reaches nothing, as a
    running test is the device's to end (Linux drops such a write too unless only the start
    bit differs from the device's byte).
    """
    return bool(new) and bool(ctx.field("capable", ctx.old_register))


# -- BARs ------------------------------------------------------------------------------------------
def _bar_of(ctx: HookContext) -> BarResource | None:
    # The layout the view was built for, read once at seize: not the device again per BAR.
    bridge = ctx.space.header_type == TYPE1.header_type
    rom = TYPE1.ROM.offset if bridge else TYPE0.ROM.offset
    bar0 = TYPE0.BAR0  # at the same offset in a bridge's header
    index = 6 if ctx.offset == rom else (ctx.offset - bar0.offset) // bar0.width
    return next((b for b in ctx.space.device.bars() if b.index == index), None)


# The bits of a BAR that hold its address, by its kind (the policy's layouts); a 32- or 64-bit
# memory BAR's otherwise.
_ADDRESS_BITS = {
    BarKind.IO: IO_BAR.BAR.ADDRESS,
    BarKind.ROM: EXPANSION_ROM.BAR.ADDRESS,
    BarKind.MEM64_UPPER: MEMORY_BAR.UPPER.ADDRESS,
}


def _address_mask(bar: BarResource | None) -> int:
    """The bits of the register that hold the address (a sizing write sets them all)."""
    if bar is None or bar.kind is BarKind.UNUSED:
        return 0xFFFFFFFF
    return _ADDRESS_BITS.get(bar.kind, MEMORY_BAR.LOWER.ADDRESS).mask


def size_mask(bar: BarResource | None, original: int) -> int:
    """What the register reads after a sizing write: the size's address bits and the flags."""
    if bar is None or bar.kind is BarKind.UNUSED or bar.size == 0:
        return 0
    if bar.kind is BarKind.MEM64_UPPER:
        return (~(bar.size - 1) >> 32) & 0xFFFFFFFF
    mask = _address_mask(bar)
    flags = original & ~mask & 0xFFFFFFFF
    if bar.kind is BarKind.ROM:
        flags &= ~EXPANSION_ROM.BAR.ENABLE.mask  # not part of the size answer
    return (~(bar.size - 1) & mask) | flags


def _masks(ctx: HookContext) -> tuple[int, int]:
    """(address bits, the sizing answer) of this BAR. The host's resources do not change while
    a view lives, so they are worked out on first use and kept with the register."""
    known = ctx.state.get("bar_masks")
    if isinstance(known, tuple):
        return known
    bar = _bar_of(ctx)
    masks = (_address_mask(bar), size_mask(bar, ctx.register.cached))
    ctx.state["bar_masks"] = masks
    return masks


@write_hook("bar_write")
def bar_write(ctx: HookContext, old: int, new: int) -> bool:
    state = ctx.state
    known = state.get("bar_masks")  # _masks, without a call on every write but the first
    address_bits = known[0] if isinstance(known, tuple) else _masks(ctx)[0]
    if new & address_bits == address_bits:
        state["sizing"] = True
        return False
    state["sizing"] = False
    original = ctx.register.cached
    if new == original:
        device = ctx.space.device
        if device.read(ctx.offset, 4) != original:
            device.write(ctx.offset, 4, original)  # the one write a guest may make: restoring
    return False


@read_hook("bar_read")
def bar_read(ctx: HookContext, value: int) -> int:
    if ctx.state.get("sizing"):
        return _masks(ctx)[1]
    return value


# -- the capability list ---------------------------------------------------------------------------
@read_hook("capability_pointer", view_constant=True)
def capability_pointer(ctx: HookContext, value: int) -> int:
    return ctx.space.first_capability


@read_hook("host_irq")
def host_irq(ctx: HookContext, value: int) -> int:
    return ctx.space.device.host_irq() & 0xFF


@read_hook("capability_list", view_constant=True)
def capability_list(ctx: HookContext, value: int) -> int:
    return 1 if ctx.space.exposed else 0
