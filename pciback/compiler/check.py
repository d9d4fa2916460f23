"""Pass 3: every rule a policy must obey, each broken rule reported with its position.

The checks run over the whole program (the prelude and the files given) so that one run reports
every error of every file.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pciback.compiler.diagnostics import Diagnostics, Pos
from pciback.compiler.evaluate import Unresolved, evaluate
from pciback.compiler.model import (
    BackingKind,
    BlockDecl,
    BlockKindDecl,
    Expr,
    FieldDecl,
    FieldRef,
    GroupDecl,
    HookDecl,
    RegisterDecl,
    SourceFile,
    field_refs,
    name_refs,
)

# Where a block's registers may lie (offsets relative to the block's start).
HEADER_SIZE = 0x40
STD_CAP_SPACE = 0x100 - 0x40  # standard capabilities live in 0x40..0xFF
EXT_CAP_SPACE = 0x1000 - 0x100  # extended capabilities live in 0x100..0xFFF
CONFIG_SPACE = 0x1000
STD_CHAIN_LINK = 2  # capability ID and next pointer: the runtime's, never the policy's
EXT_CHAIN_LINK = 4
MAX_COMBINATIONS = 4096
_MATCH_WIDTH = {
    "vendor": 16,
    "device": 16,
    "subsystem_vendor": 16,
    "subsystem_device": 16,
    "class": 24,
}
_KIND_WORDS = {
    BlockKindDecl.HEADER: "a header",
    BlockKindDecl.CAPABILITY: "a capability",
    BlockKindDecl.EXTENDED_CAPABILITY: "an extended capability",
    BlockKindDecl.QUIRK: "a quirk",
}
_HOOK_PARAMS = {"write": ("old", "new"), "read": ("value",)}
_DATA_ACCESS = {"rw", "rw1c"}


@dataclass(frozen=True, slots=True)
class Program:
    files: tuple[SourceFile, ...]
    consts: Mapping[str, int]
    hooks: Mapping[str, HookDecl]
    groups: Mapping[str, GroupDecl]


def check(files: Iterable[SourceFile], diags: Diagnostics) -> Program:
    files = tuple(files)
    consts = _check_consts(files, diags)
    hooks = _check_hooks(files, diags)
    seen: dict[tuple[BlockKindDecl, str], Pos] = {}
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
            BlockChecker(block, consts, hooks, diags).run()
    groups: dict[str, GroupDecl] = {}
    for src in files:
        for group in src.groups:
            groups.setdefault(group.name, group)
    return Program(files, consts, hooks, groups)


def _check_consts(files: tuple[SourceFile, ...], diags: Diagnostics) -> dict[str, int]:
    consts: dict[str, int] = {}
    where: dict[str, Pos] = {}
    for src in files:
        for const in src.consts:
            if const.name in where:
                diags.error(
                    const.pos,
                    f"duplicate constant '{const.name}' (first defined at {where[const.name]})",
                )
                continue
            where[const.name] = const.pos
            for ref in field_refs(const.value):
                diags.error(ref.pos, "a constant cannot depend on a device field")
            try:
                consts[const.name] = evaluate(const.value, consts)
            except Unresolved as exc:
                bad = next((r for r in name_refs(const.value) if r.name == str(exc)), None)
                diags.error(bad.pos if bad else const.pos, f"unknown constant '{exc}'")
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


class BlockChecker:
    def __init__(
        self,
        block: BlockDecl,
        consts: Mapping[str, int],
        hooks: Mapping[str, HookDecl],
        diags: Diagnostics,
    ) -> None:
        self.block = block
        self.consts = consts
        self.hooks = hooks
        self.diags = diags
        self.registers: dict[str, RegisterDecl] = {}

    def run(self) -> None:
        block = self.block
        self._check_ident()
        self._check_policies()
        self._check_matches()
        for reg in block.registers:
            if reg.name in self.registers:
                first = self.registers[reg.name].pos
                self.diags.error(reg.pos, f"duplicate register '{reg.name}' (first at {first})")
                continue
            self.registers[reg.name] = reg
        for reg in block.registers:
            self._check_register(reg)
        if block.length is not None:
            if block.kind not in (BlockKindDecl.CAPABILITY, BlockKindDecl.EXTENDED_CAPABILITY):
                self.diags.error(block.pos, f"a {block.kind.value} has no length")
            self._check_refs(block.length, "length")
        self._check_layout()

    # -- block level -----------------------------------------------------------------------------
    def _value(self, expr: Expr) -> int | None:
        for ref in name_refs(expr):
            if ref.name not in self.consts:
                self.diags.error(ref.pos, f"unknown constant '{ref.name}'")
                return None
        try:
            return evaluate(expr, self.consts)
        except Unresolved:
            for fref in field_refs(expr):
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
            BlockKindDecl.HEADER: (1, "header type must be 0 or 1"),
            BlockKindDecl.CAPABILITY: (0xFF, "capability ID does not fit 8 bits"),
            BlockKindDecl.EXTENDED_CAPABILITY: (
                0xFFFF,
                "extended capability ID does not fit 16 bits",
            ),
        }
        limit, message = limits[block.kind]
        if not 0 <= value <= limit:
            self.diags.error(_expr_pos(block.ident, block.pos), f"{message}: {value:#x}")

    def _check_policies(self) -> None:
        block = self.block
        for extra in block.policies[1:]:
            self.diags.error(extra.pos, "duplicate policy (a block has one)")
        for policy in block.policies[:1]:
            capability = block.kind in (
                BlockKindDecl.CAPABILITY,
                BlockKindDecl.EXTENDED_CAPABILITY,
            )
            if policy.hidden and not capability:
                self.diags.error(policy.pos, "only a capability can be hidden")

    def _check_matches(self) -> None:
        block = self.block
        if block.kind is BlockKindDecl.QUIRK and not block.matches:
            self.diags.error(block.pos, "a quirk needs a match")
        keys: dict[str, Pos] = {}
        for match in block.matches:
            if match.key in keys:
                self.diags.error(match.pos, f"duplicate match key '{match.key}'")
            keys[match.key] = match.pos
            bits = _MATCH_WIDTH[match.key]
            for expr in (match.value, match.mask):
                if expr is None:
                    continue
                value = self._value(expr)
                if value is not None and not 0 <= value < (1 << bits):
                    self.diags.error(
                        _expr_pos(expr, match.pos),
                        f"value {value:#x} does not fit the {bits}-bit {match.key}",
                    )

    # -- registers and fields --------------------------------------------------------------------
    def _check_register(self, reg: RegisterDecl) -> None:
        self._check_refs(reg.offset, "offset")
        if reg.condition is not None:
            self._check_refs(reg.condition, "condition")
        names: dict[str, FieldDecl] = {}
        owner: dict[int, FieldDecl] = {}
        bits = reg.width * 8
        shapeless = False
        for fld in reg.fields:
            if fld.name != "_" and fld.name in names:
                self.diags.error(
                    fld.pos,
                    f"duplicate field '{fld.name}' in register '{reg.name}'"
                    f" (first at {names[fld.name].pos})",
                )
            names.setdefault(fld.name, fld)
            if fld.msb < fld.lsb:
                self.diags.error(fld.bits_pos, f"bit range [{fld.msb}:{fld.lsb}] runs backwards")
                shapeless = True
                continue
            if fld.msb >= bits:
                self.diags.error(
                    fld.bits_pos,
                    f"bit {fld.msb} is outside the {bits}-bit register '{reg.name}'",
                )
                shapeless = True
                continue
            twice = [bit for bit in range(fld.lsb, fld.msb + 1) if bit in owner]
            if twice:
                self.diags.error(
                    fld.bits_pos,
                    f"bit {twice[-1]} of register '{reg.name}' is covered twice"
                    f" (also by field '{owner[twice[-1]].name}')",
                )
            for bit in range(fld.lsb, fld.msb + 1):
                owner.setdefault(bit, fld)
            self._check_field(fld)
        missing = [b for b in range(bits) if b not in owner]
        if missing and not shapeless:
            self.diags.error(
                reg.pos,
                f"bits {_ranges(missing)} of register '{reg.name}' are not covered by any field",
            )

    def _check_field(self, fld: FieldDecl) -> None:
        kind = fld.backing.kind
        for access in filter(None, (fld.access, fld.permissive)):
            if kind in (BackingKind.CONST, BackingKind.CACHED) and access in _DATA_ACCESS:
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
                self.diags.error(use.pos, f"undeclared hook '{use.name}'")
            elif hook.kind != use.kind:
                self.diags.error(
                    use.pos,
                    f"hook '{use.name}' is declared on_{hook.kind} but used on_{use.kind}",
                )

    def _check_refs(self, expr: Expr, what: str) -> None:
        for ref in name_refs(expr):
            if ref.name not in self.consts:
                self.diags.error(ref.pos, f"unknown constant '{ref.name}'")
        for fref in field_refs(expr):
            target = self._field_of(fref)
            if target is None:
                continue
            reg = self.registers[fref.register]
            if reg.condition is not None or field_refs(reg.offset):
                self.diags.error(
                    fref.pos,
                    f"{what} refers to '{fref.register}.{fref.field}', whose register is"
                    " itself conditional or movable",
                )

    def _field_of(self, ref: FieldRef) -> FieldDecl | None:
        reg = self.registers.get(ref.register)
        if reg is None:
            self.diags.error(ref.pos, f"unknown register '{ref.register}'")
            return None
        fld = next((f for f in reg.fields if f.name == ref.field), None)
        if fld is None:
            self.diags.error(ref.pos, f"unknown field '{ref.field}' in register '{ref.register}'")
        return fld

    # -- layout: every combination of the fields that move or hide registers ----------------------
    def _check_layout(self) -> None:
        refs: dict[tuple[str, str], FieldDecl] = {}
        for reg in self.block.registers:
            for ref in field_refs(reg.offset) + field_refs(reg.condition):
                fld = self._quiet_field(ref)
                if fld is None:
                    return  # already reported
                refs[(ref.register, ref.field)] = fld
        keys = sorted(refs)
        domains = [range(1 << refs[k].width) for k in keys]
        total = 1
        for dom in domains:
            total *= len(dom)
        if total > MAX_COMBINATIONS:
            self.diags.error(
                self.block.pos,
                f"register offsets and conditions depend on {total} field values;"
                f" at most {MAX_COMBINATIONS} can be checked",
            )
            return
        for values in itertools.product(*domains):
            env = dict(zip(keys, values, strict=True))
            self._check_one_layout(env)

    def _quiet_field(self, ref: FieldRef) -> FieldDecl | None:
        reg = self.registers.get(ref.register)
        if reg is None:
            return None
        return next((f for f in reg.fields if f.name == ref.field), None)

    def _check_one_layout(self, env: Mapping[tuple[str, str], int]) -> None:
        kind = self.block.kind
        space, link = {
            BlockKindDecl.HEADER: (HEADER_SIZE, 0),
            BlockKindDecl.CAPABILITY: (STD_CAP_SPACE, STD_CHAIN_LINK),
            BlockKindDecl.EXTENDED_CAPABILITY: (EXT_CAP_SPACE, EXT_CHAIN_LINK),
            BlockKindDecl.QUIRK: (CONFIG_SPACE, 0),
        }[kind]
        taken: dict[int, RegisterDecl] = {}
        for reg in self.block.registers:
            try:
                if reg.condition is not None and not evaluate(reg.condition, self.consts, env):
                    continue
                offset = evaluate(reg.offset, self.consts, env)
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
