"""Pass 4: checked program -> elaborated model, the one set of facts every output reads.

The passes: parse (text -> lark tree), build (tree -> declarations, model.py), resolve (`use`
lines -> the groups' registers), check (every rule, with source positions; arrays expanded and
`length auto` filled in), elaborate (this module: each value computed once), then the writers,
which only format: emit (generated/*.py), report (docs/policy-report.md) and linux
(docs/policy-vs-linux-fields.md).

Elaboration reports nothing: a checked program is valid, so every constant here evaluates.
Each expression a device decides (an offset, a length, a condition) is kept three ways: its
value when it is a constant, the Python the runtime evaluates, and its text as written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from pciback.compiler.check import Program
from pciback.compiler.evaluate import evaluate, to_python, to_text
from pciback.compiler.model import (
    MATCH_KEY_BITS,
    BlockDecl,
    CapabilityFieldRef,
    ChainDecl,
    Expr,
    FieldDecl,
    GroupDecl,
    HookUse,
    LayoutDecl,
    MatchDecl,
    RegisterDecl,
    SourceFile,
    UseDecl,
    device_refs,
)
from pciback.tables import Access, Backing, BlockKind, Edge


@dataclass(frozen=True, slots=True)
class Value:
    """An expression the device may decide: `constant` when it does not read the device."""

    constant: int | None
    python: str  # over the runtime's field lookup `f`
    text: str  # as the author wrote it
    params: tuple[str, ...]  # the device fields it reads, `register_field` / `block_register_field`

    @property
    def movable(self) -> bool:
        return self.constant is None


def _value(expr: Expr, consts: Mapping[str, int]) -> Value:
    refs = device_refs(expr)
    params = sorted(
        {
            f"{r.block}_{r.register}_{r.field}"
            if isinstance(r, CapabilityFieldRef)
            else f"{r.register}_{r.field}"
            for r in refs
        }
    )
    return Value(
        constant=None if refs else evaluate(expr, consts),
        python=to_python(expr, consts),
        text=to_text(expr),
        params=tuple(params),
    )


def _maybe(expr: Expr | None, consts: Mapping[str, int]) -> Value | None:
    return None if expr is None else _value(expr, consts)


def bits_text(msb: int, lsb: int) -> str:
    return f"{msb}" if msb == lsb else f"{msb}:{lsb}"


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    msb: int
    lsb: int
    width: int
    mask: int
    backing: Backing
    initial: int | None  # a shadow's initial value or the constant; None: from hardware
    access: Access
    permissive: Access | None
    hooks: tuple[HookUse, ...]
    reason: str
    linux: str | None  # how Linux treats it, when the policy notes a difference
    source: str
    line: int

    @property
    def bits(self) -> str:
        return bits_text(self.msb, self.lsb)

    @property
    def write_hook(self) -> HookUse | None:
        return next((h for h in self.hooks if h.kind == "write"), None)

    @property
    def write_edge(self) -> Edge:
        hook = self.write_hook
        return Edge(hook.edge) if hook is not None else Edge.ANY

    @property
    def read_hook(self) -> HookUse | None:
        return next((h for h in self.hooks if h.kind == "read"), None)

    @property
    def policy(self) -> str:
        """The guest's access, and its permissive one, as written."""
        permissive = f" (permissive {self.permissive.value})" if self.permissive else ""
        return self.access.value + permissive


@dataclass(frozen=True, slots=True)
class Array:
    """A register array as declared: its instances are registers of their own."""

    first: int
    stride: int
    count_text: str
    instances: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Register:
    name: str
    offset: Value
    width: int  # bytes
    condition: Value | None
    reason: str
    linux: str | None
    fields: tuple[Field, ...]
    source: str
    file: str
    array: Array | None = None  # set on an array as declared, never on an instance
    section: str | None = None  # the section it is written in (`condition` includes its)


@dataclass(frozen=True, slots=True)
class Section:
    """Registers written under one condition: `condition` is the section's own, which each
    of them carries (before its own, if it has one)."""

    name: str
    condition: Value
    reason: str
    registers: tuple[str, ...]
    source: str


@dataclass(frozen=True, slots=True)
class Seize:
    """A seize-time check or action the block names (`seize check NAME "why"`)."""

    kind: str  # "check" or "action"
    name: str
    reason: str
    source: str


@dataclass(frozen=True, slots=True)
class Use:
    """`use GROUP`: the group's registers stand here."""

    group: str
    source: str  # the group's declaration


@dataclass(frozen=True, slots=True)
class Match:
    key: str
    values: tuple[int, ...]
    texts: tuple[str, ...]
    mask: int | None
    mask_text: str | None
    listed: bool

    @property
    def full_mask(self) -> int:
        """The mask, or every bit of the key when none is written."""
        if self.mask is not None:
            return self.mask
        return (1 << MATCH_KEY_BITS[self.key]) - 1

    def text(self, *, as_written: bool) -> str:
        """`key = V / M` or `key in (V, W)`: as written, or each value in hex."""
        if as_written:
            values, mask = self.texts, self.mask_text
        else:
            values = tuple(f"{v:#x}" for v in self.values)
            mask = f"{self.mask:#x}" if self.mask is not None else None
        if self.listed:
            return f"{self.key} in ({', '.join(values)})"
        return f"{self.key} = {values[0]}" + (f" / {mask}" if mask is not None else "")


@dataclass(frozen=True, slots=True)
class Rest:
    reason: str
    condition: Value | None


@dataclass(frozen=True, slots=True)
class Chain:
    """A chain of records: its registers' offsets are from the record's start."""

    name: str
    count: Value
    start: Value
    next: Value
    most: int
    registers: tuple[Register, ...]  # arrays expanded
    shown: tuple[Register, ...]  # an array once as declared
    reason: str
    source: str


@dataclass(frozen=True, slots=True)
class Block:
    kind: BlockKind
    name: str
    ident: int | None
    length: Value | None
    length_auto: bool
    hidden: bool
    policy_reason: str
    rest: Rest | None
    reason: str
    matches: tuple[Match, ...]
    items: tuple[Register | Use, ...]  # as written, arrays expanded, groups as `use`
    shown: tuple[Register, ...]  # every register, an array once as declared
    own: tuple[Register, ...]  # the block's own registers, an array once as declared
    source: str
    chains: tuple[Chain, ...] = ()
    sections: tuple[Section, ...] = ()
    seize: tuple[Seize, ...] = ()

    @property
    def length_text(self) -> str:
        """`auto = EXPR` when derived."""
        if self.length is None:
            return ""
        return f"auto = {self.length.text}" if self.length_auto else self.length.text


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    reason: str
    registers: tuple[Register, ...]  # arrays expanded
    shown: tuple[Register, ...]  # an array once as declared
    source: str
    file: str


@dataclass(frozen=True, slots=True)
class Const:
    name: str
    value: int
    reason: str
    source: str


@dataclass(frozen=True, slots=True)
class Hook:
    name: str
    kind: str
    params: tuple[str, ...]
    reason: str
    source: str


@dataclass(frozen=True, slots=True)
class LayoutField:
    name: str
    msb: int
    lsb: int
    width: int
    mask: int
    reason: str
    source: str

    @property
    def bits(self) -> str:
        return bits_text(self.msb, self.lsb)


@dataclass(frozen=True, slots=True)
class LayoutRegister:
    name: str
    offset: int
    width: int  # bytes
    reason: str
    fields: tuple[LayoutField, ...]
    source: str


@dataclass(frozen=True, slots=True)
class Layout:
    """A structure named for the code (`layout NAME`): no table is made of it."""

    name: str
    reason: str
    registers: tuple[LayoutRegister, ...]
    consts: tuple[Const, ...]
    length: int | None  # its registers' extent; None without registers
    source: str


@dataclass(frozen=True, slots=True)
class File:
    path: str
    sha256: str
    consts: tuple[Const, ...]
    hooks: tuple[Hook, ...]
    groups: tuple[Group, ...]
    blocks: tuple[Block, ...]
    layouts: tuple[Layout, ...] = ()


@dataclass(frozen=True, slots=True)
class Model:
    files: tuple[File, ...]
    groups: Mapping[str, Group]


def elaborate(program: Program) -> Model:
    return _Elaborator(program.consts).model(program.files)


class _Elaborator:
    """Each register declaration is elaborated once, wherever it stands (in its group, in every
    block that uses the group, once as an array's instance and once as the array shown)."""

    def __init__(self, consts: Mapping[str, int]) -> None:
        self.consts = consts
        self.registers: dict[int, Register] = {}  # by the declaration's id; the program holds it

    def model(self, files: tuple[SourceFile, ...]) -> Model:
        own_groups = {src.path: tuple(self.group(g, src.path) for g in src.groups) for src in files}
        groups: dict[str, Group] = {}
        for src in files:  # the first of a name, as the checker takes it
            for group in own_groups[src.path]:
                groups.setdefault(group.name, group)
        return Model(tuple(self.file(src, own_groups[src.path], groups) for src in files), groups)

    def file(
        self, src: SourceFile, own_groups: tuple[Group, ...], groups: Mapping[str, Group]
    ) -> File:
        consts = self.consts
        return File(
            path=src.path,
            sha256=hashlib.sha256(src.text.encode("utf-8")).hexdigest(),
            consts=tuple(
                Const(c.name, evaluate(c.value, consts), c.reason, f"{src.path}:{c.pos.line}")
                for c in src.consts
            ),
            hooks=tuple(
                Hook(h.name, h.kind, h.params, h.reason, f"{src.path}:{h.pos.line}")
                for h in src.hooks
            ),
            groups=own_groups,
            blocks=tuple(self.block(b, src, groups) for b in src.blocks),
            layouts=tuple(_layout(layout, consts, src.path) for layout in src.layouts),
        )

    def group(self, group: GroupDecl, file: str) -> Group:
        return Group(
            name=group.name,
            reason=group.reason,
            registers=tuple(self.register(r) for r in group.registers),
            shown=self.shown(group.registers, group.registers),
            source=f"{file}:{group.pos.line}",
            file=file,
        )

    def block(self, block: BlockDecl, src: SourceFile, groups: Mapping[str, Group]) -> Block:
        consts = self.consts
        policy = block.policies[0] if block.policies else None
        rest = block.rests[0] if block.rests else None
        own = tuple(i for i in block.items if isinstance(i, RegisterDecl))
        return Block(
            kind=block.kind,
            name=block.name,
            ident=evaluate(block.ident, consts) if block.ident is not None else None,
            length=_maybe(block.length, consts),
            length_auto=block.length_auto is not None,
            hidden=bool(policy and policy.hidden),
            policy_reason=policy.reason if policy else "",
            rest=Rest(rest.reason, _maybe(rest.condition, consts)) if rest else None,
            reason=block.reason,
            matches=tuple(_match(m, consts) for m in block.matches),
            items=tuple(
                Use(i.group, groups[i.group].source) if isinstance(i, UseDecl) else self.register(i)
                for i in block.items
            ),
            shown=self.shown(block.registers, block.registers),
            own=self.shown(own, block.registers),
            source=f"{src.path}:{block.pos.line}",
            chains=tuple(self.chain(c) for c in block.chains),
            sections=tuple(
                Section(
                    s.name,
                    _value(s.condition, consts),
                    s.reason,
                    s.registers,
                    f"{src.path}:{s.pos.line}",
                )
                for s in block.sections
            ),
            seize=tuple(
                Seize(s.kind, s.name, s.reason, f"{src.path}:{s.pos.line}") for s in block.seize
            ),
        )

    def chain(self, chain: ChainDecl) -> Chain:
        consts = self.consts
        return Chain(
            name=chain.name,
            count=_value(chain.count, consts),
            start=_value(chain.start, consts),
            next=_value(chain.next, consts),
            most=chain.most,
            registers=tuple(self.register(r) for r in chain.registers),
            shown=self.shown(chain.registers, chain.registers),
            reason=chain.reason,
            source=f"{chain.pos.file}:{chain.pos.line}",
        )

    def shown(
        self, registers: tuple[RegisterDecl, ...], siblings: tuple[RegisterDecl, ...]
    ) -> tuple[Register, ...]:
        """The registers, an array's instances shown once, as the array (its instances looked
        for among `siblings`: an array is expanded whole wherever it stands)."""
        shown: list[Register] = []
        arrays: set[int] = set()
        for reg in registers:
            if reg.origin is None:
                shown.append(self.register(reg))
            elif id(reg.origin) not in arrays:
                arrays.add(id(reg.origin))
                shown.append(self.register(reg.origin, siblings))
        return tuple(shown)

    def register(self, reg: RegisterDecl, siblings: tuple[RegisterDecl, ...] = ()) -> Register:
        done = self.registers.get(id(reg))
        if done is None:
            done = self.registers[id(reg)] = _register(reg, self.consts, siblings)
        return done


def _layout(layout: LayoutDecl, consts: Mapping[str, int], path: str) -> Layout:
    registers = tuple(
        LayoutRegister(
            name=reg.name,
            offset=evaluate(reg.offset, consts),
            width=reg.width,
            reason=reg.reason,
            fields=tuple(
                LayoutField(f.name, f.msb, f.lsb, f.width, f.mask, f.reason, f"{path}:{f.pos.line}")
                for f in reg.fields
            ),
            source=f"{path}:{reg.pos.line}",
        )
        for reg in layout.registers
    )
    return Layout(
        name=layout.name,
        reason=layout.reason,
        registers=registers,
        consts=tuple(
            Const(c.name, evaluate(c.value, consts), c.reason, f"{path}:{c.pos.line}")
            for c in layout.consts
        ),
        length=max((r.offset + r.width for r in registers), default=None),
        source=f"{path}:{layout.pos.line}",
    )


def _match(match: MatchDecl, consts: Mapping[str, int]) -> Match:
    return Match(
        key=match.key,
        values=tuple(evaluate(v, consts) for v in match.values),
        texts=tuple(to_text(v) for v in match.values),
        mask=evaluate(match.mask, consts) if match.mask is not None else None,
        mask_text=to_text(match.mask) if match.mask is not None else None,
        listed=match.listed,
    )


def _register(
    reg: RegisterDecl, consts: Mapping[str, int], siblings: tuple[RegisterDecl, ...]
) -> Register:
    array = None
    if reg.array is not None:
        decl = reg.array
        array = Array(
            first=evaluate(decl.first, consts) if decl.first is not None else 0,
            stride=evaluate(decl.stride, consts) if decl.stride is not None else reg.width,
            count_text=to_text(decl.count),
            instances=tuple(r.name for r in siblings if r.origin is reg),
        )
    return Register(
        name=reg.name,
        offset=_value(reg.offset, consts),
        width=reg.width,
        condition=_maybe(reg.condition, consts),
        reason=reg.reason,
        linux=reg.linux.treatment if reg.linux else None,
        fields=tuple(_field(f, consts) for f in reg.fields),
        source=f"{reg.pos.file}:{reg.pos.line}",
        file=reg.pos.file,
        array=array,
        section=reg.section,
    )


def _field(fld: FieldDecl, consts: Mapping[str, int]) -> Field:
    return Field(
        name=fld.name,
        msb=fld.msb,
        lsb=fld.lsb,
        width=fld.width,
        mask=fld.mask,
        backing=fld.backing.kind,
        initial=evaluate(fld.backing.value, consts) if fld.backing.value is not None else None,
        access=Access(fld.access),
        permissive=Access(fld.permissive) if fld.permissive is not None else None,
        hooks=fld.hooks,
        reason=fld.reason,
        linux=fld.linux.treatment if fld.linux else None,
        source=f"{fld.pos.file}:{fld.pos.line}",
        line=fld.pos.line,
    )
