"""Pass 3: every rule a policy must obey, each broken rule reported with its position.

The checks run over the whole program (the prelude and the files given) so that one run reports
every error of every file. This is the last pass that reports anything: it also expands arrays
and fills in `length auto`, so that what it passes to elaborate is valid as it stands.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from pciback.compiler.chains import check_chains
from pciback.compiler.diagnostics import Diagnostic, Diagnostics, Pos, closest, did_you_mean
from pciback.compiler.evaluate import (
    DivisionByZero,
    EvalError,
    FieldValues,
    Unresolved,
    evaluate,
    to_text,
)
from pciback.compiler.extent import elaborate_length
from pciback.compiler.model import (
    MATCH_KEY_BITS,
    ArrayDecl,
    Binary,
    BlockDecl,
    CapabilityFieldRef,
    Expr,
    FieldDecl,
    FieldRef,
    GroupDecl,
    HookDecl,
    LayoutDecl,
    LayoutRegisterDecl,
    Num,
    RegisterDecl,
    SourceFile,
    Unary,
    UseDecl,
    capability_refs,
    device_refs,
    field_refs,
    name_refs,
    operands,
)
from pciback.compiler.resolve import expand_uses
from pciback.tables import Backing, BlockKind

# Where a block's registers may lie (offsets relative to the block's start).
HEADER_SIZE = 0x40
STD_CAP_SPACE = 0x100 - 0x40  # standard capabilities live in 0x40..0xFF
EXT_CAP_SPACE = 0x1000 - 0x100  # extended capabilities live in 0x100..0xFFF
CONFIG_SPACE = 0x1000
STD_CHAIN_LINK = 2  # capability ID and next pointer: the runtime's, never the policy's
EXT_CHAIN_LINK = 4
_CHAIN_LINK = {
    BlockKind.CAPABILITY: STD_CHAIN_LINK,
    BlockKind.EXTENDED_CAPABILITY: EXT_CHAIN_LINK,
}
MAX_COMBINATIONS = 4096
# Instances one array may have: a 4096-byte space holds no more 16-byte registers than this,
# and every instance is a register of the compiled tables.
MAX_INSTANCES = 256
# Fields up to this wide are sorted into classes of values a layout cannot tell apart, when
# there are too many combinations of their values to enumerate (BlockChecker._value_classes).
_CLASSIFY_BITS = 16
_KIND_WORDS = {
    BlockKind.HEADER: "a header",
    BlockKind.CAPABILITY: "a capability",
    BlockKind.EXTENDED_CAPABILITY: "an extended capability",
    BlockKind.QUIRK: "a quirk",
}
_HOOK_PARAMS = {"write": ("old", "new"), "read": ("value",)}
_DATA_ACCESS = {"rw", "rw1c"}


@dataclass(frozen=True, slots=True)
class Program:
    files: tuple[SourceFile, ...]
    consts: Mapping[str, int]
    hooks: Mapping[str, HookDecl]
    groups: Mapping[str, GroupDecl]
    warnings: tuple[Diagnostic, ...] = ()


def check(
    files: Iterable[SourceFile],
    diags: Diagnostics,
    *,
    unused_in: Collection[str] | None = None,
    strict_reasons: bool = False,
) -> Program:
    """Every rule, over the whole program. Unused declarations are warned about only in the
    files of `unused_in` (default: every file), those whose users are all known; a field that
    grants more than read-only access without a reason is warned about under `strict_reasons`."""
    files = tuple(files)
    consts = _check_consts(files, diags)
    hooks = _check_hooks(files, diags)
    declared = _declared_consts(files)
    # Arrays first: each becomes its instances, so that every later check (and emit) sees
    # ordinary registers. A count may read another capability: the catalog as declared. A
    # group's arrays are expanded once, by the fields of the group, and the blocks that use it
    # take the instances.
    catalog = Catalog(files)
    if any(r.array is not None for src in files for g in src.groups for r in g.registers):
        for src in files:
            src.groups = [
                _expand_group(g, BlockChecker, consts, hooks, diags, declared, catalog)
                for g in src.groups
            ]
        named: dict[str, GroupDecl] = {}
        for src in files:
            for group in src.groups:
                named.setdefault(group.name, group)
        expand_uses(files, named, Diagnostics())  # unknown groups were reported by resolve
    for src in files:
        src.blocks = [
            BlockChecker(block, consts, hooks, diags, declared, catalog).expand_arrays()
            for block in src.blocks
        ]
        src.blocks = [
            check_chains(block, BlockChecker, consts, hooks, diags, declared, catalog)
            for block in src.blocks
        ]
        # Once every register is known: `length auto` is their extent.
        src.blocks = [elaborate_length(block, consts, diags) for block in src.blocks]
    catalog = Catalog(files)
    seen: dict[tuple[BlockKind, str], Pos] = {}
    idents: dict[tuple[BlockKind, int], BlockDecl] = {}
    for src in files:
        for block in src.blocks:
            key = (block.kind, block.name)
            if key in seen:
                diags.error(
                    block.pos,
                    f"duplicate {block.kind.value} '{block.name}' (first defined at {seen[key]})",
                )
            else:
                seen[key] = block.pos
                _check_ident_unique(block, consts, idents, diags)
            BlockChecker(block, consts, hooks, diags, declared, catalog).run()
    _check_capability_cycles(catalog, diags)
    groups: dict[str, GroupDecl] = {}
    for src in files:
        for group in src.groups:
            groups.setdefault(group.name, group)
    _check_unused_groups(files, groups, consts, hooks, diags)
    _check_layouts(files, consts, declared, diags)
    _check_generated_names(files, diags)
    unused_in = {src.path for src in files} if unused_in is None else set(unused_in)
    _check_unused(files, unused_in, diags)
    if strict_reasons:
        _check_reasons(files, diags)
    return Program(files, consts, hooks, groups)


def _check_generated_names(files: tuple[SourceFile, ...], diags: Diagnostics) -> None:
    """generated/names.py names every register group and block in one namespace, each constant
    in CONST's, each register in its block's and each field in its register's, upper-cased: two
    names that differ only in case, or a block that shares its name with another kind of block
    or a group, would be one name there. Exact duplicates of one kind are reported on their own."""
    seen: dict[str, tuple[str, str, Pos]] = {}
    constants: dict[str, tuple[str, str, Pos]] = {}

    def claim(name: str, kind: str, pos: Pos, where: dict[str, tuple[str, str, Pos]]) -> None:
        first = where.setdefault(name.upper(), (name, kind, pos))
        if first[2] == pos or (first[0] == name and first[1] == kind):
            return
        diags.error(
            pos,
            f"{kind} '{name}' and {first[1]} '{first[0]}' (at {first[2]}) would have one name,"
            f" {name.upper()}, in generated/names.py",
        )

    for src in files:
        for const in src.consts:
            claim(const.name, "constant", const.pos, constants)
        for group in src.groups:
            claim(group.name, "register group", group.pos, seen)
            _claim_registers(group.registers, claim)
        for block in src.blocks:
            claim(block.name, block.kind.value.replace("_", " "), block.pos, seen)
            _claim_registers(
                tuple(i for i in block.items if isinstance(i, RegisterDecl)) or block.registers,
                claim,
            )
            for chain in block.chains:  # a record's namespace: BLOCK_CHAIN
                claim(f"{block.name}_{chain.name}", "chain", chain.pos, seen)
                _claim_registers(chain.registers, claim)
        for layout in src.layouts:
            claim(layout.name, "layout", layout.pos, seen)
            # Its constants and registers are the names of one class.
            members: dict[str, tuple[str, str, Pos]] = {}
            for const in layout.consts:
                claim(const.name, "constant", const.pos, members)
            _claim_registers(layout.registers, claim, members)


def _check_layouts(
    files: tuple[SourceFile, ...],
    consts: Mapping[str, int],
    declared: Collection[str],
    diags: Diagnostics,
) -> None:
    """Each layout once by its name, each checked on its own (_check_layout_decl)."""
    seen: dict[str, Pos] = {}
    broken = frozenset(declared) - set(consts)
    for src in files:
        for layout in src.layouts:
            first = seen.setdefault(layout.name, layout.pos)
            if first != layout.pos:
                diags.error(
                    layout.pos, f"duplicate layout '{layout.name}' (first defined at {first})"
                )
            _check_layout_decl(layout, consts, broken, diags)


def _check_layout_decl(
    layout: LayoutDecl, consts: Mapping[str, int], broken: frozenset[str], diags: Diagnostics
) -> None:
    """A layout is the same in every device: its offsets and constants are constants. Its
    registers lie aligned, one after another from its start, without gap or overlap (its
    length, which the code takes as the structure's size, is their extent), each cut into
    fields as a block's register is."""
    if not layout.registers and not layout.consts:
        diags.error(layout.pos, f"layout '{layout.name}' is empty: it names nothing")
    own = {const.name for const in layout.consts}

    def value(expr: Expr, what: str) -> int | None:
        for ref in device_refs(expr):
            diags.error(
                ref.pos, f"{what} cannot depend on a device field: a layout is every device's"
            )
            return None
        for name_ref in name_refs(expr):
            if name_ref.name not in consts:
                if name_ref.name in own:
                    diags.error(
                        name_ref.pos,
                        f"'{name_ref.name}' is a constant of the layout: a name for the code,"
                        " not for the policy's expressions (a `const` of its own is)",
                    )
                elif name_ref.name not in broken:  # else reported at its declaration
                    hint = did_you_mean(name_ref.name, consts)
                    diags.error(name_ref.pos, f"unknown constant '{name_ref.name}'{hint}")
                return None
        try:
            return evaluate(expr, consts)
        except EvalError as exc:
            diags.error(exc.pos, exc.message)
            return None

    named: dict[str, Pos] = {}
    for const in layout.consts:
        if const.name in named:
            diags.error(
                const.pos,
                f"duplicate constant '{const.name}' in layout '{layout.name}'"
                f" (first at {named[const.name]})",
            )
        named.setdefault(const.name, const.pos)
        value(const.value, "a constant")
    registers: dict[str, LayoutRegisterDecl] = {}
    owner: dict[int, LayoutRegisterDecl] = {}
    placed_all = True  # a register left unplaced would leave a gap no one declared
    for reg in layout.registers:
        if reg.name in registers:
            earlier = registers[reg.name].pos
            diags.error(reg.pos, f"duplicate register '{reg.name}' (first at {earlier})")
        registers.setdefault(reg.name, reg)
        if reg.fields:  # else the register is one value
            check_field_bits(reg.name, reg.width, reg.pos, reg.fields, diags)
        offset = value(reg.offset, "an offset")
        if offset is None:
            placed_all = False
            continue
        where = _expr_pos(reg.offset, reg.pos)
        if offset % reg.width:
            diags.error(where, f"register '{reg.name}' at {offset:#x} is not aligned to its width")
        if not 0 <= offset <= CONFIG_SPACE - reg.width:
            diags.error(
                where,
                f"register '{reg.name}' at {offset:#x} lies outside the {CONFIG_SPACE:#x} bytes"
                " a layout may span",
            )
            placed_all = False
            continue
        for byte in range(offset, offset + reg.width):
            if byte in owner:
                diags.error(
                    where,
                    f"register '{reg.name}' overlaps register '{owner[byte].name}'"
                    f" at byte {byte:#x}",
                )
                break
        for byte in range(offset, offset + reg.width):
            owner.setdefault(byte, reg)
    if not placed_all:  # the gaps are the error already reported
        return
    for first, last in _ranges_of([b for b in range(max(owner, default=-1)) if b not in owner]):
        single = first == last
        diags.error(
            layout.pos,
            f"{_span(first, last)} of layout '{layout.name}'{_neighbours(owner, first, last)}"
            f" {'is' if single else 'are'} covered by no register: describe"
            f" {'it' if single else 'them'}, or declare {'it' if single else 'them'} reserved"
            " (a register of `_ [..]` fields)",
        )


class _Named(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def pos(self) -> Pos: ...


class _CutRegister(_Named, Protocol):
    """A block's register or a layout's: a name, and fields with names."""

    @property
    def fields(self) -> Sequence[_Named]: ...


def _claim_registers(
    registers: Sequence[_CutRegister],
    claim: Callable[[str, str, Pos, dict[str, tuple[str, str, Pos]]], None],
    names: dict[str, tuple[str, str, Pos]] | None = None,
) -> None:
    """Each register's name once among `names` (a block's registers, or a layout's constants
    and registers), each field's once within its register."""
    names = {} if names is None else names
    for reg in registers:
        claim(reg.name, "register", reg.pos, names)
        fields: dict[str, tuple[str, str, Pos]] = {}
        for fld in reg.fields:
            if fld.name != "_":
                claim(fld.name, "field", fld.pos, fields)


def _expand_group(
    group: GroupDecl,
    checker: type[BlockChecker],
    consts: Mapping[str, int],
    hooks: Mapping[str, HookDecl],
    diags: Diagnostics,
    declared: Collection[str],
    catalog: Catalog,
) -> GroupDecl:
    if not any(r.array is not None for r in group.registers):
        return group
    alone = BlockDecl(
        BlockKind.QUIRK, group.name, None, None, "", (), group.registers, (), group.pos
    )
    expander = checker(alone, consts, hooks, diags, declared, catalog)
    expander.group = True
    return replace(group, registers=expander.expand_arrays().registers)


def _check_unused_groups(
    files: tuple[SourceFile, ...],
    groups: Mapping[str, GroupDecl],
    consts: Mapping[str, int],
    hooks: Mapping[str, HookDecl],
    diags: Diagnostics,
) -> None:
    """A group is checked where a block uses it; one that no block uses is still compiled, so it
    is checked on its own, as if it stood anywhere in configuration space."""
    used = {i.group for src in files for b in src.blocks for i in b.items if isinstance(i, UseDecl)}
    for name, group in groups.items():
        if name in used:
            continue
        alone = BlockDecl(BlockKind.QUIRK, name, None, None, "", (), group.registers, (), group.pos)
        BlockChecker(alone, consts, hooks, diags, _declared_consts(files)).run_registers()


_IDENT_WORDS = {
    BlockKind.HEADER: "header type",
    BlockKind.CAPABILITY: "capability ID",
    BlockKind.EXTENDED_CAPABILITY: "extended capability ID",
}


def _check_ident_unique(
    block: BlockDecl,
    consts: Mapping[str, int],
    idents: dict[tuple[BlockKind, int], BlockDecl],
    diags: Diagnostics,
) -> None:
    """One block per header type or capability ID, over every file of the run: the runtime
    indexes the tables by it and refuses to load two. A table with a match is a variant for
    the devices it matches, chosen before the unmatched one: not counted here."""
    if block.ident is None or block.kind not in _IDENT_WORDS or block.matches:
        return
    try:
        value = evaluate(block.ident, consts)
    except (EvalError, Unresolved):
        return  # reported by the block's own checks
    first = idents.setdefault((block.kind, value), block)
    if first is not block:
        assert first.ident is not None
        shown = f"{value:#x}" if block.kind is not BlockKind.HEADER else str(value)
        diags.error(
            _expr_pos(block.ident, block.pos),
            f"duplicate {_IDENT_WORDS[block.kind]} {shown} of '{block.name}'"
            f" (first defined by '{first.name}' at {_expr_pos(first.ident, first.pos)})",
        )


def _declared_consts(files: tuple[SourceFile, ...]) -> frozenset[str]:
    return frozenset(c.name for src in files for c in src.consts)


def _check_consts(files: tuple[SourceFile, ...], diags: Diagnostics) -> dict[str, int]:
    consts: dict[str, int] = {}
    where: dict[str, Pos] = {}
    first: dict[str, Pos] = {}
    for src in files:
        for const in src.consts:
            first.setdefault(const.name, const.pos)
    for src in files:
        for const in src.consts:
            if const.name in where:
                diags.error(
                    const.pos,
                    f"duplicate constant '{const.name}' (first defined at {where[const.name]})",
                )
                continue
            where[const.name] = const.pos
            for ref in device_refs(const.value):
                diags.error(ref.pos, "a constant cannot depend on a device field")
            try:
                consts[const.name] = evaluate(const.value, consts)
            except EvalError as exc:
                diags.error(exc.pos, exc.message)
            except Unresolved as exc:
                name = str(exc)
                bad = next((r for r in name_refs(const.value) if r.name == name), None)
                pos = bad.pos if bad else const.pos
                if name in where:
                    pass  # declared, but its own value was in error (reported there)
                elif name in first:
                    diags.error(
                        pos, f"constant '{name}' is used before its definition at {first[name]}"
                    )
                else:
                    diags.error(pos, f"unknown constant '{name}'{did_you_mean(name, first)}")
    return consts


def _check_hooks(files: tuple[SourceFile, ...], diags: Diagnostics) -> dict[str, HookDecl]:
    hooks: dict[str, HookDecl] = {}
    for src in files:
        for hook in src.hooks:
            if hook.name in hooks:
                diags.error(
                    hook.pos,
                    f"duplicate hook '{hook.name}' (first declared at {hooks[hook.name].pos})",
                )
                continue
            hooks[hook.name] = hook
            expected = _HOOK_PARAMS[hook.kind]
            if hook.params != expected:
                diags.error(
                    hook.pos,
                    f"on_{hook.kind} hook '{hook.name}' must take ({', '.join(expected)}),"
                    f" not ({', '.join(hook.params)})",
                )
    return hooks


_READABLE_KINDS = (BlockKind.CAPABILITY, BlockKind.EXTENDED_CAPABILITY)


class Catalog:
    """The blocks another block's expressions may read a field of, by name: capability and
    extended capability tables without a match (a table with a match describes its capability
    only in the devices it matches, so it cannot say where a field is in every device)."""

    def __init__(self, files: Iterable[SourceFile]) -> None:
        self.blocks: dict[str, list[BlockDecl]] = {}
        self.other: dict[str, BlockDecl] = {}  # headers, quirks and tables with a match
        for src in files:
            for block in src.blocks:
                if block.kind in _READABLE_KINDS and not block.matches:
                    named = self.blocks.setdefault(block.name, [])
                    if all(b.kind is not block.kind for b in named):
                        named.append(block)
                else:
                    self.other.setdefault(block.name, block)

    def find(self, ref: CapabilityFieldRef) -> tuple[RegisterDecl, FieldDecl] | str:
        """The register and field `ref` names, or why it names none (a message)."""
        named = self.blocks.get(ref.block)
        if named is None:
            other = self.other.get(ref.block)
            if other is not None:
                what = (
                    f"a {other.kind.value} with a match"
                    if other.kind in _READABLE_KINDS
                    else _KIND_WORDS[other.kind]
                )
                return (
                    f"'{ref.block}' is {what}: only a capability table without a match"
                    " can be read from another block"
                )
            return f"unknown capability '{ref.block}'{did_you_mean(ref.block, self.blocks)}"
        if len(named) > 1:
            return (
                f"'{ref.block}' names both a capability and an extended capability:"
                " rename one to read its fields"
            )
        block = named[0]
        regs = {r.name: r for r in block.registers}
        reg = regs.get(ref.register)
        if reg is None:
            return (
                f"unknown register '{ref.register}' in {block.kind.value} '{block.name}'"
                f"{did_you_mean(ref.register, regs)}"
            )
        fld = next((f for f in reg.fields if f.name == ref.field), None)
        if fld is None:
            names = [f.name for f in reg.fields if f.name != "_"]
            return (
                f"unknown field '{ref.field}' in register '{ref.register}' of"
                f" {block.kind.value} '{block.name}'{did_you_mean(ref.field, names)}"
            )
        if fld.backing.kind is not Backing.CACHED:
            return (
                f"'{'.'.join(ref.key)}' is not cached: another block may read only a field"
                " the device fixes, read once at seize (backing `cached`)"
            )
        if device_refs(reg.offset):
            return f"'{'.'.join(ref.key)}' is in a register that moves with device fields"
        if not 0 <= fld.lsb <= fld.msb < reg.width * 8:
            return f"'{'.'.join(ref.key)}' is malformed"  # its own error is reported there
        return reg, fld

    def block_of(self, name: str) -> BlockDecl | None:
        named = self.blocks.get(name)
        return named[0] if named and len(named) == 1 else None


def _check_capability_cycles(catalog: Catalog, diags: Diagnostics) -> None:
    """Reading another capability's field places its register first: that register's own
    condition may read a third capability's field, and so on. A chain that comes back to a
    register it started from could never be evaluated: reported once, where it is closed."""
    edges: dict[tuple[str, str], list[CapabilityFieldRef]] = {}
    for name in sorted(catalog.blocks):
        block = catalog.block_of(name)
        if block is None:
            continue
        for reg in block.registers:
            refs = capability_refs(reg.condition) + capability_refs(reg.offset)
            edges[(name, reg.name)] = [r for r in refs if not isinstance(catalog.find(r), str)]
    state: dict[tuple[str, str], int] = {}  # 1: on the current path, 2: done
    path: list[CapabilityFieldRef] = []

    def visit(node: tuple[str, str]) -> None:
        state[node] = 1
        for ref in edges.get(node, ()):
            target = (ref.block, ref.register)
            path.append(ref)
            if state.get(target) == 1:
                # the refs since the one that led into `target` (none: it is where we began)
                into = [i for i, r in enumerate(path[:-1]) if (r.block, r.register) == target]
                shown = " -> ".join(
                    f"'{'.'.join(r.key)}'" for r in path[into[-1] + 1 if into else 0 :]
                )
                diags.error(
                    ref.pos,
                    f"reading '{'.'.join(ref.key)}' comes back to itself: {shown}"
                    " (each field's register is placed by a condition that reads the next)",
                )
            elif target not in state:
                visit(target)
            path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


class BlockChecker:
    def __init__(
        self,
        block: BlockDecl,
        consts: Mapping[str, int],
        hooks: Mapping[str, HookDecl],
        diags: Diagnostics,
        declared: Collection[str] = (),
        catalog: Catalog | None = None,
    ) -> None:
        self.block = block
        self.consts = consts
        self.hooks = hooks
        self.diags = diags
        # Constants declared but without a value: their own error is reported already.
        self.broken = frozenset(declared) - set(consts)
        self.registers: dict[str, RegisterDecl] = {}
        self.catalog = catalog if catalog is not None else Catalog(())
        self.group = False  # a register group's arrays, counted by the group's own fields

    # -- arrays: each becomes one register per instance it can have ---------------------------
    def expand_arrays(self) -> BlockDecl:
        """The block with each array replaced by its instances: `NAME` + index, instance i at
        the array's offset plus i times its stride, present while i is below the count (and
        the array's own condition holds). The count may read device fields: there are as many
        instances as it can reach over every value they can take."""
        block = self.block
        if not any(r.array is not None for r in block.registers):
            return block
        self.registers = {r.name: r for r in block.registers if r.array is None}
        expanded: dict[int, tuple[RegisterDecl, ...]] = {}
        for reg in block.registers:
            if reg.array is not None:
                expanded[id(reg)] = self._instances(reg, reg.array)
        self.registers = {}

        def flat(items: Iterable[RegisterDecl | UseDecl]) -> list[RegisterDecl | UseDecl]:
            out: list[RegisterDecl | UseDecl] = []
            for item in items:
                out.extend(expanded.get(id(item), (item,)))
            return out

        registers = [r for r in flat(block.registers) if isinstance(r, RegisterDecl)]
        self.block = replace(block, registers=tuple(registers), items=tuple(flat(block.items)))
        return self.block

    def _instances(self, reg: RegisterDecl, array: ArrayDecl) -> tuple[RegisterDecl, ...]:
        self._check_refs(array.count, "an array count")
        first, stride = 0, reg.width
        for expr, what in ((array.first, "first index"), (array.stride, "stride")):
            if expr is None:
                continue
            if device_refs(expr):
                self.diags.error(
                    _expr_pos(expr, array.pos),
                    f"an array's {what} cannot depend on a device field",
                )
                return ()
            value = self._value(expr)
            if value is None:
                return ()
            if value < 0 or (what == "stride" and value == 0):
                self.diags.error(
                    _expr_pos(expr, array.pos),
                    f"an array's {what} must be {'positive' if what == 'stride' else '0 or more'}"
                    f", not {value}",
                )
                return ()
            first, stride = (value, stride) if what == "first index" else (first, value)
        refs = device_refs(array.count)
        envs = self._field_domain([array.count], "the array count depends") if refs else [{}]
        if envs is None:
            return ()
        counts: set[int] = set()
        for env in envs:
            try:
                counts.add(evaluate(array.count, self.consts, env))
            except EvalError as exc:
                self.diags.error(exc.pos, _failed(exc, env))
                return ()
            except Unresolved:
                return ()  # reported by _check_refs
        reach = max(counts)
        if reach - first > MAX_INSTANCES:
            self.diags.error(
                _expr_pos(array.count, array.pos),
                f"array '{reg.name}' can have {reach - first} instances; at most"
                f" {MAX_INSTANCES} (bound the count, with min() for instance)",
            )
            return ()
        fixed = not refs  # a count that is a constant needs no condition
        out: list[RegisterDecl] = []
        for i in range(first, reach):
            condition = reg.condition
            if not fixed:
                below = Binary("<", Num(i, array.pos), array.count, array.pos)
                condition = (
                    below if condition is None else Binary("and", below, condition, below.pos)
                )
            offset = reg.offset
            if i:
                offset = Binary(
                    "+", offset, Num(i * stride, array.pos), _expr_pos(offset, array.pos)
                )
            out.append(
                replace(
                    reg,
                    name=f"{reg.name}{i}",
                    offset=offset,
                    condition=condition,
                    array=None,
                    index=i,
                    origin=reg,
                )
            )
        return tuple(out)

    def run(self) -> None:
        block = self.block
        errors = len(self.diags.errors)
        self._check_ident()
        self._check_policies()
        self._check_matches()
        self._check_sections()
        self._check_seize()
        self.run_registers()
        self._check_rest()
        if block.length is not None:
            if block.kind not in (BlockKind.CAPABILITY, BlockKind.EXTENDED_CAPABILITY):
                self.diags.error(block.pos, f"a {block.kind.value} has no length")
            self._check_refs(block.length, "length")
            self._check_length(block.length)
        # Judged once the registers are sound: a misplaced register would make holes of its own.
        if len(self.diags.errors) == errors and block.kind in _CHAIN_LINK:
            self._check_extent()

    def run_registers(self) -> None:
        """The checks of the registers alone, each and together."""
        block = self.block
        for reg in block.registers:
            if reg.name in self.registers:
                first = self.registers[reg.name].pos
                self.diags.error(reg.pos, f"duplicate register '{reg.name}' (first at {first})")
                continue
            self.registers[reg.name] = reg
        for reg in block.registers:
            self._check_register(reg)
        self._check_layout()

    # -- block level -----------------------------------------------------------------------------
    def _unknown_const(self, name: str, pos: Pos, *, fields: bool = False) -> None:
        """`fields`: a device field may stand here, and a bare field name is a likely slip for
        `register.field`."""
        if name in self.broken:
            return
        hint = did_you_mean(name, self.consts)
        if not hint and fields:
            qualified = {
                f.name: f"{reg.name}.{f.name}"
                for reg in self.registers.values()
                for f in reg.fields
                if f.name != "_"
            }
            close = name if name in qualified else closest(name, qualified)
            if close is not None:
                hint = f" (did you mean '{qualified[close]}'?)"
        self.diags.error(pos, f"unknown constant '{name}'{hint}")

    def _value(self, expr: Expr) -> int | None:
        for ref in name_refs(expr):
            if ref.name not in self.consts:
                self._unknown_const(ref.name, ref.pos)
                return None
        try:
            return evaluate(expr, self.consts)
        except EvalError as exc:
            self.diags.error(exc.pos, exc.message)
            return None
        except Unresolved:
            for fref in device_refs(expr):
                self.diags.error(fref.pos, "a device field cannot be used here")
            return None

    def _check_ident(self) -> None:
        block = self.block
        if block.ident is None:
            return
        value = self._value(block.ident)
        if value is None:
            return
        limits = {
            BlockKind.HEADER: (1, "header type must be 0 or 1"),
            BlockKind.CAPABILITY: (0xFF, "capability ID does not fit 8 bits"),
            BlockKind.EXTENDED_CAPABILITY: (
                0xFFFF,
                "extended capability ID does not fit 16 bits",
            ),
        }
        limit, message = limits[block.kind]
        if not 0 <= value <= limit:
            self.diags.error(_expr_pos(block.ident, block.pos), f"{message}: {value:#x}")

    def _check_sections(self) -> None:
        """A section holds registers, directly (sections do not nest), and names itself once
        in its block: the report and a reviewer find it by that name."""
        seen: dict[str, Pos] = {}
        for section in self.block.sections:
            if section.name in seen:
                self.diags.error(
                    section.pos,
                    f"duplicate section '{section.name}' (first at {seen[section.name]})",
                )
            else:
                seen[section.name] = section.pos
            if section.within is not None:
                self.diags.error(
                    section.pos,
                    f"section '{section.name}' stands inside section '{section.within}':"
                    " sections do not nest (give its registers their own condition, or close"
                    f" '{section.within}' first)",
                )
            elif section.empty:
                self.diags.error(
                    section.pos, f"section '{section.name}' is empty: it holds no register"
                )

    def _check_seize(self) -> None:
        """Seize-time checks and actions act on a capability found in a device's chain: only a
        capability's block names them, each once, with the reason it runs."""
        block = self.block
        seen: dict[tuple[str, str], Pos] = {}
        for hook in block.seize:
            what = f"seize {hook.kind} '{hook.name}'"
            if block.kind not in _CHAIN_LINK:
                self.diags.error(
                    hook.pos,
                    f"{what} in a {block.kind.value.replace('_', ' ')}: only a capability's"
                    " block names what runs on it at seize",
                )
            key = (hook.kind, hook.name)
            if key in seen:
                self.diags.error(hook.pos, f"{what} named twice (first at {seen[key]})")
                continue
            seen[key] = hook.pos
            if not hook.reason:
                self.diags.error(
                    hook.pos, f'{what} needs a reason: `seize {hook.kind} {hook.name} "why"`'
                )

    def _check_rest(self) -> None:
        block = self.block
        for extra in block.rests[1:]:
            self.diags.error(extra.pos, "duplicate rest (a capability has one)")
        for rest in block.rests[:1]:
            if block.kind not in _READABLE_KINDS:
                self.diags.error(
                    rest.pos,
                    "only a capability has a rest: its bytes up to the next capability",
                )
            elif rest.access != "ro":
                self.diags.error(
                    rest.pos,
                    f"a capability's rest is read from the device and never written: `rest ro`,"
                    f" not `rest {rest.access}`",
                )
            if rest.condition is not None:
                self._check_refs(rest.condition, "the rest's condition")
                self._check_value(rest.condition, "the rest's condition depends")

    def _check_policies(self) -> None:
        block = self.block
        for extra in block.policies[1:]:
            self.diags.error(extra.pos, "duplicate policy (a block has one)")
        for policy in block.policies[:1]:
            capability = block.kind in (
                BlockKind.CAPABILITY,
                BlockKind.EXTENDED_CAPABILITY,
            )
            if policy.hidden and not capability:
                self.diags.error(policy.pos, "only a capability can be hidden")

    def _check_matches(self) -> None:
        block = self.block
        if block.kind is BlockKind.QUIRK and not block.matches:
            self.diags.error(block.pos, "a quirk needs a match")
        keys: dict[str, Pos] = {}
        for match in block.matches:
            if match.key in keys:
                self.diags.error(match.pos, f"duplicate match key '{match.key}'")
            keys[match.key] = match.pos
            bits = MATCH_KEY_BITS[match.key]
            listed: dict[int, Pos] = {}
            for i, expr in enumerate((*match.values, match.mask)):
                if expr is None:
                    continue
                value = self._value(expr)
                where = _expr_pos(expr, match.pos)
                if value is not None and not 0 <= value < (1 << bits):
                    self.diags.error(
                        where, f"value {value:#x} does not fit the {bits}-bit {match.key}"
                    )
                elif value is not None and i < len(match.values):
                    if value in listed:
                        self.diags.error(
                            where,
                            f"{match.key} {value:#x} is listed twice (first at {listed[value]})",
                        )
                    listed.setdefault(value, where)

    # -- registers and fields --------------------------------------------------------------------
    def _check_register(self, reg: RegisterDecl) -> None:
        self._check_refs(reg.offset, "offset")
        if reg.condition is not None:
            self._check_refs(reg.condition, "condition")
        for fld in check_field_bits(reg.name, reg.width, reg.pos, reg.fields, self.diags):
            self._check_field(fld)
        self._check_linux(reg)

    def _check_linux(self, reg: RegisterDecl) -> None:
        """A `linux` note states a difference from Linux: the difference must be one, and say
        why (the field's reason, or its register's; a register's note follows its reason in
        the grammar)."""
        for fld in reg.fields:
            note = fld.linux
            if note is None:
                continue
            if not (fld.reason.strip() or reg.reason.strip()):
                self.diags.error(
                    note.pos,
                    f"`linux {note.treatment}` on field '{fld.name}' says how Linux differs but"
                    " not why: give the field (or its register) a reason",
                )
            if note.treatment == fld.access and fld.permissive is None:
                self.diags.error(
                    note.pos,
                    f"field '{fld.name}' is {fld.access} as in Linux: `linux {note.treatment}`"
                    " states no difference",
                )

    def _check_field(self, fld: FieldDecl) -> None:
        kind = fld.backing.kind
        for access in filter(None, (fld.access, fld.permissive)):
            if kind in (Backing.CONST, Backing.CACHED) and access in _DATA_ACCESS:
                self.diags.error(
                    fld.pos,
                    f"field '{fld.name}' is {kind.value}: a guest write cannot change it,"
                    f" so it cannot be {access}",
                )
        if fld.permissive is not None and fld.permissive == fld.access:
            self.diags.error(fld.pos, f"permissive access of '{fld.name}' repeats its access")
        if fld.backing.value is not None:
            value = self._value(fld.backing.value)
            width = fld.msb - fld.lsb + 1
            if value is not None and fld.msb >= fld.lsb and not 0 <= value < (1 << width):
                self.diags.error(
                    _expr_pos(fld.backing.value, fld.pos),
                    f"value {value:#x} does not fit the {width}-bit field '{fld.name}'",
                )
        for use in fld.hooks:
            hook = self.hooks.get(use.name)
            if hook is None:
                same_kind = [h.name for h in self.hooks.values() if h.kind == use.kind]
                hint = did_you_mean(use.name, same_kind) or did_you_mean(use.name, self.hooks)
                self.diags.error(use.pos, f"undeclared hook '{use.name}'{hint}")
            elif hook.kind != use.kind:
                self.diags.error(
                    use.pos,
                    f"hook '{use.name}' is declared on_{hook.kind} but used on_{use.kind}",
                )

    def _check_refs(self, expr: Expr, what: str) -> None:
        for ref in name_refs(expr):
            if ref.name not in self.consts:
                self._unknown_const(ref.name, ref.pos, fields=True)
        for cref in capability_refs(expr):
            if cref.block == self.block.name and self.block.kind in _READABLE_KINDS:
                self.diags.error(
                    cref.pos,
                    f"'{cref.block}' is this block: name its field '{cref.register}.{cref.field}'",
                )
                continue
            found = self.catalog.find(cref)
            if isinstance(found, str):
                self.diags.error(cref.pos, found)
        for fref in field_refs(expr):
            target = self._field_of(fref)
            if target is None:
                continue
            reg = self.registers[fref.register]
            if reg.condition is not None or device_refs(reg.offset):
                self.diags.error(
                    fref.pos,
                    f"{what} refers to '{fref.register}.{fref.field}', whose register is"
                    " itself conditional or movable",
                )

    def _field_of(self, ref: FieldRef) -> FieldDecl | None:
        reg = self.registers.get(ref.register)
        if reg is None:
            hint = did_you_mean(ref.register, self.registers)
            if self.group:
                hint += " (an array in a register group is counted by the group's own fields)"
            self.diags.error(ref.pos, f"unknown register '{ref.register}'{hint}")
            return None
        fld = next((f for f in reg.fields if f.name == ref.field), None)
        if fld is None:
            hint = did_you_mean(ref.field, [f.name for f in reg.fields if f.name != "_"])
            self.diags.error(
                ref.pos, f"unknown field '{ref.field}' in register '{ref.register}'{hint}"
            )
        return fld

    # -- layout: every combination of the fields that move or hide registers ----------------------
    def _check_layout(self) -> None:
        refs = self._field_domain(
            [reg.offset for reg in self.block.registers]
            + [reg.condition for reg in self.block.registers],
            "register offsets and conditions depend",
        )
        if refs is None:
            return
        for env in refs:
            self._check_one_layout(env)

    def _check_length(self, length: Expr) -> None:
        self._check_value(length, "the length depends")

    def _check_value(self, expr: Expr, what: str) -> None:
        """A value that depends on fields is computed in every combination of their values."""
        if not device_refs(expr):
            if all(ref.name in self.consts for ref in name_refs(expr)):
                self._value(expr)  # unknown names were reported by _check_refs
            return
        envs = self._field_domain([expr], what)
        for env in envs or ():
            try:
                evaluate(expr, self.consts, env)
            except EvalError as exc:
                self.diags.error(exc.pos, _failed(exc, env))
                return
            except Unresolved:
                return  # unknown names were reported by _check_refs

    def _field_domain(
        self, exprs: Iterable[Expr | None], what: str
    ) -> list[dict[tuple[str, ...], int]] | None:
        """Enough combinations of the values of the fields `exprs` read to see every value they
        can take: every combination, or, where there are too many, one per class of values
        the expressions cannot tell apart (below). None when a field is unknown or malformed
        (reported elsewhere) or when there are still too many to enumerate. A field of another
        capability takes every value of its width (0 also standing for a function without that
        capability)."""
        present = [e for e in exprs if e is not None]
        fields: dict[tuple[str, ...], FieldDecl] = {}
        for ref in (r for e in present for r in device_refs(e)):
            if isinstance(ref, CapabilityFieldRef):
                found = self.catalog.find(ref)
                if isinstance(found, str) or ref.block == self.block.name:
                    return None  # reported by _check_refs
                fields[ref.key] = found[1]
                continue
            fld = self._quiet_field(ref)
            if fld is None:
                return None  # already reported
            fields[(ref.register, ref.field)] = fld
        keys = sorted(fields)
        total = 1
        for key in keys:
            total *= 1 << fields[key].width
        # Built only once the count is known to be small: a 32-bit field has 2**32 values.
        domains: list[list[int]] | None = None
        if total <= MAX_COMBINATIONS:
            domains = [list(range(1 << fields[k].width)) for k in keys]
        else:
            classes = self._value_classes(present, keys, fields)
            if isinstance(classes, _TooWide):
                self.diags.error(classes.pos, f"{what} {classes.message}")
                return None
            domains = classes
            if domains is None or math.prod(len(d) for d in domains) > MAX_COMBINATIONS:
                self.diags.error(
                    self.block.pos,
                    f"{what} on {total} field values; at most {MAX_COMBINATIONS} can be checked",
                )
                return None
        assert domains is not None
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*domains)]

    def _value_classes(
        self,
        exprs: list[Expr],
        keys: list[tuple[str, ...]],
        fields: Mapping[tuple[str, ...], FieldDecl],
    ) -> list[list[int]] | _TooWide | None:
        """Per field, the smallest value of each class of values that every expression treats
        alike. An expression's value depends on a field only through its largest parts that
        read no other field (`min(caps.size + 1, 64)`, `caps.location == 1`): two values those
        parts map alike give every expression the same value, whatever the other fields. So
        one value per class suffices, and, the classes being enumerated in ascending order of
        their smallest value, the first combination to fail is the one a full enumeration
        would have found first. A field only compared with constants is tried at the values
        where a comparison can change (_comparison_points) rather than at every value: that
        is what lets a condition read a 16- or 32-bit field (an ID, a vendor). _TooWide when
        a field too wide to try at every value is read otherwise."""
        parts: dict[tuple[str, ...], list[Expr]] = {key: [] for key in keys}
        for expr in exprs:
            _single_field_parts(expr, parts)
        classes: list[list[int]] = []
        for key in keys:
            width = fields[key].width
            top = (1 << width) - 1
            points: set[int] = {0, top}
            candidates: Iterable[int] | None = None
            for part in parts[key]:
                found = _comparison_points(part, key, self.consts)
                if found is None:
                    break
                points |= found
            else:
                candidates = sorted(p for p in points if 0 <= p <= top)
            if candidates is None:
                if width > _CLASSIFY_BITS:
                    part = next(
                        p for p in parts[key] if _comparison_points(p, key, self.consts) is None
                    )
                    return _TooWide(
                        _expr_pos(part, self.block.pos),
                        f"on the {width}-bit field '{'.'.join(key)}' through"
                        f" `{to_text(part)}`: a field wider than {_CLASSIFY_BITS} bits can"
                        " only be compared with a constant (==, !=, <, <=, >, >=) here",
                    )
                candidates = range(1 << width)
            seen: dict[tuple[object, ...], int] = {}
            for value in candidates:
                env = {key: value}
                signature: list[object] = []
                for part in parts[key]:
                    try:
                        signature.append(evaluate(part, self.consts, env))
                    except EvalError as exc:
                        signature.append(exc.message)
                    except Unresolved:
                        return None  # reported by _check_refs
                seen.setdefault(tuple(signature), value)
            classes.append(sorted(seen.values()))
        return classes

    def _quiet_field(self, ref: FieldRef) -> FieldDecl | None:
        """The field named, when it exists and its bits lie inside its register."""
        reg = self.registers.get(ref.register)
        if reg is None:
            return None
        fld = next((f for f in reg.fields if f.name == ref.field), None)
        if fld is None or not 0 <= fld.lsb <= fld.msb < reg.width * 8:
            return None
        return fld

    # -- extent: a capability's registers fill it, up to its length -----------------------------
    def _check_extent(self) -> None:
        """In every layout, no register lies past the capability's length (its bytes would be
        undescribed) and every byte from the chain link to the capability's end (its length,
        or its last register's end) belongs to a register: a byte no register covers follows
        the device's default policy, which lets permissive mode write it. A range the policy
        leaves unused on purpose is declared as a register of reserved fields (`_ [..] hw
        rsvdp "why"`)."""
        block = self.block
        link = _CHAIN_LINK[block.kind]
        exprs = [block.length] + [e for reg in block.registers for e in (reg.offset, reg.condition)]
        envs = self._field_domain(exprs, "the length and the register layout depend")
        past: set[str] = set()
        # A hidden capability is blocked whole: nothing of it is left to its holes.
        hidden = any(p.hidden for p in block.policies[:1])
        holes_reported = False
        for env in envs or ():
            try:
                length = (
                    evaluate(block.length, self.consts, env) if block.length is not None else None
                )
                present = [
                    (evaluate(reg.offset, self.consts, env), reg)
                    for reg in block.registers
                    if reg.condition is None or evaluate(reg.condition, self.consts, env)
                ]
            except (EvalError, Unresolved):
                return  # reported by the length and layout checks
            when = _when(env)
            what = _KIND_WORDS[block.kind].split(" ", 1)[1]
            owner: dict[int, RegisterDecl] = {}
            for offset, reg in sorted(present, key=lambda p: p[0]):
                for byte in range(offset, offset + reg.width):
                    owner[byte] = reg
                if length is not None and offset + reg.width > length and reg.name not in past:
                    past.add(reg.name)
                    assert block.length is not None
                    self.diags.error(
                        _expr_pos(reg.offset, reg.pos),
                        f"register '{reg.name}' at {offset:#x} ends at byte"
                        f" {offset + reg.width - 1:#x}, past the {what}'s"
                        f" length {length:#x}{when}"
                        f" (declared at {_expr_pos(block.length, block.pos)})",
                    )
            if holes_reported or hidden:
                continue
            end = length if length is not None else max(owner, default=link - 1) + 1
            holes = _ranges_of([b for b in range(link, end) if b not in owner])
            for first, last in holes:
                self.diags.error(
                    block.pos,
                    f"{_span(first, last)} of {what} '{block.name}'"
                    f"{_neighbours(owner, first, last)} {'is' if first == last else 'are'}"
                    f" covered by no register{when}: {_DECLARE_HOLE[first == last]}",
                )
            holes_reported = bool(holes)

    def _check_one_layout(self, env: FieldValues) -> None:
        kind = self.block.kind
        space, link = {
            BlockKind.HEADER: (HEADER_SIZE, 0),
            BlockKind.CAPABILITY: (STD_CAP_SPACE, STD_CHAIN_LINK),
            BlockKind.EXTENDED_CAPABILITY: (EXT_CAP_SPACE, EXT_CHAIN_LINK),
            BlockKind.QUIRK: (CONFIG_SPACE, 0),
        }[kind]
        taken: dict[int, RegisterDecl] = {}
        for reg in self.block.registers:
            try:
                if reg.condition is not None and not evaluate(reg.condition, self.consts, env):
                    continue
                offset = evaluate(reg.offset, self.consts, env)
            except EvalError as exc:
                self.diags.error(exc.pos, _failed(exc, env))
                continue
            except Unresolved:
                return  # unknown names were reported by _check_refs
            where = _expr_pos(reg.offset, reg.pos)
            if offset % reg.width:
                self.diags.error(
                    where, f"register '{reg.name}' at {offset:#x} is not aligned to its width"
                )
            if offset < 0 or offset + reg.width > space:
                self.diags.error(
                    where,
                    f"register '{reg.name}' at {offset:#x} lies outside the {space:#x} bytes"
                    f" {_KIND_WORDS[kind]} may use",
                )
                continue
            if offset < link:
                self.diags.error(
                    where,
                    f"register '{reg.name}' at {offset:#x} covers the capability's ID and next"
                    f" pointer (the first {link} bytes), which the runtime owns",
                )
            for byte in range(offset, offset + reg.width):
                if byte in taken and taken[byte] is not reg:
                    self.diags.error(
                        where,
                        f"register '{reg.name}' overlaps register '{taken[byte].name}'"
                        f" at byte {byte:#x}",
                    )
                    break
                taken[byte] = reg


class _Bits(Protocol):
    """A field's name and bits, whatever else it says (a block's field, a layout's)."""

    @property
    def name(self) -> str: ...
    @property
    def msb(self) -> int: ...
    @property
    def lsb(self) -> int: ...
    @property
    def pos(self) -> Pos: ...
    @property
    def bits_pos(self) -> Pos: ...


_Field = TypeVar("_Field", bound=_Bits)


def check_field_bits(
    register: str, width: int, pos: Pos, fields: Iterable[_Field], diags: Diagnostics
) -> list[_Field]:
    """A register's fields cut it: each names itself once, lies inside the register (of `width`
    bytes) with its bits in order, and every bit is in exactly one field. Returns the fields
    whose bits make sense, for the checks of what they say."""
    names: dict[str, _Field] = {}
    owner: dict[int, _Field] = {}
    bits = width * 8
    shapeless = False
    shaped: list[_Field] = []
    for fld in fields:
        if fld.name != "_" and fld.name in names:
            diags.error(
                fld.pos,
                f"duplicate field '{fld.name}' in register '{register}'"
                f" (first at {names[fld.name].pos})",
            )
        names.setdefault(fld.name, fld)
        if fld.msb < fld.lsb:
            diags.error(fld.bits_pos, f"bit range [{fld.msb}:{fld.lsb}] runs backwards")
            shapeless = True
            continue
        if fld.msb >= bits:
            diags.error(
                fld.bits_pos,
                f"bit {fld.msb} is outside the {bits}-bit register '{register}'",
            )
            shapeless = True
            continue
        twice = [bit for bit in range(fld.lsb, fld.msb + 1) if bit in owner]
        if twice:
            diags.error(
                fld.bits_pos,
                f"bit {twice[-1]} of register '{register}' is covered twice"
                f" (also by field '{owner[twice[-1]].name}')",
            )
        for bit in range(fld.lsb, fld.msb + 1):
            owner.setdefault(bit, fld)
        shaped.append(fld)
    missing = [b for b in range(bits) if b not in owner]
    if missing and not shapeless:
        diags.error(
            pos,
            f"bits {_ranges(missing)} of register '{register}' are not covered by any field",
        )
    return shaped


_DECLARE_HOLE = {
    single: f"describe {it}, or declare {it} reserved"
    ' (a register of `_ [..] hw rsvdp "why"` fields)'
    for single, it in ((True, "it"), (False, "them"))
}


@dataclass(frozen=True, slots=True)
class _TooWide:
    """A field too wide to try at every value, read otherwise than compared with a constant."""

    pos: Pos
    message: str


_COMPARISONS = frozenset(("==", "!=", "<", "<=", ">", ">="))


def _comparison_points(
    expr: Expr, key: tuple[str, ...], consts: Mapping[str, int]
) -> set[int] | None:
    """The values of the field `key` around which `expr` can change its value, when `expr`
    reads that field only by comparing it with constants (`hdr.vendor == 0x8086 and not
    hdr.len < 4`): c - 1, c and c + 1 for each constant c. Between two of them every
    comparison, hence `expr`, keeps its value, so each class of values `expr` cannot tell
    apart starts at one of them (or at 0). None when `expr` reads the field otherwise."""
    if not device_refs(expr):
        return set()
    if isinstance(expr, Unary):
        return _comparison_points(expr.operand, key, consts)
    if not isinstance(expr, Binary):
        return None
    if expr.op in ("and", "or"):
        left = _comparison_points(expr.left, key, consts)
        right = _comparison_points(expr.right, key, consts)
        return None if left is None or right is None else left | right
    if expr.op not in _COMPARISONS:
        return None
    for side, other in ((expr.left, expr.right), (expr.right, expr.left)):
        if _names_field(side, key) and not device_refs(other):
            try:
                value = evaluate(other, consts)
            except (EvalError, Unresolved):
                return None  # reported where the expression is checked
            return {value - 1, value, value + 1}
    return None


def _names_field(expr: Expr, key: tuple[str, ...]) -> bool:
    if isinstance(expr, CapabilityFieldRef):
        return expr.key == key
    return isinstance(expr, FieldRef) and (expr.register, expr.field) == key


def _single_field_parts(expr: Expr, parts: dict[tuple[str, ...], list[Expr]]) -> None:
    """The largest parts of `expr` that read exactly one device field, by that field."""
    refs = {
        r.key if isinstance(r, CapabilityFieldRef) else (r.register, r.field)
        for r in device_refs(expr)
    }
    if len(refs) == 1:
        (key,) = refs
        found = parts.setdefault(key, [])
        if expr not in found:  # an array's instances share their count's parts
            found.append(expr)
    elif refs:
        for operand in operands(expr):
            _single_field_parts(operand, parts)


def _failed(exc: EvalError, env: FieldValues) -> str:
    """What went wrong computing a value, with the field values that make a divisor 0."""
    return exc.message + (_when(env) if isinstance(exc, DivisionByZero) else "")


def _when(env: FieldValues) -> str:
    """` when ctrl.wide = 1`: the field values of a layout, for a message about it."""
    if not env:
        return ""
    return " when " + ", ".join(f"{'.'.join(key)} = {value}" for key, value in sorted(env.items()))


def _ranges_of(values: list[int]) -> list[tuple[int, int]]:
    """Ascending values as (first, last) runs."""
    runs: list[tuple[int, int]] = []
    for value in values:
        if runs and runs[-1][1] == value - 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


def _span(first: int, last: int) -> str:
    return f"byte {first:#x}" if first == last else f"bytes {first:#x}..{last:#x}"


def _neighbours(
    owner: Mapping[int, RegisterDecl | LayoutRegisterDecl], first: int, last: int
) -> str:
    before, after = owner.get(first - 1), owner.get(last + 1)
    if before is not None and after is not None:
        return f" (between registers '{before.name}' and '{after.name}')"
    if before is not None:
        return f" (after register '{before.name}')"
    if after is not None:
        return f" (before register '{after.name}')"
    return ""


def _expr_pos(expr: Expr, default: Pos) -> Pos:
    pos = getattr(expr, "pos", None)
    return pos if isinstance(pos, Pos) else default


def _ranges(bits: list[int]) -> str:
    parts: list[str] = []
    start = prev = bits[0]
    for bit in [*bits[1:], -2]:
        if bit == prev + 1:
            prev = bit
            continue
        parts.append(f"{prev}:{start}" if prev != start else f"{start}")
        start = prev = bit
    return ", ".join(reversed(parts))


# -- warnings: what compiles but is probably not what the author meant ---------------------------
def _check_unused(files: tuple[SourceFile, ...], scope: set[str], diags: Diagnostics) -> None:
    used_consts: set[str] = set()
    used_hooks: set[str] = set()
    used_groups: set[str] = set()
    for src in files:
        for const in src.consts:
            used_consts.update(r.name for r in name_refs(const.value))
        for group in src.groups:
            for reg in group.registers:
                _register_uses(reg, used_consts, used_hooks)
        for block in src.blocks:
            for expr in (block.ident, block.length, *(r.condition for r in block.rests)):
                used_consts.update(r.name for r in name_refs(expr))
            for match in block.matches:
                for expr in (*match.values, match.mask):
                    used_consts.update(r.name for r in name_refs(expr))
            for item in block.items:
                if isinstance(item, UseDecl):
                    used_groups.add(item.group)
                else:
                    _register_uses(item, used_consts, used_hooks)
            for chain in block.chains:
                for expr in (chain.count, chain.start, chain.next):
                    used_consts.update(r.name for r in name_refs(expr))
                for reg in chain.registers:
                    _register_uses(reg, used_consts, used_hooks)
        for layout in src.layouts:
            for expr in (*(c.value for c in layout.consts), *(r.offset for r in layout.registers)):
                used_consts.update(r.name for r in name_refs(expr))
    for src in files:
        if src.path not in scope:
            continue
        for const in src.consts:
            if const.name not in used_consts:
                diags.warning(const.pos, f"constant '{const.name}' is never used")
        for hook in src.hooks:
            if hook.name not in used_hooks:
                diags.warning(hook.pos, f"hook '{hook.name}' is declared but no field uses it")
        for group in src.groups:
            if group.name not in used_groups:
                diags.warning(group.pos, f"register group '{group.name}' is never used by a block")


def _register_uses(reg: RegisterDecl, consts: set[str], hooks: set[str]) -> None:
    array = reg.origin.array if reg.origin is not None else reg.array
    extra = (array.first, array.count, array.stride) if array is not None else ()
    for expr in (reg.offset, reg.condition, *extra):
        consts.update(r.name for r in name_refs(expr))
    for fld in reg.fields:
        consts.update(r.name for r in name_refs(fld.backing.value))
        hooks.update(use.name for use in fld.hooks)


def _check_reasons(files: tuple[SourceFile, ...], diags: Diagnostics) -> None:
    """A field that lets a guest do more than read it is a policy decision: it says why."""
    for src in files:
        registers = [reg for group in src.groups for reg in group.registers]
        for block in src.blocks:
            registers += [i for i in block.items if isinstance(i, RegisterDecl)]
            registers += [r for chain in block.chains for r in chain.registers]
        for reg in registers:
            for fld in reg.fields:
                grants = _grants(fld)
                if grants and not fld.reason.strip():
                    diags.warning(
                        fld.pos,
                        f"field '{fld.name}' of register '{reg.name}' is not read-only"
                        f" ({grants}) but gives no reason",
                    )


def _grants(fld: FieldDecl) -> str:
    """What a field grants beyond read-only, in the words of the language ('' for nothing)."""
    words = [fld.access] if fld.access in _DATA_ACCESS else []
    if fld.permissive is not None:
        words.append(f"permissive {fld.permissive}")
    for use in fld.hooks:
        words.append(f"{use.keyword} {use.name}")
    return ", ".join(words)
