"""A device's configuration space as one guest sees it.

Built once per device: the compiled tables are laid over the capabilities the device really
has, and every byte offset gets its owner in a flat map (O(1) dispatch). One access splitter
then serves every read and write, whatever registers and gaps an access straddles; what it
works out for an access that reaches the policy is kept as a plan, so that a guest's repeated
accesses skip the splitting (see "the access splitter" below).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import cached_property, partial

from pciback.engine.chain import (
    CAP_NEXT,
    EXT_END,
    EXT_ID,
    EXT_LINK,
    EXT_NEXT,
    EXT_START,
    EXT_VERSION,
    STD_END,
    STD_LINK,
    STD_START,
    FoundCapability,
    walk,
)
from pciback.engine.interrupt_owner import InterruptOwner
from pciback.engine.policy import Policy
from pciback.engine.registers import RegisterInstance, natural_pieces
from pciback.engine.settings import DeviceSettings
from pciback.errors import PciOpError, XenPciError
from pciback.generated.names import COMMON_HEADER, TYPE0
from pciback.ports.bus import PhysicalDevice, config_access_fits
from pciback.tables import Block, BlockKind, Chain, Expr, Register

log = logging.getLogger("pciback.engine")


class Gap:
    """Bytes no table describes: read from the device; written only in permissive mode."""

    __slots__ = ()


class Blocked:
    """The body of a hidden capability: unreachable by offset (reads 0, writes dropped)."""

    __slots__ = ()


class ChainLink:
    """A capability's ID and next pointer, rebuilt around hidden capabilities; never writable."""

    __slots__ = ("end", "offset", "raw", "width")

    def __init__(self, offset: int, width: int, raw: int) -> None:
        self.offset = offset
        self.width = width
        self.end = offset + width
        self.raw = raw


class HostOwned(Gap):
    """Bytes read from the device that no guest write reaches, permissive or not (the header
    of a layout the policy does not know, a capability whose table could not be laid out).
    `why`: what the warning on a dropped write says; `description`: what an audit says."""

    __slots__ = ("description", "why")

    def __init__(self, why: str, description: str) -> None:
        self.why = why
        self.description = description


NO_POLICY_FOR_HEADER = "no policy describes this header type, so no mode takes that write"
GAP = Gap()
HOST_OWNED = HostOwned(
    NO_POLICY_FOR_HEADER,
    "no policy describes this header type: read from the device, never written",
)
BLOCKED = Blocked()
Slot = RegisterInstance | ChainLink | Gap | Blocked

Run = tuple[int, int, Slot]
"""Bytes [start, stop) of an access that one slot owns."""
Reader = Callable[[], int]
"""A planned read: the access's value."""
Writer = Callable[[int], None]
"""A planned write: takes the access's value as the guest gave it and cuts it to the bytes each
slot takes itself (a register's write to its bytes, a piece to its length), so the value is not
cut once more on the way in."""
PieceWriter = Callable[[int, int, int], None]
"""`piece(start, length, data)`: the bytes [start, start+length) of one slot take `data`."""

_BYTES_MASK = (0, 0xFF, 0xFFFF, 0xFFFFFF, 0xFFFFFFFF)
PERMISSIVE_WOULD_TAKE_IT = "enable permissive mode for this device if it needs that write"


def _reader(fixed: int, parts: list[tuple[Reader, int, int, int]]) -> Reader:
    if not parts:
        return lambda: fixed
    source, drop, keep, place = parts[0]
    if len(parts) == 1:
        if keep == -1 and not (fixed or drop or place):
            return source  # one register read whole, or one device read: nothing to assemble
        # One source beside fixed bytes (a capability's link and its first register).
        return lambda: fixed | ((source() >> drop) & keep) << place
    pieces = tuple(parts)

    def assemble() -> int:
        value = fixed
        for source, drop, keep, place in pieces:
            value |= ((source() >> drop) & keep) << place
        return value

    return assemble


def _writer(parts: list[tuple[Writer, int, int]]) -> Writer:
    if not parts:
        return _drop
    take, drop, keep = parts[0]
    if len(parts) == 1 and not drop and keep == -1:
        return take  # one register written whole: nothing to cut
    pieces = tuple(parts)

    def scatter(value: int) -> None:
        for take, drop, keep in pieces:
            take((value >> drop) & keep)

    return scatter


def _drop(value: int) -> None:
    pass


def _reads_zero() -> int:
    return 0  # an access wholly inside a hidden capability's body


# A register's part of a coalesced read: see ConfigSpace._plan_coalesced.
_Merge = tuple[RegisterInstance | None, int, int, int, Callable[[int], int] | None, int, int]
_DESCRIBED = (RegisterInstance, ChainLink)  # a tuple: isinstance of a union costs more


def _registers_whole(runs: list[Run]) -> bool:
    """Whether every register an access reaches lies whole inside it: true of the compiled
    tables' naturally aligned registers whenever an access spans several slots, but a
    runtime quirk's register need not be aligned."""
    return all(
        pos == slot.offset and stop == slot.end
        for pos, stop, slot in runs
        if isinstance(slot, RegisterInstance)
    )


@dataclass(frozen=True, slots=True)
class PlacedCapability:
    found: FoundCapability
    table: Block | None
    hidden: bool


class ConfigSpace:
    def __init__(
        self,
        device: PhysicalDevice,
        policy: Policy,
        *,
        permissive: bool = False,
        settings: DeviceSettings | None = None,
        hide: Iterable[int] = (),
        hide_extended: Iterable[int] = (),
        extra_registers: Iterable[Register] = (),
    ) -> None:
        """`settings`: the device's operator settings, shared with the stub pool and the
        device's other views; without them the view has its own (`permissive` their mode)."""
        if settings is not None and permissive:
            raise ValueError("permissive is the settings' to say when settings are given")
        self.device = device
        self.policy = policy
        # Kept plans per mode (normal, permissive), by the access's key: see "the access
        # splitter". The access path looks in the current mode's, chosen when the mode changes.
        self._plans: tuple[tuple[dict[int, Reader], dict[int, Writer]], ...] = (({}, {}), ({}, {}))
        # Copies of `settings`, written by the settings alone (see pciback.engine.settings): the
        # mode (its setter picks the mode's plans, so the access path never reads it), and
        # Linux's allow_interrupt_control (INTx masking and MSI control reach the device), a
        # plain attribute for the hooks on the access path.
        self.permissive = permissive
        self.allow_interrupt_control = False
        self.settings = DeviceSettings(permissive=permissive) if settings is None else settings
        self.settings.follow(self)
        # The one writer of the device's MSI/MSI-X control bits for a guest's config writes,
        # attached by whoever serves the view (pciback.engine.interrupt_owner).
        self.interrupts: InterruptOwner | None = None
        self.size = device.config_size
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self._warned_permissive = False
        self._map: list[Slot] = [GAP] * self.size
        self.registers: list[RegisterInstance] = []
        # Lookups of the capabilities other tables' expressions read, by table name (seize only).
        self._foreign: dict[str, LookupFn] = {}
        self._resolving: set[str] = set()
        hide_std, hide_ext = frozenset(hide), frozenset(hide_extended)
        self._ids = _device_ids(device)  # what quirks and table variants match
        chains = walk(device.read, self.size)
        self.problems.extend(chains.problems)
        self.standard = [self._classify(c, policy.capabilities, hide_std) for c in chains.standard]
        self.extended = [self._classify(c, policy.extended, hide_ext) for c in chains.extended]
        for placed in self.standard + self.extended:
            for action in policy.seize_actions(placed.table):
                action(device, placed.found.offset)
        self._lay_out_header()
        self._lay_out_capabilities(self.standard, STD_END, STD_LINK)
        self._lay_out_capabilities(self.extended, EXT_END, EXT_LINK)
        self._lay_out_quirks(extra_registers)
        self._index_described()
        self._foreign.clear()  # the other capabilities' registers read for layouts
        for problem in self.problems:
            log.warning("%s: %s", device.address, problem)

    @property
    def permissive(self) -> bool:
        return self._permissive

    @permissive.setter
    def permissive(self, on: bool) -> None:
        self._permissive = on
        self._readers, self._writers = self._plans[on]

    # -- what the rest of the backend asks ---------------------------------------------------------
    # The guest-visible chains are fixed once the view is built; the capability pointer and the
    # status bit are read on every header access, so they are answered from these.
    @cached_property
    def exposed(self) -> tuple[FoundCapability, ...]:
        return tuple(p.found for p in self.standard if not p.hidden)

    @cached_property
    def exposed_extended(self) -> tuple[FoundCapability, ...]:
        return tuple(p.found for p in self.extended if not p.hidden)

    @cached_property
    def first_capability(self) -> int:
        return self.exposed[0].offset if self.exposed else 0

    def capability_offset(self, cap_id: int) -> int | None:
        """Where an exposed standard capability lives (hidden ones do not exist for a guest)."""
        return next((c.offset for c in self.exposed if c.ident == cap_id), None)

    def extended_capability_offset(self, cap_id: int) -> int | None:
        return next((c.offset for c in self.exposed_extended if c.ident == cap_id), None)

    def slot_at(self, offset: int) -> Slot:
        return self._map[offset]

    def add_quirk(self, register: Register) -> str | None:
        """An operator's quirk field laid over the live view, as Linux's quirks attribute
        adds one to a device a guest holds; the problem that kept it out, or None. The caller
        holds the view's serving gate: no op runs while the map and its plans change."""
        before = len(self.problems)
        self._overlay(None, (register,))
        if len(self.problems) > before:
            return self.problems.pop()  # the view is unchanged; the refusal is the caller's
        self._index_described()
        for plans in self._plans:  # made over the old map
            for kept in plans:
                kept.clear()
        return None

    def _index_described(self) -> None:
        """Per byte, 1 if a register or a chain link owns it: which accesses get a kept plan."""
        self._described = bytes(isinstance(slot, _DESCRIBED) for slot in self._map)

    def warn_permissive(self, what: str, why: str = PERMISSIVE_WOULD_TAKE_IT) -> None:
        if self._warned_permissive:
            return
        self._warned_permissive = True
        message = f"{self.device.address}: guest write to {what} dropped; {why}"
        self.warnings.append(message)
        log.warning(message)

    # -- the access splitter ---------------------------------------------------------------------
    # An access that reaches a register or a chain link is split into runs of the slots it covers
    # and turned into a plan: a function doing just that access's work (fixed bytes
    # folded in, a register's value shifted into place, a device read of a gap), kept per
    # access and mode: the map never changes once the view is built (a live quirk drops them
    # all), so neither do plans, and there are at most three per described byte and mode. An
    # access that reaches only gaps and hidden bodies is served straight from the map (cheaper
    # than making a plan), and never kept, so that a guest sweeping the whole space cannot make
    # the view hold a plan for every offset.
    def _check(self, offset: int, size: int) -> None:
        if not config_access_fits(offset, size, self.size):
            raise PciOpError(
                XenPciError.INVALID_OFFSET, f"config access {offset:#x}/{size} refused"
            )

    # A plan's key: offset << 3 | size, an int (a tuple costs its making and hashing on every
    # guest access), in the dict of the mode it was made for. It is distinct for every access
    # of a size below 8, which each lookup checks first; a kept plan's size is 1, 2 or 4, so no
    # refused access can find one.
    def read(self, offset: int, size: int) -> int:
        reader = self._readers.get(offset << 3 | size) if size < 8 else None
        if reader is None:
            self._check(offset, size)
            permissive = self._permissive
            if self._reaches_policy(offset, size):
                reader = self._plan_read(offset, size, permissive)
            else:
                reader = self._plan_undescribed_read(offset, size)
            self._readers[offset << 3 | size] = reader
        return reader()

    def write(self, offset: int, size: int, value: int) -> None:
        writer = self._writers.get(offset << 3 | size) if size < 8 else None
        if writer is None:
            self._check(offset, size)
            if not self._reaches_policy(offset, size):
                self._write_undescribed(offset, size, value & _BYTES_MASK[size])
                return
            writer = self._plan_write(offset, size, self._permissive)
            self._writers[offset << 3 | size] = writer
        writer(value)  # a plan cuts the value to its bytes (see Writer)

    def _reaches_policy(self, offset: int, size: int) -> bool:
        """Whether a register or a chain link owns a byte of the access."""
        return 1 in self._described[offset : offset + size]

    def _split(self, offset: int, size: int) -> list[Run]:
        """The access as runs [pos, stop) of one slot each, in address order."""
        runs: list[Run] = []
        pos, end = offset, offset + size
        while pos < end:
            slot = self._map[pos]
            if isinstance(slot, _DESCRIBED):
                stop = min(slot.end, end)
            else:
                stop = pos + self._run(pos, end, slot)
            runs.append((pos, stop, slot))
            pos = stop
        return runs

    def _run(self, pos: int, end: int, slot: Slot) -> int:
        run = 1
        while pos + run < end and self._map[pos + run] is slot:
            run += 1
        return run

    def _plan_read(self, offset: int, size: int, permissive: bool) -> Reader:
        """The plan of one access under one mode (reserved bits and device reads follow it)."""
        runs = self._split(offset, size)
        if self._device_reads(runs) > 1 and _registers_whole(runs):
            return self._plan_coalesced(offset, size, runs, permissive)
        fixed = 0  # the bytes that can never change, in place
        # (source, bits to drop, bits to keep, where they go) for the bytes that can
        parts: list[tuple[Reader, int, int, int]] = []
        for pos, stop, slot in runs:
            place = 8 * (pos - offset)
            if isinstance(slot, _DESCRIBED):
                drop = 8 * (pos - slot.offset)
                whole = pos == slot.offset and stop == slot.end
                keep = -1 if whole else _BYTES_MASK[stop - pos]  # -1: nothing to cut away
                if isinstance(slot, ChainLink):
                    fixed |= ((slot.raw >> drop) & keep) << place
                elif slot.fixed is not None:
                    fixed |= ((slot.fixed >> drop) & keep) << place
                else:
                    parts.append((slot.reader(permissive), drop, keep, place))
            elif isinstance(slot, Gap):
                for start, length in natural_pieces(pos, stop - pos):
                    parts.append((self._device_reader(start, length), 0, -1, 8 * (start - offset)))
            # a hidden capability's body reads 0
        return _reader(fixed, parts)

    # A physical read is a system call that costs far more than the engine's work: an access
    # over several slots that read the device (command and status, a bridge's bus numbers, a
    # register and a gap) reads the device once, at the access's offset and size, and gives
    # each slot its bytes of that one value.
    @staticmethod
    def _device_reads(runs: list[Run]) -> int:
        """How many device reads serving `runs` one by one would take."""
        count = 0
        for pos, stop, slot in runs:
            if isinstance(slot, RegisterInstance):
                count += any(slot.hw_read)
            elif isinstance(slot, Gap):
                count += len(natural_pieces(pos, stop - pos))
        return count

    def _plan_coalesced(self, offset: int, size: int, runs: list[Run], permissive: bool) -> Reader:
        fixed = 0
        # (the register whose merge its bytes go through, or None for raw gap bytes, its
        #  device bits, its fixed bits, its visible bits, its read hooks or None,
        #  where its bytes are in the access's value, their mask)
        parts: list[_Merge] = []
        for pos, stop, slot in runs:
            place = 8 * (pos - offset)
            keep = _BYTES_MASK[stop - pos]
            if isinstance(slot, ChainLink):
                fixed |= ((slot.raw >> 8 * (pos - slot.offset)) & keep) << place
            elif isinstance(slot, RegisterInstance):  # whole inside the access
                parts.append((slot, *slot.merge(permissive), place, keep))
            elif isinstance(slot, Gap):
                parts.append((None, -1, 0, 0, None, place, keep))
            # a hidden capability's body reads 0
        pieces = tuple(parts)
        if len(pieces) == 2 and all(p[0] is not None and p[4] is None for p in pieces):
            return self._read_two(offset, size, fixed, pieces)

        def read_once() -> int:
            hw = self.device.read(offset, size)
            value = fixed
            for reg, hw_mask, static, visible, hooked, place, keep in pieces:
                part = (hw >> place) & keep
                if reg is not None:  # the register's merge (RegisterInstance.merge)
                    part = (part & hw_mask) | static | (reg.shadow & visible)
                    if hooked is not None:
                        part = hooked(part)
                value |= part << place
            return value

        return read_once

    def _read_two(self, offset: int, size: int, fixed: int, pieces: tuple[_Merge, ...]) -> Reader:
        """`read_once` for the usual coalesced access, two registers without read hooks (the
        command and status dword, a bridge's bus numbers), written out: no loop."""
        (first, hw1, fixed1, visible1, _, place1, keep1) = pieces[0]
        (second, hw2, fixed2, visible2, _, place2, keep2) = pieces[1]
        assert first is not None and second is not None
        fixed |= (fixed1 << place1) | (fixed2 << place2)
        hw1, hw2 = (hw1 & keep1) << place1, (hw2 & keep2) << place2
        visible1, visible2 = (visible1 & keep1), (visible2 & keep2)

        def read_two() -> int:
            hw = self.device.read(offset, size)
            return (
                fixed
                | (hw & (hw1 | hw2))
                | (first.shadow & visible1) << place1
                | (second.shadow & visible2) << place2
            )

        return read_two

    def _plan_write(self, offset: int, size: int, permissive: bool) -> Writer:
        # (what takes the piece, bits to drop from the access's value, bits to keep; -1: all)
        parts: list[tuple[Writer, int, int]] = []
        for pos, stop, slot in self._split(offset, size):
            length = stop - pos
            take: Writer | None
            if isinstance(slot, RegisterInstance):
                take = slot.writer(pos, length, permissive)
            else:
                handler = self._piece_writer(slot)
                take = None if handler is None else partial(handler, pos, length)
            if take is not None:
                whole = pos == offset and length == size
                parts.append((take, 8 * (pos - offset), -1 if whole else _BYTES_MASK[length]))
        return _writer(parts)

    # Undescribed reads get a kept plan too: a device's own registers outside its capabilities
    # (an e1000e's 0x40-0x9F) are a third of what lspci and a driver read there, each one a
    # device read, and the walk of the map below is a few Python calls more per read.
    def _plan_undescribed_read(self, offset: int, size: int) -> Reader:
        slot = self._map[offset]
        if isinstance(slot, Gap) and self._run(offset, offset + size, slot) == size:
            return partial(self.device.read, offset, size)  # the usual case: one gap, one read
        live = 0  # the bytes of gaps; a hidden capability's body reads 0
        for pos in range(offset, offset + size):
            if isinstance(self._map[pos], Gap):
                live |= 0xFF << (8 * (pos - offset))
        if not live:
            return _reads_zero
        device_read = self.device.read

        def read_gaps() -> int:
            return device_read(offset, size) & live

        return read_gaps

    def _write_undescribed(self, offset: int, size: int, value: int) -> None:
        pos, end = offset, offset + size
        while pos < end:
            slot = self._map[pos]
            run = self._run(pos, end, slot)
            data = (value >> (8 * (pos - offset))) & _BYTES_MASK[run]
            if isinstance(slot, HostOwned):
                self._write_host_owned(pos, run, data)
            elif isinstance(slot, Gap):
                self._write_gap(pos, run, data)
            # hidden bodies drop what is written to them
            pos += run

    def _piece_writer(self, slot: Slot) -> PieceWriter | None:
        """What takes a write to the bytes of `slot`, not a register (None: chain links and
        hidden bodies drop it)."""
        if isinstance(slot, HostOwned):
            return self._write_host_owned
        if isinstance(slot, Gap):
            return self._write_gap
        return None

    def _device_reader(self, start: int, length: int) -> Reader:
        # self.device is looked up on every call, not bound here: the device object stays, but
        # what answers its reads may be swapped (tests do, to interfere with an op).
        return lambda: self.device.read(start, length)

    def _write_gap(self, pos: int, length: int, data: int) -> None:
        if not self.permissive:
            self.warn_permissive(f"undescribed bytes at {pos:#x}")
            return
        for start, piece in natural_pieces(pos, length):
            self.device.write(start, piece, (data >> (8 * (start - pos))) & _BYTES_MASK[piece])

    def _write_host_owned(self, pos: int, length: int, data: int) -> None:
        slot = self._map[pos]
        assert isinstance(slot, HostOwned)
        self.warn_permissive(f"undescribed bytes at {pos:#x}", slot.why)

    # -- laying out the tables -------------------------------------------------------------------
    def _classify(
        self, found: FoundCapability, tables: dict[int, Block], hidden: frozenset[int]
    ) -> PlacedCapability:
        table = self._variant(found) or tables.get(found.ident)
        hide = found.ident in hidden or bool(table and table.hidden)
        for check in () if hide else self.policy.seize_checks(table):
            problem = check(self.device, found.offset)
            if problem is not None:
                self.problems.append(f"{problem}: capability hidden")
                hide = True
                break
        return PlacedCapability(found, table, hide)

    def _variant(self, found: FoundCapability) -> Block | None:
        """The first table with a match describing this capability in this device."""
        kind = BlockKind.EXTENDED_CAPABILITY if found.extended else BlockKind.CAPABILITY
        for block in self.policy.variants:
            if block.kind is kind and block.ident == found.ident and self._matches(block):
                return block
        return None

    def _matches(self, block: Block) -> bool:
        ids = self._ids
        return all(m.accepts(ids.get(m.key, -1)) for m in block.matches)

    def _lay_out_header(self) -> None:
        # The header is every byte before the standard list's space; its layout was read with
        # the IDs the table variants match.
        header_type = self.header_type = self._ids["header_type"]
        table = self.policy.headers.get(header_type)
        if table is None:
            # Linux refuses such a function; here it can be seen but its header never written.
            self.problems.append(f"no policy for header type {header_type}: header is read-only")
            self._claim(0, STD_START, HOST_OWNED)
            return
        try:
            self._place_block(table, 0, STD_START)
        except _LayoutFailed as exc:
            self._unplaceable(exc, 0, STD_START)

    def _lay_out_capabilities(
        self, caps: list[PlacedCapability], region_end: int, link: int
    ) -> None:
        starts = sorted(p.found.offset for p in caps)
        exposed = [p for p in caps if not p.hidden]
        # A table with a length claims the capability's bytes; one without (vendor-specific
        # layouts, HyperTransport) names only a header in front of a body whose end is a guess.
        # Where a device's capabilities overlap (QEMU's AMD IOMMU function lays HyperTransport
        # over its MSI address), the firm ones are placed first and keep their registers.
        for placed in sorted(caps, key=lambda p: p.table is not None and p.table.length is None):
            base = placed.found.offset
            following = [s for s in starts if s > base]
            natural_end = following[0] if following else region_end
            try:
                extent = self._extent(placed.table, base, natural_end, region_end, link)
            except _LayoutFailed as exc:
                self._unplaceable(exc, base, natural_end)
                continue
            if placed.hidden:
                self._claim(base, extent, BLOCKED)
                continue
            if placed.table is not None:
                try:
                    self._place_block(placed.table, base, base + extent)
                except _LayoutFailed as exc:
                    self._unplaceable(exc, base, min(base + extent, natural_end))
        # A table's `rest`: what it leaves undescribed up to the next capability is the host's.
        # Claimed once every table of the region is placed, so that no register yields to it.
        for placed in exposed:
            table = placed.table
            if table is None or not table.rest:
                continue
            base = placed.found.offset
            if table.rest_if is not None:
                try:
                    lookup = LookupFn(self, table, base)
                    if not _evaluate(table.rest_if, lookup, table, "rest condition"):
                        continue
                except _LayoutFailed as exc:  # the safe side: the rest stays the host's
                    self.problems.append(str(exc))
            end = min([s for s in starts if s > base] or [region_end])
            why = table.rest_reason or f"as {table.source} says"
            slot = HostOwned(
                f"the rest of {table.name} is the host's ({why}), so no mode takes that write",
                f"the rest of {table.name} ({why}): read from the device, never written",
            )
            self._claim_gaps(base, end, slot)
        # Links go in last: they are the backend's and win over anything a broken table placed.
        for i, placed in enumerate(exposed):
            nxt = exposed[i + 1].found.offset if i + 1 < len(exposed) else 0
            self._set_link(placed.found, nxt, link)
        if link == EXT_LINK and caps and caps[0].hidden:
            # 0x100 is where every walk of the extended list starts: keep a null header there.
            nxt = exposed[0].found.offset if exposed else 0
            self._claim(EXT_START, EXT_LINK, ChainLink(EXT_START, EXT_LINK, EXT_NEXT.put(0, nxt)))
        elif link == EXT_LINK and not caps and self.size > EXT_START:
            # An empty list stays empty for the view's life (the chains are fixed at seize,
            # and a capability appearing later would escape hiding): its head, which every
            # extended capability search reads, is answered without the device.
            head = self.device.read(EXT_START, EXT_LINK)
            self._claim(EXT_START, EXT_LINK, ChainLink(EXT_START, EXT_LINK, head))

    def _extent(
        self, table: Block | None, base: int, natural_end: int, region_end: int, link: int
    ) -> int:
        if table is None or table.length is None:
            # Up to the next capability or the region's end: capabilities start on dwords,
            # so that is never less than the link.
            return natural_end - base
        length = table.length
        if not isinstance(length, int):
            length = _evaluate(length, LookupFn(self, table, base), table, "length")
        return max(link, min(length, region_end - base))

    def _unplaceable(self, exc: _LayoutFailed, start: int, end: int) -> None:
        """A table whose length or layout cannot be computed for this device (the compiler
        rules that out for the tables it makes): its capability is read from the device and
        never written, in any mode."""
        self.problems.append(f"{exc}; its bytes are read-only")
        slot = HostOwned(
            f"its table could not be laid out ({exc}), so no mode takes that write",
            f"{exc}: read from the device, never written",
        )
        self._claim_gaps(start, end, slot)

    def _claim_gaps(self, start: int, end: int, slot: Slot) -> None:
        """The bytes of [start, end) that nothing described yet take `slot`."""
        for off in range(start, min(end, self.size)):
            if self._map[off] is GAP:
                self._map[off] = slot

    # -- fields of other capabilities, for a table's lengths and conditions ----------------------
    def capability_field(self, name: str, register: str, field: str) -> int:
        """A field of the function's first capability that the table `name` describes, as read
        at seize; 0 when the function has none (or a table with a match describes it in this
        function), or the register is absent from it."""
        lookup = self._foreign.get(name)
        if lookup is None:
            table = self.policy.named(name)
            if table is None:
                return 0  # the compiler names only tables it compiled
            placed = self.extended if table.kind is BlockKind.EXTENDED_CAPABILITY else self.standard
            found = next((p for p in placed if p.found.ident == table.ident), None)
            if found is None or found.table is not table:
                return 0
            lookup = self._foreign[name] = LookupFn(self, table, found.found.offset)
        if name in self._resolving:
            raise _LayoutFailed(f"{name}.{register}.{field} is read while it is being read")
        self._resolving.add(name)
        try:
            reg = next(r for r in lookup.block.registers if r.name == register)
            if reg.present is not None and not _evaluate(
                reg.present, lookup, lookup.block, f"{register} condition"
            ):
                return 0
            return lookup(register, field)
        finally:
            self._resolving.discard(name)

    def _set_link(self, found: FoundCapability, nxt: int, link: int) -> None:
        if link == STD_LINK:
            raw = found.ident | (nxt << 8 * CAP_NEXT)
        else:
            raw = EXT_NEXT.put(EXT_VERSION.put(EXT_ID.put(0, found.ident), found.version), nxt)
        self._claim(found.offset, link, ChainLink(found.offset, link, raw))

    def _claim(self, start: int, length: int, slot: Slot) -> None:
        for off in range(start, min(start + length, self.size)):
            self._map[off] = slot

    def _place_block(self, block: Block, base: int, limit: int) -> None:
        lookup = LookupFn(self, block, base)
        layout: list[tuple[Register, int]] = []  # worked out whole before any is placed
        for reg in block.registers:
            if reg.present is not None and not _evaluate(
                reg.present, lookup, block, f"{reg.name} condition"
            ):
                continue
            offset = reg.offset
            rel = offset if isinstance(offset, int) else _evaluate(offset, lookup, block, reg.name)
            layout.append((reg, rel))
        for reg, rel in layout:
            start = base + rel
            if start + reg.width > min(limit, self.size):
                self.problems.append(
                    f"{block.name}.{reg.name} at {start:#x} does not fit the device's"
                    f" {block.kind.value}; left undescribed"
                )
                continue
            taken = [self._map[o] for o in range(start, start + reg.width)]
            if any(s is not GAP for s in taken):
                self.problems.append(
                    f"{block.name}.{reg.name} at {start:#x} overlaps another block;"
                    " the device's capability list is inconsistent"
                )
                continue
            inst = RegisterInstance(self, reg, start, base, block.name)
            self.registers.append(inst)
            self._claim(start, reg.width, inst)
        for chain in block.chains:
            self._place_chain(block, chain, lookup, min(limit, self.size))

    def _place_chain(self, block: Block, chain: Chain, lookup: LookupFn, end: int) -> None:
        """A chain's records one after another, as many as the device counts but never more
        than the policy's bound, each read only once it is known to lie before `end` (the
        block's end). A record that would not fit, would cover bytes already described or
        cannot be laid out ends the chain: from its start to the block's end, what nothing
        describes is the host's (a guest write there would land in an entry the policy could
        not place)."""
        try:
            count = chain.count
            if not isinstance(count, int):
                count = _evaluate(count, lookup, block, f"{chain.name} count")
            start = chain.start
            if not isinstance(start, int):
                start = _evaluate(start, lookup, block, f"{chain.name} start")
        except _LayoutFailed as exc:
            self._cut_chain(str(exc), lookup.base, end)
            return
        record = replace(block, registers=chain.registers, chains=())
        # The registers at fixed places in a record: those its layout and its size are read
        # from, so they must fit before anything of the record is read.
        head = max(
            (r.offset + r.width for r in chain.registers if isinstance(r.offset, int)), default=4
        )
        at = lookup.base + start
        for i in range(min(count, chain.most)):
            name = f"{block.name}.{chain.name}{i} at {at:#x}"
            if at + head > end:
                self._cut_chain(f"{name} runs past the {block.kind.value}", at, end)
                return
            try:
                layout, step = self._lay_out_record(record, chain, i, at)
            except _LayoutFailed as exc:
                self._cut_chain(str(exc), at, end)
                return
            stop = max(s + r.width for r, s in layout) if layout else at + head
            if stop > end or any(s < at for _, s in layout):
                self._cut_chain(f"{name} ends at {stop:#x}, past the {block.kind.value}", at, end)
                return
            if any(self._map[o] is not GAP for r, s in layout for o in range(s, s + r.width)):
                self._cut_chain(f"{name} overlaps bytes described already", at, end)
                return
            for reg, s in layout:
                inst = RegisterInstance(self, reg, s, lookup.base, block.name)
                self.registers.append(inst)
                self._claim(s, reg.width, inst)
            if step < stop - at:  # the compiler rules it out: records never overlap
                self._cut_chain(f"{name}: the next record would start inside it", stop, end)
                return
            at += step

    def _lay_out_record(
        self, record: Block, chain: Chain, index: int, at: int
    ) -> tuple[list[tuple[Register, int]], int]:
        """Record `index` of a chain at `at`: its registers present, each named after its
        record (`entry2_base`) with its place in the device, and the step to the next."""
        fields = LookupFn(self, record, at)
        name = f"{chain.name}{index}"
        layout: list[tuple[Register, int]] = []
        for reg in chain.registers:
            if reg.present is not None and not _evaluate(
                reg.present, fields, record, f"{name}.{reg.name} condition"
            ):
                continue
            rel = reg.offset
            if not isinstance(rel, int):
                rel = _evaluate(rel, fields, record, f"{name}.{reg.name}")
            layout.append((replace(reg, name=f"{name}_{reg.name}"), at + rel))
        return layout, _evaluate(chain.next, fields, record, f"{name} next")

    def _cut_chain(self, why: str, start: int, end: int) -> None:
        self.problems.append(f"{why}; it and the records after it are the host's")
        slot = HostOwned(
            f"a chain's record could not be laid out ({why}), so no mode takes that write",
            f"{why}: read from the device, never written",
        )
        self._claim_gaps(start, end, slot)

    def _lay_out_quirks(self, extra: Iterable[Register]) -> None:
        for quirk in self.policy.quirks:
            if self._matches(quirk):
                self._overlay(quirk, quirk.registers)
        extra = tuple(extra)
        if extra:
            self._overlay(None, extra)

    def _overlay(self, block: Block | None, registers: Iterable[Register]) -> None:
        """Quirk registers replace whatever described their bytes before."""
        for reg in registers:
            if not isinstance(reg.offset, int) or reg.offset + reg.width > self.size:
                self.problems.append(f"quirk register {reg.name} does not fit the device")
                continue
            end = reg.offset + reg.width
            taken = [self._map[off] for off in range(reg.offset, end)]
            if any(isinstance(slot, ChainLink | Blocked) for slot in taken):
                # A quirk must not undo hiding: hidden stays unreachable, the chain the backend's.
                self.problems.append(
                    f"quirk register {reg.name} at {reg.offset:#x} covers the capability chain"
                    " or a hidden capability; ignored"
                )
                continue
            replaced = {slot for slot in taken if isinstance(slot, RegisterInstance)}
            partial = [r for r in replaced if r.offset < reg.offset or r.end > end]
            if partial:
                # The rest of a half-replaced register would fall back to the gap default,
                # writable in permissive mode: not what its table decided.
                self.problems.append(
                    f"quirk register {reg.name} at {reg.offset:#x} covers part of"
                    f" {partial[0].reg.name}; a quirk replaces whole registers; ignored"
                )
                continue
            # What the replaced registers declared write-1-to-clear stays so: a quirk's
            # read-only bits are echoed back by its writes, and a 1 echoed clears a host event.
            rw1c = 0
            for old in replaced:
                rw1c |= old.hw_rw1c << (8 * (old.offset - reg.offset))
                if old in self.registers:
                    self.registers.remove(old)
            name = block.name if block else "runtime-quirk"
            inst = RegisterInstance(self, reg, reg.offset, 0, name, rw1c)
            self.registers.append(inst)
            self._claim(reg.offset, reg.width, inst)


class _LayoutFailed(Exception):
    """A table's length, condition or offset cannot be computed for this device."""


def _evaluate(expr: Expr, lookup: LookupFn, block: Block, what: str) -> int:
    try:
        return expr(lookup)
    except ZeroDivisionError:
        raise _LayoutFailed(
            f"{block.source}: {block.name} {what}: division by zero ({lookup.values()})"
        ) from None
    except (ArithmeticError, ValueError, KeyError, StopIteration) as exc:
        raise _LayoutFailed(f"{block.source}: {block.name} {what}: {exc!r}") from None


class LookupFn:
    """A block's field values as the device holds them, for lengths and conditions, and the
    fields of the function's other capabilities they name (`of`).

    One lookup serves one placement of a block, at seize: each register it consults is read
    from the device once, not once per condition naming it (a virtio capability's conditions
    name its type eighteen times)."""

    __slots__ = ("base", "block", "device", "seen", "space")

    def __init__(self, space: ConfigSpace, block: Block, base: int) -> None:
        self.space = space
        self.device = space.device
        self.block = block
        self.base = base
        self.seen: dict[int, int] = {}  # register offset in the device: its value

    def of(self, block: str, register: str, field: str) -> int:
        return self.space.capability_field(block, register, field)

    def values(self) -> str:
        """The registers read so far, for a message."""
        return ", ".join(f"{at:#x} = {value:#x}" for at, value in sorted(self.seen.items()))

    def __call__(self, register: str, field: str) -> int:
        reg = next(r for r in self.block.registers if r.name == register)
        fld = next(f for f in reg.fields if f.name == field)
        if not isinstance(reg.offset, int):  # pragma: no cover - the compiler rules this out
            raise KeyError(f"{register} moves; it cannot be used in a condition")
        at = self.base + reg.offset
        value = self.seen.get(at)
        if value is None:
            value = self.seen[at] = self.device.read(at, reg.width)
        return (value & fld.mask) >> fld.shift


def _device_ids(device: PhysicalDevice) -> dict[str, int]:
    h = COMMON_HEADER
    return {
        "vendor": device.read(h.VENDOR_ID.offset, h.VENDOR_ID.width),
        "device": device.read(h.DEVICE_ID.offset, h.DEVICE_ID.width),
        # One dword from the revision: programming interface, subclass, base class above it.
        "class": device.read(h.REVISION_ID.offset, 4) >> 8 * h.REVISION_ID.width,
        "subsystem_vendor": device.read(
            TYPE0.SUBSYSTEM_VENDOR_ID.offset, TYPE0.SUBSYSTEM_VENDOR_ID.width
        ),
        "subsystem_device": device.read(TYPE0.SUBSYSTEM_ID.offset, TYPE0.SUBSYSTEM_ID.width),
        "header_type": h.HEADER_TYPE.LAYOUT.get(
            device.read(h.HEADER_TYPE.offset, h.HEADER_TYPE.width)
        ),
    }
