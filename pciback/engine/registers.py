"""One register of one device: the merge of backing and access classes, bit by bit.

Masks are precomputed once per device so that the per-access path is a few integer operations.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from pciback.engine.hookapi import HookContext, ReadHook, WriteHook, is_view_constant
from pciback.tables import Access, Backing, Edge, Field, Register

if TYPE_CHECKING:
    from pciback.engine.space import ConfigSpace

log = logging.getLogger("pciback.engine")


class AccessMasks:
    """The bits a guest write may change under one mode (normal or permissive)."""

    __slots__ = ("never_echoed", "rsvdz", "rw", "rw1c", "visible", "writable", "zero")

    def __init__(self, fields: tuple[Field, ...], permissive: bool, hw_rw1c: int) -> None:
        self.rw = self.rw1c = self.rsvdz = self.zero = 0
        for fld in fields:
            access = fld.permissive if permissive and fld.permissive else fld.access
            if access is Access.RW:
                self.rw |= fld.mask
            elif access is Access.RW1C:
                self.rw1c |= fld.mask
            elif access is Access.RSVDZ:
                self.rsvdz |= fld.mask
            if access in (Access.RSVDP, Access.RSVDZ):
                self.zero |= fld.mask  # reserved in this mode: reads 0
        self.visible = ~self.zero
        # Worked out once rather than on every write:
        self.writable = self.rw | self.rw1c | self.rsvdz  # bits a write acts on at all
        self.never_echoed = self.rw1c | hw_rw1c  # rw1c bits read as 0 in the old value


def _rises(before: int, after: int) -> bool:
    return not before and bool(after)


def _falls(before: int, after: int) -> bool:
    return bool(before) and not after


EdgeMade = Callable[[int, int], bool]
"""`made(before, after)`: whether a write from `before` to `after` makes a hook's edge."""
# None: every write runs the hook (no test to call). A change is the C `!=`, no Python frame.
_EDGE_MADE: dict[Edge, EdgeMade | None] = {
    Edge.ANY: None,
    Edge.CHANGE: operator.ne,
    Edge.RISING: _rises,
    Edge.FALLING: _falls,
}


class WriteHookEntry(NamedTuple):
    """A field's write hook with what the write path needs of the field, worked out once."""

    mask: int
    shift: int
    made: EdgeMade | None  # the field's edge as its test (_EDGE_MADE)
    hook: WriteHook


class RegisterInstance:
    __slots__ = (
        "_read_ctx",
        "_write_ctx",
        "_writers",
        "block",
        "block_base",
        "cached",
        "const",
        "end",
        "fixed",
        "hw_mask",
        "hw_read",
        "hw_rw1c",
        "masks",
        "offset",
        "permissive_only",
        "read_hooks",
        "reg",
        "shadow",
        "shadow_mask",
        "space",
        "state",
        "static",
        "width",
        "write_hooks",
    )

    def __init__(
        self,
        space: ConfigSpace,
        reg: Register,
        offset: int,
        block_base: int,
        block: str,
        rw1c: int = 0,
    ) -> None:
        """`block`: the name of the table the register comes from. `rw1c`: device bits known
        to be write-1-to-clear beyond those the fields declare (what the register a quirk
        replaces declared): never echoed back either."""
        self.space = space
        self.reg = reg
        self.offset = offset
        self.block_base = block_base
        self.block = block
        self.width = reg.width
        self.end = offset + reg.width
        self.state: dict[str, Any] = {}  # the hooks' (a BAR's sizing latch...), saved on restart
        initial = space.device.read(offset, reg.width)  # the one read at seize time
        self.hw_mask = self.shadow_mask = self.hw_rw1c = 0
        self.cached = self.const = self.shadow = 0
        for fld in reg.fields:
            mask = fld.mask
            if fld.backing is Backing.HW:
                self.hw_mask |= mask
                if Access.RW1C in (fld.access, fld.permissive):
                    self.hw_rw1c |= mask
            elif fld.backing is Backing.CACHED:
                self.cached |= initial & mask
            elif fld.backing is Backing.CONST:
                self.const |= ((fld.init or 0) << fld.shift) & mask
            else:
                self.shadow_mask |= mask
                start = initial if fld.init is None else fld.init << fld.shift
                self.shadow |= start & mask
        self.hw_rw1c |= rw1c & self.hw_mask
        # The parts of the merge that never change, so that a read is a few operations.
        self.static = self.cached | self.const
        self.masks = (
            AccessMasks(reg.fields, False, self.hw_rw1c),
            AccessMasks(reg.fields, True, self.hw_rw1c),
        )
        normal, permissive = self.masks
        # Per mode, whether a read needs the device: device bits that read 0 in a mode
        # (reserved ones) are only needed by a write, which must preserve them.
        self.hw_read = (
            bool(self.hw_mask & normal.visible),
            bool(self.hw_mask & permissive.visible),
        )
        # Bits whose write is dropped for lack of permissive mode; a field with a write hook
        # is acted on by its hook either way, so dropping its data is no loss worth a warning.
        hooked = 0
        for fld in reg.fields:
            if fld.on_write:
                hooked |= fld.mask
        granted = permissive.rw | permissive.rw1c
        self.permissive_only = granted & ~(normal.rw | normal.rw1c) & ~hooked
        # (mask, shift, hook): the shift is worked out once, not on every access.
        implementations = space.policy.implementations
        self.read_hooks: tuple[tuple[int, int, ReadHook], ...] = tuple(
            (f.mask, f.shift, implementations.read[f.on_read]) for f in reg.fields if f.on_read
        )
        self.write_hooks: tuple[WriteHookEntry, ...] = tuple(
            WriteHookEntry(f.mask, f.shift, _EDGE_MADE[f.edge], implementations.write[f.on_write])
            for f in reg.fields
            if f.on_write
        )
        # The guest-visible value when nothing can ever change it: no device bits, no shadow
        # (which writes and restored snapshots change) and no read hook. None otherwise.
        self.fixed: int | None = None
        self._read_ctx: HookContext | None = None
        self._write_ctx: HookContext | None = None
        self._writers: dict[tuple[int, int, bool], Callable[[int], None]] = {}  # see `writer`
        same_in_both_modes = normal.zero == permissive.zero
        reads_device = any(self.hw_read)
        if not (reads_device or self.shadow_mask or self.read_hooks) and same_in_both_modes:
            self.fixed = self._compose(0, normal)

    def field_named(self, name: str) -> Field:
        for fld in self.reg.fields:
            if fld.name == name:
                return fld
        raise KeyError(f"register {self.reg.name} has no field {name}")

    # -- reads -----------------------------------------------------------------------------------
    def _compose(self, hw: int, masks: AccessMasks) -> int:
        """Which bits read 0 is the access's decision, so it follows the mode."""
        return ((hw & self.hw_mask) | self.static | self.shadow) & masks.visible

    def merge(self, permissive: bool) -> tuple[int, int, int, Callable[[int], int] | None]:
        """The register as the guest sees it in one mode, as (device bits, fixed bits, visible
        bits of the shadow, read hooks or None): `hooks((hw & device) | fixed | (shadow &
        visible))` for the device's value `hw`.
        Read plans, kept per mode (ConfigSpace), take this once. A field whose hook answers
        from the view alone (view_constant) has its answer among the fixed bits, and no hook
        left to call, when every read hook of the register is such."""
        visible = self.masks[permissive].visible
        hw_mask, static = self.hw_mask & visible, self.static & visible
        if not self.read_hooks:
            return hw_mask, static, visible, None
        if not all(is_view_constant(read) for _, _, read in self.read_hooks):
            return hw_mask, static, visible, self.hooked
        # Hooks of this kind ignore the value; what they answer replaces their fields.
        answer = self.hooked(0)
        folded = 0
        for mask, _, _ in self.read_hooks:
            folded |= mask
        return (
            hw_mask & ~folded,
            (static & ~folded) | (answer & folded),
            visible & ~folded,
            None,
        )

    def reader(self, permissive: bool) -> Callable[[], int]:
        """The whole register as the guest sees it in one mode, read from the device if it
        must be, with the mode's merge (see `merge`) folded in: what a read plan calls."""
        if self.fixed is not None:
            fixed = self.fixed
            return lambda: fixed
        hw_mask, static, visible, hooked = self.merge(permissive)
        space, offset, width = self.space, self.offset, self.width
        # The shadow changes with writes and restores: read at each access, never folded in.
        if not hw_mask:  # no device bit visible in this mode, or none left once folded
            if hooked is None:
                return lambda: static | (self.shadow & visible)
            return lambda: hooked(static | (self.shadow & visible))
        if hooked is None:
            return lambda: (
                (space.device.read(offset, width) & hw_mask) | static | (self.shadow & visible)
            )
        return lambda: hooked(
            (space.device.read(offset, width) & hw_mask) | static | (self.shadow & visible)
        )

    def hooked(self, value: int) -> int:
        """`value` as the read hooks show it."""
        # One context per register, reused: making one costs as much as a short hook, and
        # a context is only valid during the hook call (see HookContext).
        ctx = self._read_ctx
        if ctx is None:
            ctx = self._read_ctx = HookContext(self.space, self, value, value)
        ctx.old_register = ctx.new_register = value
        for mask, shift, read in self.read_hooks:
            shown = read(ctx, (value & mask) >> shift)
            value = (value & ~mask) | ((shown << shift) & mask)
        return value

    # -- writes ----------------------------------------------------------------------------------
    def write(self, start: int, length: int, data: int) -> None:
        """Bytes [start, start+length) of this register take `data` (little-endian)."""
        self.writer(start, length, self.space.permissive)(data)

    def writer(self, start: int, length: int, permissive: bool) -> Callable[[int], None]:
        """What a write of bytes [start, start+length) does in one mode, as a function of the
        data written: the access's masks (WriteShape) are worked out once and folded in, so a
        write is the merge and nothing else. Kept per access and mode; write plans
        (ConfigSpace) are kept per mode too."""
        key = (start, length, permissive)
        known = self._writers.get(key)
        if known is not None:
            return known
        shape = WriteShape(self, start, length, self.masks[permissive])
        if self.hw_mask or self.shadow_mask:
            write = self._merging_writer(shape, permissive)
        else:
            write = self._hooks_only_writer(shape, permissive)
        self._writers[key] = write
        return write

    def _merging_writer(self, shape: WriteShape, permissive: bool) -> Callable[[int], None]:
        shift, bytes_mask, others = shape.shift, shape.bytes_mask, shape.others
        old_visible, hooks, always, on_edge = (
            shape.old_visible,
            shape.hooks,
            shape.always,
            shape.on_edge,
        )
        shadow_taken, shadow_clear = shape.shadow_taken, shape.shadow_clear
        shadow_kept = ~shadow_taken  # what a write no hook vetoed leaves of the shadow
        warn = 0 if permissive else shape.warn  # permissive mode drops nothing worth a word
        # What a write must change for anything but its landing to happen: a hook's edge, or a
        # bit dropped for lack of permissive mode. Only the access's bytes can change, and
        # there the new value is the data written, so the bits changed are `(old ^ wval)` cut
        # to those bytes: the cut is folded in here, and the write needs the merged new value
        # only when a hook is given it. Every bit a write lands (the shadow's taken and cleared
        # bits, the device's written and cleared ones) is in the access's bytes too, so the
        # landing takes it from `wval` as well.
        watched = (on_edge | warn) & bytes_mask
        hw_write, hw_clear, hw_zero = shape.hw_write, shape.hw_clear, shape.hw_zero
        reaches_hw = bool(hw_write | hw_clear | hw_zero)
        hw_mask, static, hw_rw1c = self.hw_mask, self.static, self.hw_rw1c
        space, offset, width, name = self.space, self.offset, self.width, self.reg.name
        # One context per register, shared by a write's hooks and reused from one write to
        # the next: making one costs as much as a short hook (HookContext).
        ctx = self._write_context()
        # The bytes a write lands when no hook vetoes and no rw1c bit is written: worked out
        # here, and per write only otherwise.
        usual = hw_write | hw_zero
        usual_pieces = self._write_pieces(usual)

        # The device is the view's for its life (a plan lives no longer than its view).
        device = space.device
        device_read = device.read

        def write(data: int) -> None:
            wval = (data << shift) & bytes_mask
            hw = device_read(offset, width) if hw_mask else 0
            old = ((hw & hw_mask) | static | self.shadow) & old_visible
            veto = hooked = 0
            # An edge needs its field to change: a write changing none of theirs runs none.
            # The hooks whose edge the write makes run in the fields' order; False vetoes.
            if always or (old ^ wval) & watched:
                new = (old & others) | wval
                for mask, fshift, made, hook in hooks:
                    before = (old & mask) >> fshift
                    after = (new & mask) >> fshift
                    if made is not None and not made(before, after):
                        continue
                    if not hooked:
                        hooked = 1
                        ctx.old_register, ctx.new_register = old, new
                    if hook(ctx, before, after) is False:
                        veto |= mask
                if warn & (wval ^ old):
                    space.warn_permissive(name)
            if shadow_taken:
                if veto:
                    taken = shadow_taken & ~veto
                    self.shadow = (self.shadow & ~taken) | (wval & taken)
                else:
                    self.shadow = (self.shadow & shadow_kept) | (wval & shadow_taken)
            if shadow_clear:
                self.shadow &= ~(wval & shadow_clear & ~veto)
            if not reaches_hw:
                return
            written = hw_write & ~veto
            cleared = wval & hw_clear & ~veto
            if not (written | cleared | hw_zero):
                return
            if hooked:
                # A hook may have written the device: merge over what is there now. With no
                # hook run, nothing here touched the device since it was read above.
                hw = device_read(offset, width)
            out = hw & ~hw_rw1c  # a 1 read back from a rw1c bit is never written back
            out = ((out & ~written) | (wval & written) | cleared) & ~hw_zero
            changed = written | cleared | hw_zero
            pieces = usual_pieces if changed == usual else self._write_pieces(changed)
            for start, size, place, keep in pieces:
                device.write(start, size, (out >> place) & keep)

        return write

    def _hooks_only_writer(self, shape: WriteShape, permissive: bool) -> Callable[[int], None]:
        """A register with neither device bits nor a shadow (a BAR: cached, its hook answers
        sizing): the old value a write sees never changes, so it and each hook's old field are
        worked out here, and nothing lands but what the hooks do (a veto holds nothing back)."""
        shift, bytes_mask, always, on_edge = (
            shape.shift,
            shape.bytes_mask,
            shape.always,
            shape.on_edge,
        )
        old = self.static & shape.old_visible
        kept = old & shape.others
        hooks = tuple(
            ((old & mask) >> fshift, mask, fshift, made, hook)
            for mask, fshift, made, hook in shape.hooks
        )
        warn = 0 if permissive else shape.warn
        watched = (on_edge | warn) & bytes_mask  # as in _merging_writer
        space, name, ctx = self.space, self.reg.name, self._write_context()
        if len(hooks) == 1 and always and not warn:
            before, mask, fshift, _, hook = hooks[0]
            if not (shift or kept or fshift or bytes_mask & ~mask):
                # One hook, run by every write, nothing to warn about, and an access that is
                # all of the new value and within the hook's field from its bit 0 (a BAR's
                # dword): the register's new value and the field's are both the data cut to
                # the access's bytes, with no shift or merge left to work out per write. Other
                # shapes (a BAR's byte or word: drivers size and move BARs by dword) take the
                # loop below.
                def write_whole(data: int) -> None:
                    new = data & bytes_mask
                    ctx.old_register, ctx.new_register = old, new
                    hook(ctx, before, new)

                return write_whole

        def write(data: int) -> None:
            wval = (data << shift) & bytes_mask
            if always or (old ^ wval) & watched:
                new = kept | wval
                ctx.old_register, ctx.new_register = old, new
                for before, mask, fshift, made, hook in hooks:
                    after = (new & mask) >> fshift
                    if made is None or made(before, after):
                        hook(ctx, before, after)
                if warn & (wval ^ old):
                    space.warn_permissive(name)

        return write

    def _write_context(self) -> HookContext:
        ctx = self._write_ctx
        if ctx is None:
            ctx = self._write_ctx = HookContext(self.space, self, 0, 0)
        return ctx

    def _write_pieces(self, changed: int) -> list[tuple[int, int, int, int]]:
        """The device writes that land the bits of `changed`, and only the bytes that hold one
        (the XSA-128 lesson): (offset, size, shift, mask) each, the value's bytes being
        `(out >> shift) & mask`."""
        pieces: list[tuple[int, int, int, int]] = []
        byte = 0
        while byte < self.width:
            if not (changed >> (8 * byte)) & 0xFF:
                byte += 1
                continue
            run = 1
            while byte + run < self.width and (changed >> (8 * (byte + run))) & 0xFF:
                run += 1
            for piece_start, piece_len in natural_pieces(self.offset + byte, run):
                rel = piece_start - self.offset
                pieces.append((piece_start, piece_len, 8 * rel, (1 << (8 * piece_len)) - 1))
            byte += run
        return pieces


class WriteShape:
    """What a write of one access shape (bytes [start, start+length) of a register) may do
    under one mode, as masks in the register's bit positions: worked out once per access and
    mode (RegisterInstance.writer), as the fields' access classes and hooks never change."""

    __slots__ = (
        "always",
        "bytes_mask",
        "hooks",
        "hw_clear",
        "hw_write",
        "hw_zero",
        "old_visible",
        "on_edge",
        "others",
        "shadow_clear",
        "shadow_taken",
        "shift",
        "warn",
    )

    def __init__(self, reg: RegisterInstance, start: int, length: int, masks: AccessMasks) -> None:
        self.shift = (start - reg.offset) * 8
        self.bytes_mask = ((1 << (8 * length)) - 1) << self.shift
        self.others = ~self.bytes_mask  # the bytes the access leaves as they read
        # The old value as a write sees it: what reads 0 in this mode, and rw1c bits as 0.
        self.old_visible = masks.visible & ~masks.never_echoed
        # The field hooks the access reaches, in the fields' order.
        self.hooks = tuple(h for h in reg.write_hooks if h.mask & self.bytes_mask)
        # An edge needs its field to change: a write that changes none of theirs runs none.
        self.always = any(h.made is None for h in self.hooks)
        self.on_edge = 0
        for h in self.hooks:
            self.on_edge |= h.mask
        writable = masks.rw & self.bytes_mask
        self.shadow_taken = writable & reg.shadow_mask
        self.shadow_clear = masks.rw1c & self.bytes_mask & reg.shadow_mask
        self.warn = reg.permissive_only & self.bytes_mask  # dropped for lack of permissive mode
        touches_hw = bool(masks.writable & reg.hw_mask & self.bytes_mask)
        self.hw_write = writable & reg.hw_mask if touches_hw else 0
        self.hw_clear = masks.rw1c & self.bytes_mask & reg.hw_mask if touches_hw else 0
        self.hw_zero = masks.rsvdz & self.bytes_mask & reg.hw_mask if touches_hw else 0


def natural_pieces(start: int, length: int) -> list[tuple[int, int]]:
    """Split a byte run into naturally aligned accesses of 1, 2 or 4 bytes."""
    if length in (1, 2, 4) and not start % length:
        return [(start, length)]  # the usual case: a whole guest access, already natural
    pieces: list[tuple[int, int]] = []
    while length:
        for size in (4, 2, 1):
            if size <= length and start % size == 0:
                pieces.append((start, size))
                start += size
                length -= size
                break
    return pieces
