"""The table types that generated/ instantiates: the compiled policy, as plain frozen data.

Each field has two independent properties: its backing (where a guest read comes from) and its
guest access (what a guest write does). The engine merges them bit by bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol


class FieldLookup(Protocol):
    """A device's field values, for a block's lengths, conditions and moving offsets."""

    def __call__(self, register: str, field: str, /) -> int:
        """A field of the block being placed, as the device reports it."""

    def of(self, block: str, register: str, field: str, /) -> int:
        """A field of another capability of the same function (the table named `block`), as
        read at seize; 0 when the function has no such capability or the register is absent
        from it."""


Expr = Callable[[FieldLookup], int]


class Backing(Enum):
    HW = "hw"  # the device, on every read
    CACHED = "cached"  # the device, read once when the device is seized
    SHADOW = "shadow"  # a value the backend keeps
    CONST = "const"  # a fixed value


class Access(Enum):
    RO = "ro"  # guest writes ignored
    RW = "rw"  # guest writes taken (into the shadow, or to the device)
    RW1C = "rw1c"  # writing 1 clears; never echoed back by a read-modify-write
    RSVDP = "rsvdp"  # reads 0; the device's value preserved on writes
    RSVDZ = "rsvdz"  # reads 0; 0 written to the device


class Edge(Enum):
    ANY = "any"
    RISING = "rising"  # old == 0 and new != 0
    FALLING = "falling"  # old != 0 and new == 0
    CHANGE = "change"  # old != new: a write of the field's current value runs nothing


class BlockKind(Enum):
    HEADER = "header"
    CAPABILITY = "capability"
    EXTENDED_CAPABILITY = "extended_capability"
    QUIRK = "quirk"


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    mask: int  # bits of the register
    backing: Backing
    access: Access
    source: str  # "FILE:LINE" of the field in the policy
    init: int | None = None  # shadow's initial / const's value, field-relative; None: device
    permissive: Access | None = None  # the access granted instead in permissive mode
    on_write: str | None = None
    edge: Edge = Edge.ANY
    on_read: str | None = None
    reason: str = ""

    @property
    def shift(self) -> int:
        return (self.mask & -self.mask).bit_length() - 1


@dataclass(frozen=True, slots=True)
class Register:
    name: str
    offset: int | Expr  # from the block's start; an Expr when it moves with device fields
    width: int  # bytes: 1, 2 or 4
    fields: tuple[Field, ...]
    source: str
    present: Expr | None = None  # None: always present
    reason: str = ""
    offset_text: str = ""
    present_text: str = ""


@dataclass(frozen=True, slots=True)
class Chain:
    """Records of varying length one after another (Enhanced Allocation's entries): record i
    starts `next` bytes after record i-1, `next` computed from record i-1's own fields. The
    registers' offsets, conditions and `next` read the record's fields (`f`, relative to the
    record); `count` and `start` read the block's. At most `most` records, whatever the device
    claims; a record is laid out only whole, inside its block."""

    name: str
    count: int | Expr
    start: int | Expr
    next: Expr
    most: int
    registers: tuple[Register, ...]
    source: str
    reason: str = ""
    count_text: str = ""
    next_text: str = ""


@dataclass(frozen=True, slots=True)
class Bits:
    """A named field's place in its register, as generated/names.py names it (pci_regs.h's
    masks): `mask` is the field's bits in place, `shift` its lowest bit, `width` its bit count."""

    mask: int
    shift: int
    width: int

    def get(self, register: int) -> int:
        """The field's value in a register value."""
        return (register & self.mask) >> self.shift

    def put(self, register: int, value: int) -> int:
        """The register value with the field set to `value` (cut to the field's width)."""
        return (register & ~self.mask) | ((value << self.shift) & self.mask)


class RegisterName(Protocol):
    """A register of generated/names.py at a fixed offset (its class is what is passed):
    where it lies from its block's start and how many bytes it has."""

    @property
    def offset(self) -> int: ...

    @property
    def width(self) -> int: ...


@dataclass(frozen=True, slots=True)
class MatchRule:
    key: str  # vendor, device, subsystem_vendor, subsystem_device, class
    value: int
    mask: int
    # `match device in (A, B, ...)`: the values besides the first that the rule accepts, so
    # that one table serves every device of a list.
    alternatives: tuple[int, ...] = ()

    def accepts(self, ident: int) -> bool:
        """Whether a device's ID (-1: it has none of this key) matches, under the mask."""
        return any(
            (ident & self.mask) == (value & self.mask) for value in (self.value, *self.alternatives)
        )


@dataclass(frozen=True, slots=True)
class Block:
    kind: BlockKind
    name: str
    ident: int  # header type, capability ID, extended capability ID; 0 for quirks
    registers: tuple[Register, ...]
    source: str
    length: int | Expr | None = None
    length_text: str = ""
    hidden: bool = False
    policy_reason: str = ""
    matches: tuple[MatchRule, ...] = ()
    reason: str = ""
    # The capability's bytes up to the next capability that no register describes are read
    # from the device and never written, in any mode (`rest ro` in the policy).
    rest: bool = False
    rest_if: Expr | None = None  # None: wherever the table is laid out
    rest_reason: str = ""
    chains: tuple[Chain, ...] = ()  # laid out after the registers, in order
    # What runs when a view of a device this table describes is built: the capability's
    # checks (a failed one hides it) and actions, by the names pciback/hooks implements.
    seize: tuple[SeizeHook, ...] = ()


@dataclass(frozen=True, slots=True)
class SeizeHook:
    """`seize check NAME "why"` or `seize action NAME "why"` in a capability's block."""

    kind: str  # "check" or "action"
    name: str
    source: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class HookDecl:
    name: str
    kind: str  # "write" or "read"
    params: tuple[str, ...]
    source: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PolicyModule:
    """One compiled policy file."""

    source: str
    sha256: str
    blocks: tuple[Block, ...]
    hooks: tuple[HookDecl, ...] = field(default=())
