"""The model the compiler builds from a parse tree: typed, positioned, independent of lark."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from pciback.compiler.diagnostics import Pos


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
class Unary:
    op: str  # "not"
    operand: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # or and == != < <= > >= + - * <<
    left: Expr
    right: Expr
    pos: Pos


Expr = Num | NameRef | FieldRef | Unary | Binary


def field_refs(expr: Expr | None) -> list[FieldRef]:
    if expr is None:
        return []
    if isinstance(expr, FieldRef):
        return [expr]
    if isinstance(expr, Unary):
        return field_refs(expr.operand)
    if isinstance(expr, Binary):
        return field_refs(expr.left) + field_refs(expr.right)
    return []


def name_refs(expr: Expr | None) -> list[NameRef]:
    if expr is None:
        return []
    if isinstance(expr, NameRef):
        return [expr]
    if isinstance(expr, Unary):
        return name_refs(expr.operand)
    if isinstance(expr, Binary):
        return name_refs(expr.left) + name_refs(expr.right)
    return []


# -- declarations --------------------------------------------------------------------------------
class BackingKind(Enum):
    HW = "hw"
    CACHED = "cached"
    SHADOW = "shadow"
    CONST = "const"


@dataclass(frozen=True, slots=True)
class Backing:
    kind: BackingKind
    value: Expr | None  # shadow initial value (None: from hardware) or the constant


@dataclass(frozen=True, slots=True)
class HookUse:
    kind: str  # "write" or "read"
    name: str
    edge: str  # "any", "rising", "falling", "change"
    pos: Pos


@dataclass(frozen=True, slots=True)
class FieldDecl:
    name: str
    msb: int
    lsb: int
    backing: Backing
    access: str
    permissive: str | None
    hooks: tuple[HookUse, ...]
    reason: str
    pos: Pos
    bits_pos: Pos

    @property
    def width(self) -> int:
        return self.msb - self.lsb + 1

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb if self.msb >= self.lsb else 0


@dataclass(frozen=True, slots=True)
class RegisterDecl:
    name: str
    offset: Expr
    width: int  # bytes
    condition: Expr | None
    reason: str
    fields: tuple[FieldDecl, ...]
    pos: Pos


class BlockKindDecl(Enum):
    HEADER = "header"
    CAPABILITY = "capability"
    EXTENDED_CAPABILITY = "extended_capability"
    QUIRK = "quirk"


@dataclass(frozen=True, slots=True)
class MatchDecl:
    key: str
    value: Expr
    mask: Expr | None
    pos: Pos


@dataclass(frozen=True, slots=True)
class PolicyDecl:
    hidden: bool
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
    kind: BlockKindDecl
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


@dataclass(slots=True)
class SourceFile:
    path: str  # as shown in diagnostics and generated headers
    text: str
    consts: list[ConstDecl] = field(default_factory=list)
    hooks: list[HookDecl] = field(default_factory=list)
    blocks: list[BlockDecl] = field(default_factory=list)
    groups: list[GroupDecl] = field(default_factory=list)
