"""The model the compiler builds from a parse tree: typed, positioned, independent of lark.

Backings and block kinds are the runtime's enums (pciback.tables), not copies: one set of words
in the policy, the compiler and the tables generated/ instantiates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pciback.compiler.diagnostics import Pos
from pciback.tables import Backing, BlockKind


# -- expressions ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Num:
    value: int
    pos: Pos


@dataclass(frozen=True, slots=True)
class NameRef:
    """A named constant."""

    name: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class FieldRef:
    """`register.field` of the same block, read from the device."""

    register: str
    field: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class CapabilityFieldRef:
    """`block.register.field`: a cached field of another capability of the same function, read
    when the device is seized (0 when the function lacks that capability or the register)."""

    block: str
    register: str
    field: str
    pos: Pos

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.block, self.register, self.field)


@dataclass(frozen=True, slots=True)
class Call:
    """`min(a, b, ...)`, `max(a, b, ...)`."""

    function: str
    args: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "not"
    operand: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # or and == != < <= > >= & + - * / << >>
    left: Expr
    right: Expr
    pos: Pos


Expr = Num | NameRef | FieldRef | CapabilityFieldRef | Call | Unary | Binary


def operands(expr: Expr) -> tuple[Expr, ...]:
    if isinstance(expr, Unary):
        return (expr.operand,)
    if isinstance(expr, Binary):
        return (expr.left, expr.right)
    if isinstance(expr, Call):
        return expr.args
    return ()


def _atoms(expr: Expr | None) -> list[Expr]:
    """The leaves of an expression, left to right."""
    if expr is None:
        return []
    operands_ = operands(expr)
    if not operands_:
        return [expr]
    return [atom for operand in operands_ for atom in _atoms(operand)]


def field_refs(expr: Expr | None) -> list[FieldRef]:
    """The fields of the expression's own block that it reads."""
    return [a for a in _atoms(expr) if isinstance(a, FieldRef)]


def capability_refs(expr: Expr | None) -> list[CapabilityFieldRef]:
    """The fields of other capabilities that it reads."""
    return [a for a in _atoms(expr) if isinstance(a, CapabilityFieldRef)]


def device_refs(expr: Expr | None) -> list[FieldRef | CapabilityFieldRef]:
    """Every device field it reads: its value is known only once a device is seized."""
    return [a for a in _atoms(expr) if isinstance(a, FieldRef | CapabilityFieldRef)]


def name_refs(expr: Expr | None) -> list[NameRef]:
    return [a for a in _atoms(expr) if isinstance(a, NameRef)]


def calls(expr: Expr | None) -> list[Call]:
    if expr is None:
        return []
    found = [expr] if isinstance(expr, Call) else []
    return found + [c for operand in operands(expr) for c in calls(operand)]


# -- declarations --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BackingDecl:
    kind: Backing
    value: Expr | None  # shadow initial value (None: from hardware) or the constant


@dataclass(frozen=True, slots=True)
class HookUse:
    kind: str  # "write" or "read"
    name: str
    edge: str  # "any", "rising", "falling", "change"
    pos: Pos

    @property
    def keyword(self) -> str:
        """As written before the hook's name: `on_read`, `on_write`, `on_rising`..."""
        return f"on_{self.kind}" if self.edge == "any" else f"on_{self.edge}"


@dataclass(frozen=True, slots=True)
class LinuxNote:
    """`linux WORD`: how Linux's xen-pciback treats a register or field this policy treats
    otherwise (an access class, `undescribed` or `refused`); the reason says why."""

    treatment: str
    pos: Pos


# The bits of each key a `match` may test: the IDs, the class code (base class, subclass,
# programming interface) and the header type's layout (its multi-function bit apart).
MATCH_KEY_BITS = {
    "vendor": 16,
    "device": 16,
    "subsystem_vendor": 16,
    "subsystem_device": 16,
    "class": 24,
    "header_type": 7,
}


class BitRange:
    """Bits `msb` down to `lsb` of a register: a field's, in a block or in a layout."""

    __slots__ = ()
    msb: int
    lsb: int

    @property
    def width(self) -> int:
        return self.msb - self.lsb + 1

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb if self.msb >= self.lsb else 0


@dataclass(frozen=True, slots=True)
class FieldDecl(BitRange):
    name: str
    msb: int
    lsb: int
    backing: BackingDecl
    access: str
    permissive: str | None
    hooks: tuple[HookUse, ...]
    reason: str
    pos: Pos
    bits_pos: Pos
    linux: LinuxNote | None = None


@dataclass(frozen=True, slots=True)
class ArrayDecl:
    """`[FIRST .. COUNT]` after a register's name, with its stride: instances FIRST to COUNT-1,
    instance i at the register's offset plus i times the stride."""

    first: Expr | None  # None: 0
    count: Expr
    stride: Expr | None  # None: the register's width
    pos: Pos


@dataclass(frozen=True, slots=True)
class RegisterDecl:
    name: str
    offset: Expr
    width: int  # bytes
    condition: Expr | None
    reason: str
    fields: tuple[FieldDecl, ...]
    pos: Pos
    # An array as declared; once expanded, each instance carries its array and its index.
    array: ArrayDecl | None = None
    index: int | None = None
    origin: RegisterDecl | None = None  # an instance's array, as declared
    linux: LinuxNote | None = None
    section: str | None = None  # the section it stands in; its condition is in `condition`


@dataclass(frozen=True, slots=True)
class MatchDecl:
    key: str
    value: Expr
    mask: Expr | None
    pos: Pos
    # `KEY in (V, W, ...)`: the values after the first (V is `value`), any of which matches.
    alternatives: tuple[Expr, ...] = ()
    listed: bool = False  # written as `in (...)`, even of one value

    @property
    def values(self) -> tuple[Expr, ...]:
        return (self.value, *self.alternatives)


@dataclass(frozen=True, slots=True)
class PolicyDecl:
    hidden: bool
    reason: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class RestDecl:
    """`rest ro "why"`: the capability's undescribed bytes, up to the next capability, are the
    host's (read from the device, never written)."""

    access: str
    reason: str
    pos: Pos
    condition: Expr | None = None


@dataclass(frozen=True, slots=True)
class ChainDecl:
    """`chain NAME[COUNT] @START next STEP { registers }`: records one after another, each
    `STEP` bytes (computed from its own fields) after the one before. Its registers' offsets
    are from the record's start; once checked, their arrays are expanded and `most` is the
    largest count the count's fields can give."""

    name: str
    count: Expr
    start: Expr
    next: Expr
    registers: tuple[RegisterDecl, ...]
    reason: str
    pos: Pos
    most: int = 0


@dataclass(frozen=True, slots=True)
class SectionDecl:
    """`section NAME if COND "why" { .. }`: registers sharing a condition. Its registers are
    the block's, each with the section's condition and-ed before its own; this keeps what the
    checker and the report say of the section itself."""

    name: str
    condition: Expr  # as written on the section, without an enclosing section's
    reason: str
    pos: Pos
    registers: tuple[str, ...]  # the names of the registers written inside it
    within: str | None = None  # the section it was written inside (sections do not nest)
    empty: bool = False  # nothing inside, not even a section


@dataclass(frozen=True, slots=True)
class SeizeDecl:
    """`seize check NAME "why"` or `seize action NAME "why"`: Python of pciback/hooks that
    runs when a view of a device is built, the capability's check or its action."""

    kind: str  # "check" or "action"
    name: str
    reason: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class UseDecl:
    """`use GROUP` inside a block: the group's registers stand there."""

    group: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class GroupDecl:
    name: str
    reason: str
    registers: tuple[RegisterDecl, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class BlockDecl:
    kind: BlockKind
    name: str
    ident: Expr | None  # header type, capability ID; None for quirks
    length: Expr | None
    reason: str
    policies: tuple[PolicyDecl, ...]
    registers: tuple[RegisterDecl, ...]
    matches: tuple[MatchDecl, ...]
    pos: Pos
    # The block's registers and `use` lines in source order; `registers` is filled from it
    # once groups are resolved.
    items: tuple[RegisterDecl | UseDecl, ...] = ()
    rests: tuple[RestDecl, ...] = ()  # one at most (the checker says so)
    # Where `length auto` was written: the checker fills `length` with the registers' extent.
    length_auto: Pos | None = None
    chains: tuple[ChainDecl, ...] = ()
    sections: tuple[SectionDecl, ...] = ()  # in source order, nested ones after their own
    seize: tuple[SeizeDecl, ...] = ()


@dataclass(frozen=True, slots=True)
class ConstDecl:
    name: str
    value: Expr
    reason: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class HookDecl:
    kind: str  # "write" or "read"
    name: str
    params: tuple[str, ...]
    reason: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class LayoutFieldDecl(BitRange):
    """A layout's field: bits with a name, and no backing or access (nothing is decided)."""

    name: str
    msb: int
    lsb: int
    reason: str
    pos: Pos
    bits_pos: Pos


@dataclass(frozen=True, slots=True)
class LayoutRegisterDecl:
    """A layout's register: where it is and how wide, its fields if it is cut into any."""

    name: str
    offset: Expr
    width: int  # bytes
    reason: str
    fields: tuple[LayoutFieldDecl, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class LayoutDecl:
    """`layout NAME "why" { registers and constants }`: a structure the runtime reads that no
    block describes (a capability list's link, an MSI-X table entry in a BAR), named for the
    code; nothing of it reaches the tables."""

    name: str
    reason: str
    registers: tuple[LayoutRegisterDecl, ...]
    consts: tuple[ConstDecl, ...]
    pos: Pos


@dataclass(slots=True)
class SourceFile:
    path: str  # as shown in diagnostics and generated headers
    text: str
    consts: list[ConstDecl] = field(default_factory=list)
    hooks: list[HookDecl] = field(default_factory=list)
    blocks: list[BlockDecl] = field(default_factory=list)
    groups: list[GroupDecl] = field(default_factory=list)
    layouts: list[LayoutDecl] = field(default_factory=list)
