"""The audit of one device under one policy: rows of bits, each with who backs it, what a guest
write does in normal and in permissive mode, the hook, the reason and the DSL line.

Built read-only from a ConfigSpace: the engine decides the layout (which table lands where,
what is hidden, what is a gap), so the audit can never disagree with what a guest meets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import Enum

from pciback.engine.chain import EXT_START, STD_END, STD_START
from pciback.engine.registers import RegisterInstance
from pciback.engine.space import Blocked, ChainLink, ConfigSpace, Gap, HostOwned, PlacedCapability
from pciback.tables import Access, Backing, Field

HEADER_END = STD_START
BACKEND_SOURCE = "pciback/engine/space.py"


class Category(Enum):
    """What a guest write does to a bit, as the bit map colours it."""

    RO = "read-only"
    RW = "writable"
    RW1C = "write-1-to-clear"
    RESERVED = "reserved"
    HIDDEN = "hidden"
    HOST_OWNED = "host-owned"


_CATEGORY = {
    Access.RO: Category.RO,
    Access.RW: Category.RW,
    Access.RW1C: Category.RW1C,
    Access.RSVDP: Category.RESERVED,
    Access.RSVDZ: Category.RESERVED,
}


@dataclass(frozen=True, slots=True)
class FieldAudit:
    """One field of a row: bits [msb:lsb] of the row's register."""

    name: str
    lsb: int
    msb: int
    backing: str  # hw, cached, shadow, const; "device" for undescribed bytes; "" when hidden
    normal: str  # the access word: ro, rw, rw1c, rsvdp, rsvdz, hidden, host-owned
    permissive: str
    hook: str  # "on_write X", "on_read Y", comma separated; "" when none
    reason: str
    source: str  # DSL FILE:LINE, or where the backend decides it

    @property
    def mask(self) -> int:
        return ((1 << (self.msb - self.lsb + 1)) - 1) << self.lsb

    @property
    def bits(self) -> str:
        if self.lsb == 0 and self.msb >= 32:  # a run of undescribed or hidden bytes
            return f"{(self.msb + 1) // 8}B"
        return f"{self.msb}" if self.msb == self.lsb else f"{self.msb}:{self.lsb}"

    def category(self, permissive: bool) -> Category:
        return _category_of(self.permissive if permissive else self.normal)

    @property
    def reaches_device(self) -> bool:
        """Whether a guest's write of this field lands in the device's own bits (the engine
        writes back only device-backed bits: shadow, cached and const take nothing)."""
        return self.backing in ("hw", "device")


def _category_of(word: str) -> Category:
    if word == "hidden":
        return Category.HIDDEN
    if word == "host-owned":
        return Category.HOST_OWNED
    return _CATEGORY[Access(word)]


@dataclass(frozen=True, slots=True)
class Row:
    """One register (or one run of bytes no register describes) and its fields."""

    offset: int
    width: int  # bytes
    region: str  # "header", "capability msix @0x40", ...
    register: str
    fields: tuple[FieldAudit, ...]
    reason: str = ""  # the register's own reason
    source: str = ""

    def field_at(self, bit: int) -> FieldAudit:
        return next(f for f in self.fields if f.lsb <= bit <= f.msb)

    @property
    def end(self) -> int:
        return self.offset + self.width


@dataclass(frozen=True, slots=True)
class Audit:
    address: str
    size: int
    permissive: bool  # the mode the bit map shows; both are in every row
    rows: tuple[Row, ...]
    problems: tuple[str, ...]

    def row_at(self, offset: int) -> Row:
        return next(r for r in self.rows if r.offset <= offset < r.end)

    def find(self, register: str, region_prefix: str = "") -> Row:
        for row in self.rows:
            if row.register == register and row.region.startswith(region_prefix):
                return row
        raise KeyError(f"no register {register} in {region_prefix or 'the device'}")


def audit(space: ConfigSpace, address: str = "") -> Audit:
    regions = _regions(space)
    rows: list[Row] = []
    pos = 0
    while pos < space.size:
        slot = space.slot_at(pos)
        region = regions.get(pos) or _region_name(pos, regions)
        if isinstance(slot, RegisterInstance):
            stop = pos
            while stop < space.size and space.slot_at(stop) is slot:
                stop += 1
            rows.append(_register_row(slot, region, pos, stop))
            pos = stop
        elif isinstance(slot, ChainLink):
            rows.append(_link_row(slot, region))
            pos = slot.end
        else:
            # A run of one kind of undescribed byte, cut at region boundaries so that every
            # row belongs to one capability.
            stop = pos + 1
            while (
                stop < space.size
                and type(space.slot_at(stop)) is type(slot)
                and not isinstance(space.slot_at(stop), RegisterInstance | ChainLink)
                and stop not in regions
            ):
                stop += 1
            rows.append(_run_row(slot, pos, stop - pos, region, space))
            pos = stop
    return Audit(address, space.size, space.permissive, tuple(rows), tuple(space.problems))


# -- regions: which header or capability each byte belongs to ------------------------------------
def _regions(space: ConfigSpace) -> dict[int, str]:
    """Start offset -> name of every region that starts there."""
    names = {0: "header", HEADER_END: "capability space (no capability)"}
    for placed in space.standard + space.extended:
        names[placed.found.offset] = _capability_name(placed)
    if space.size > EXT_START and EXT_START not in names:
        names[EXT_START] = "extended space (no capability)"
    return names


def _capability_name(placed: PlacedCapability) -> str:
    found = placed.found
    kind = "extended capability" if found.extended else "capability"
    name = placed.table.name if placed.table is not None else "(no policy)"
    ident = f"{found.ident:#06x}" if found.extended else f"{found.ident:#04x}"
    hidden = ", hidden" if placed.hidden else ""
    return f"{kind} {name} {ident} @{found.offset:#x}{hidden}"


def _region_name(pos: int, regions: dict[int, str]) -> str:
    start = max(s for s in regions if s <= pos)
    if start < STD_END <= pos < EXT_START:
        return "capability space (no capability)"
    return regions[start]


# -- rows ------------------------------------------------------------------------------------------
def _register_row(inst: RegisterInstance, region: str, start: int, stop: int) -> Row:
    reg = inst.reg
    fields = tuple(_field(f) for f in sorted(reg.fields, key=lambda f: f.mask))
    if (start, stop) == (inst.offset, inst.end):
        return Row(inst.offset, inst.width, region, reg.name, fields, reg.reason, reg.source)
    # A capability list that overlaps itself: another capability's link won some of this
    # register's bytes. Only the bytes it still owns are its.
    lo, hi = 8 * (start - inst.offset), 8 * (stop - inst.offset) - 1
    kept = tuple(
        replace(f, lsb=max(f.lsb, lo) - lo, msb=min(f.msb, hi) - lo)
        for f in fields
        if f.lsb <= hi and f.msb >= lo
    )
    name = f"{reg.name}[{hi}:{lo}] of {inst.block} @{inst.block_base:#x}"
    return Row(start, stop - start, region, name, kept, reg.reason, reg.source)


def _field(fld: Field) -> FieldAudit:
    lsb = fld.shift
    msb = fld.mask.bit_length() - 1
    backing = fld.backing.value
    if fld.backing is Backing.SHADOW and fld.init is not None:
        backing = f"shadow({fld.init:#x})"
    elif fld.backing is Backing.CONST:
        backing = f"const({fld.init or 0:#x})"
    hooks = []
    if fld.on_write:
        edge = "" if fld.edge.value == "any" else f" ({fld.edge.value})"
        hooks.append(f"on_write {fld.on_write}{edge}")
    if fld.on_read:
        hooks.append(f"on_read {fld.on_read}")
    permissive = fld.permissive or fld.access
    return FieldAudit(
        name=fld.name,
        lsb=lsb,
        msb=msb,
        backing=backing,
        normal=fld.access.value,
        permissive=permissive.value,
        hook=", ".join(hooks),
        reason=fld.reason,
        source=fld.source,
    )


def _link_row(link: ChainLink, region: str) -> Row:
    # The backend rebuilds the list around hidden capabilities: ID and next pointer are its own.
    if link.width == 2:
        fields: Iterable[tuple[str, int, int]] = (("cap_id", 0, 7), ("next", 8, 15))
    else:
        fields = (("cap_id", 0, 15), ("version", 16, 19), ("next", 20, 31))
    why = "capability list link, rebuilt by the backend around hidden capabilities"
    return Row(
        link.offset,
        link.width,
        region,
        "cap_header",
        tuple(
            FieldAudit(name, lsb, msb, "backend", "ro", "ro", "", why, BACKEND_SOURCE)
            for name, lsb, msb in fields
        ),
        "",  # the reason is each field's: printing it once more says nothing new
        BACKEND_SOURCE,
    )


def _run_row(slot: object, offset: int, length: int, region: str, space: ConfigSpace) -> Row:
    msb = 8 * length - 1
    if isinstance(slot, Blocked):
        field = FieldAudit(
            "(hidden)",
            0,
            msb,
            "",
            "hidden",
            "hidden",
            "",
            _hidden_reason(offset, space),
            _hidden_source(offset, space),
        )
        name = "hidden"
    elif isinstance(slot, HostOwned):
        why = slot.description
        field = FieldAudit(
            "(host-owned)", 0, msb, "device", "host-owned", "host-owned", "", why, BACKEND_SOURCE
        )
        name = "host-owned"
    else:
        assert isinstance(slot, Gap)
        why = (
            "no table describes these bytes: read from the device, written only in permissive mode"
        )
        field = FieldAudit("(undescribed)", 0, msb, "device", "ro", "rw", "", why, BACKEND_SOURCE)
        name = "undescribed"
    return Row(offset, length, region, name, (field,), field.reason, field.source)


def _placed_over(offset: int, space: ConfigSpace) -> PlacedCapability | None:
    caps = space.extended if offset >= EXT_START else space.standard
    before = [p for p in caps if p.found.offset <= offset]
    return max(before, key=lambda p: p.found.offset) if before else None


def _hidden_reason(offset: int, space: ConfigSpace) -> str:
    placed = _placed_over(offset, space)
    if placed is not None and placed.table is not None and placed.table.hidden:
        return placed.table.policy_reason or "hidden by the policy"
    return "hidden for this device (--hide-cap, the hide list, or a failed capability check)"


def _hidden_source(offset: int, space: ConfigSpace) -> str:
    placed = _placed_over(offset, space)
    if placed is not None and placed.table is not None and placed.table.hidden:
        return placed.table.source
    return BACKEND_SOURCE
