"""Pass 2: parse tree -> model. Only shapes are translated here; meaning is checked later."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lark import Token, Tree

from pciback.compiler.diagnostics import Diagnostics, Pos
from pciback.compiler.evaluate import VALUE_BITS
from pciback.compiler.model import (
    ArrayDecl,
    BackingDecl,
    Binary,
    BlockDecl,
    Call,
    CapabilityFieldRef,
    ChainDecl,
    ConstDecl,
    Expr,
    FieldDecl,
    FieldRef,
    GroupDecl,
    HookDecl,
    HookUse,
    LayoutDecl,
    LayoutFieldDecl,
    LayoutRegisterDecl,
    LinuxNote,
    MatchDecl,
    NameRef,
    Num,
    PolicyDecl,
    RegisterDecl,
    RestDecl,
    SectionDecl,
    SeizeDecl,
    SourceFile,
    Unary,
    UseDecl,
)
from pciback.tables import Backing, BlockKind

_WIDTHS = {"u8": 1, "u16": 2, "u32": 4}
_BLOCK_KINDS = {
    "header": BlockKind.HEADER,
    "capability": BlockKind.CAPABILITY,
    "ext_capability": BlockKind.EXTENDED_CAPABILITY,
    "quirk": BlockKind.QUIRK,
}

Node = Tree[Token] | Token

# Expressions deeper than this are refused: the passes after this one walk expressions
# recursively, and no policy needs a hundredth level of parentheses.
MAX_EXPR_DEPTH = 100
# Literal digits beyond which no number can fit 64 bits (whatever its leading zeros).
_MAX_DIGITS = {16: 16, 2: 64, 10: 20}


class _Abandon(Exception):
    """An expression was refused (and reported); the file is not checked further."""


class Builder:
    """Translates one file's parse tree; the few errors found here are lexical (a number that
    does not fit 64 bits, an expression nested too deeply) and leave the file out of the checks,
    as a syntax error does (`failed`)."""

    def __init__(self, path: str, diags: Diagnostics | None = None) -> None:
        self.path = path
        self.diags = diags if diags is not None else Diagnostics()
        self.failed = False

    # -- positions -------------------------------------------------------------------------------
    def pos(self, node: Any) -> Pos:
        if isinstance(node, Token):
            return Pos(self.path, node.line or 0, node.column or 0)
        meta = node.meta
        return Pos(self.path, getattr(meta, "line", 0), getattr(meta, "column", 0))

    # -- entry -----------------------------------------------------------------------------------
    def source(self, tree: Tree[Token], text: str) -> SourceFile:
        out = SourceFile(self.path, text)
        for item in tree.children:
            assert isinstance(item, Tree)
            kind = str(item.data)
            if kind == "const_decl":
                out.consts.append(self.const(item))
            elif kind == "hook_decl":
                out.hooks.append(self.hook(item))
            elif kind == "group":
                out.groups.append(self.group(item))
            elif kind == "layout":
                out.layouts.append(self.layout(item))
            else:
                out.blocks.append(self.block(item))
        return out

    def const(self, tree: Tree[Token]) -> ConstDecl:
        name, value, *rest = tree.children
        return ConstDecl(str(name), self.expr(value), self.reason(rest), self.pos(name))

    def hook(self, tree: Tree[Token]) -> HookDecl:
        kind_node, name, *rest = tree.children
        assert isinstance(kind_node, Tree)
        kind = "write" if kind_node.data == "kind_write" else "read"
        params = tuple(str(p) for p in rest if isinstance(p, Token) and p.type == "NAME")
        return HookDecl(kind, str(name), params, self.reason(rest), self.pos(name))

    def group(self, tree: Tree[Token]) -> GroupDecl:
        name, *rest = tree.children
        registers = tuple(
            self.register(c) for c in rest if isinstance(c, Tree) and c.data == "register"
        )
        return GroupDecl(str(name), self.reason(rest), registers, self.pos(name))

    def layout(self, tree: Tree[Token]) -> LayoutDecl:
        name, *rest = tree.children
        items = [c for c in rest if isinstance(c, Tree)]
        return LayoutDecl(
            str(name),
            self.reason(rest),
            tuple(self.layout_register(c) for c in items if c.data == "layout_register"),
            tuple(self.const(c) for c in items if c.data == "const_decl"),
            self.pos(name),
        )

    def layout_register(self, tree: Tree[Token]) -> LayoutRegisterDecl:
        name, offset, width, *rest = tree.children
        fields: list[LayoutFieldDecl] = []
        for child in rest:
            if isinstance(child, Tree) and child.data == "layout_field":
                fname, bits, *tail = child.children
                msb, lsb = self.bits(bits)
                reason = next(
                    (self.string(t) for t in tail if isinstance(t, Tree)),
                    "",
                )
                fields.append(
                    LayoutFieldDecl(str(fname), msb, lsb, reason, self.pos(fname), self.pos(bits))
                )
        return LayoutRegisterDecl(
            str(name),
            self.expr(offset),
            _WIDTHS[str(width)],
            self.reason(rest),
            tuple(fields),
            self.pos(name),
        )

    def block(self, tree: Tree[Token]) -> BlockDecl:
        kind = _BLOCK_KINDS[str(tree.data)]
        name = tree.children[0]
        ident: Expr | None = None
        length: Expr | None = None
        length_auto: Pos | None = None
        reason = ""
        policies: list[PolicyDecl] = []
        registers: list[RegisterDecl] = []
        items: list[RegisterDecl | UseDecl] = []
        matches: list[MatchDecl] = []
        rests: list[RestDecl] = []
        chains: list[ChainDecl] = []
        sections: list[SectionDecl] = []
        seize: list[SeizeDecl] = []
        rest = tree.children[1:]
        if kind is not BlockKind.QUIRK:
            ident = self.expr(rest[0])
            rest = rest[1:]
        for child in rest:
            assert isinstance(child, Tree)
            data = str(child.data)
            if data == "length":
                value = child.children[0]
                if isinstance(value, Token) and value.type == "LENGTH_AUTO":
                    length_auto = self.pos(value)
                else:
                    length = self.expr(value)
            elif data == "reason":
                reason = self.string(child)
            elif data == "policy":
                word, *prest = child.children
                policies.append(PolicyDecl(str(word) == "hide", self.reason(prest), self.pos(word)))
            elif data == "register":
                registers.append(self.register(child))
                items.append(registers[-1])
            elif data == "section":
                for reg in self.section(child, None, sections):
                    registers.append(reg)
                    items.append(reg)
            elif data == "rest":
                access, *tail = child.children
                condition = next(
                    (
                        self.expr(c.children[0])
                        for c in tail
                        if isinstance(c, Tree) and c.data == "condition"
                    ),
                    None,
                )
                rests.append(RestDecl(str(access), self.reason(tail), self.pos(access), condition))
            elif data == "chain":
                chains.append(self.chain(child))
            elif data == "seize":
                kind_node, hook, *tail = child.children
                assert isinstance(kind_node, Tree)
                role = "check" if kind_node.data == "seize_check" else "action"
                seize.append(SeizeDecl(role, str(hook), self.reason(tail), self.pos(hook)))
            elif data == "use":
                group = child.children[0]
                items.append(UseDecl(str(group), self.pos(group)))
            elif data == "match_item":
                key, value, *mask = (
                    c for c in child.children if not (isinstance(c, Token) and c.type == "DIV")
                )
                matches.append(
                    MatchDecl(
                        str(key),
                        self.expr(value),
                        self.expr(mask[0]) if mask else None,
                        self.pos(key),
                    )
                )
            elif data == "match_in":
                key, first, *others = child.children
                matches.append(
                    MatchDecl(
                        str(key),
                        self.expr(first),
                        None,
                        self.pos(key),
                        tuple(self.expr(o) for o in others),
                        listed=True,
                    )
                )
            else:  # pragma: no cover - the grammar admits nothing else
                raise AssertionError(data)
        return BlockDecl(
            kind,
            str(name),
            ident,
            length,
            reason,
            tuple(policies),
            tuple(registers),
            tuple(matches),
            self.pos(name),
            tuple(items),
            tuple(rests),
            length_auto,
            tuple(chains),
            tuple(sections),
            tuple(seize),
        )

    def chain(self, tree: Tree[Token]) -> ChainDecl:
        name, count, start, step, *rest = tree.children
        registers = tuple(
            self.register(c) for c in rest if isinstance(c, Tree) and c.data == "register"
        )
        return ChainDecl(
            str(name),
            self.expr(count),
            self.expr(start),
            self.expr(step),
            registers,
            self.reason(rest),
            self.pos(name),
        )

    def section(
        self,
        tree: Tree[Token],
        outer: tuple[str, Expr] | None,
        sections: list[SectionDecl],
    ) -> list[RegisterDecl]:
        """The section's registers, each under its condition (and an enclosing section's, so
        that a nesting the checker refuses still leaves registers to check); the section itself
        is appended to `sections`, before any written inside it."""
        name, condition_node, *rest = tree.children
        assert isinstance(condition_node, Tree)
        own = self.expr(condition_node.children[0])
        inherited = own if outer is None else Binary("and", outer[1], own, own.pos)
        at = len(sections)
        registers: list[RegisterDecl] = []
        direct: list[str] = []
        members = [c for c in rest if isinstance(c, Tree) and c.data in ("register", "section")]
        for child in members:
            if child.data == "section":
                registers += self.section(child, (str(name), inherited), sections)
                continue
            reg = self.register(child)
            condition = (
                inherited
                if reg.condition is None
                else Binary("and", inherited, reg.condition, reg.condition.pos)
            )
            registers.append(replace(reg, condition=condition, section=str(name)))
            direct.append(reg.name)
        decl = SectionDecl(
            str(name),
            own,
            self.reason(rest),
            self.pos(name),
            tuple(direct),
            within=outer[0] if outer is not None else None,
            empty=not members,
        )
        sections.insert(at, decl)
        return registers

    def register(self, tree: Tree[Token]) -> RegisterDecl:
        name, *rest = tree.children
        array: Tree[Token] | None = None
        head = rest[0]
        if isinstance(head, Tree) and head.data == "array":
            array, rest = head, rest[1:]
        offset, width, *rest = rest
        condition: Expr | None = None
        stride: Expr | None = None
        linux: LinuxNote | None = None
        reason = ""
        fields: list[FieldDecl] = []
        for child in rest:
            assert isinstance(child, Tree)
            if child.data == "linux":
                linux = self.linux(child)
            elif child.data == "condition":
                condition = self.expr(child.children[0])
            elif child.data == "stride":
                stride = self.expr(child.children[0])
            elif child.data == "reason":
                reason = self.string(child)
            else:
                fields.append(self.field(child))
        declared: ArrayDecl | None = None
        if array is not None:  # the grammar admits a stride only after an array
            bounds = [self.expr(c) for c in array.children]
            first, count = (None, bounds[0]) if len(bounds) == 1 else (bounds[0], bounds[1])
            declared = ArrayDecl(first, count, stride, self.pos(array))
        return RegisterDecl(
            str(name),
            self.expr(offset),
            _WIDTHS[str(width)],
            condition,
            reason,
            tuple(fields),
            self.pos(name),
            declared,
            linux=linux,
        )

    def field(self, tree: Tree[Token]) -> FieldDecl:
        name, bits, backing, access, *rest = tree.children
        assert isinstance(backing, Tree)
        msb, lsb = self.bits(bits)
        permissive: str | None = None
        hooks: list[HookUse] = []
        linux: LinuxNote | None = None
        reason = ""
        for child in rest:
            assert isinstance(child, Tree)
            data = str(child.data)
            if data == "linux":
                linux = self.linux(child)
            elif data == "permissive":
                permissive = str(child.children[0])
            elif data == "field_reason":
                reason = self.string(child)
            else:
                hook_name = child.children[0]
                kind = "read" if data == "read_hook" else "write"
                edge = {
                    "write_rising": "rising",
                    "write_falling": "falling",
                    "write_change": "change",
                }.get(data, "any")
                hooks.append(HookUse(kind, str(hook_name), edge, self.pos(hook_name)))
        return FieldDecl(
            str(name),
            msb,
            lsb,
            self.backing(backing),
            str(access),
            permissive,
            tuple(hooks),
            reason,
            self.pos(name),
            self.pos(bits),
            linux,
        )

    def bits(self, tree: Node) -> tuple[int, int]:
        """`[HIGH:LOW]` or `[BIT]`: (msb, lsb)."""
        assert isinstance(tree, Tree)
        numbers = [self.number(t) for t in tree.children]
        return (numbers[0], numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])

    def linux(self, tree: Tree[Token]) -> LinuxNote:
        word = tree.children[0]
        return LinuxNote(str(word), self.pos(word))

    def backing(self, tree: Tree[Token]) -> BackingDecl:
        data = str(tree.data)
        if data == "backing_hw":
            return BackingDecl(Backing.HW, None)
        if data == "backing_cached":
            return BackingDecl(Backing.CACHED, None)
        if data == "backing_shadow_hw":
            return BackingDecl(Backing.SHADOW, None)
        if data == "backing_shadow":
            return BackingDecl(Backing.SHADOW, self.expr(tree.children[0]))
        return BackingDecl(Backing.CONST, self.expr(tree.children[0]))

    # -- expressions -----------------------------------------------------------------------------
    def expr(self, node: Node) -> Expr:
        try:
            return self._expr(node, 1)[0]
        except _Abandon:
            self.failed = True
            return Num(0, self.pos(node))

    def _expr(self, node: Node, depth: int) -> tuple[Expr, int]:
        """The expression and its depth (1 for an atom), refused beyond MAX_EXPR_DEPTH."""
        if depth > MAX_EXPR_DEPTH:
            self.diags.error(
                self.pos(node),
                f"expression nested too deeply (more than {MAX_EXPR_DEPTH} levels)",
            )
            raise _Abandon
        if isinstance(node, Token):  # pragma: no cover - atoms always come wrapped
            return Num(self.number(node), self.pos(node)), 1
        data = str(node.data)
        kids = node.children
        if data == "number":
            return Num(self.number(kids[0]), self.pos(kids[0])), 1
        if data == "name_ref":
            return NameRef(str(kids[0]), self.pos(kids[0])), 1
        if data == "field_ref":
            return FieldRef(str(kids[0]), str(kids[1]), self.pos(kids[0])), 1
        if data == "capability_field_ref":
            ref = CapabilityFieldRef(str(kids[0]), str(kids[1]), str(kids[2]), self.pos(kids[0]))
            return ref, 1
        if data == "call":
            height = 0
            args: list[Expr] = []
            for kid in kids[1:]:
                arg, aheight = self._expr(kid, depth + 1)
                args.append(arg)
                height = max(height, aheight)
            return Call(str(kids[0]), tuple(args), self.pos(kids[0])), height + 1
        if data == "not_":
            operand, height = self._expr(kids[0], depth + 1)
            return Unary("not", operand, self.pos(node)), height + 1
        # A chain `a op b op c` nests to the left: its depth grows with its length.
        if data in ("or_expr", "and_expr"):
            op = "or" if data == "or_expr" else "and"
            result, height = self._expr(kids[0], depth + 1)
            for kid in kids[1:]:
                right, rheight = self._expr(kid, depth + 1)
                height = self._deeper(max(height, rheight), depth, node)
                result = Binary(op, result, right, self.pos(node))
            return result, height
        # comparison, bit_and, sum, product: operand (OP operand)*
        result, height = self._expr(kids[0], depth + 1)
        for i in range(1, len(kids), 2):
            right, rheight = self._expr(kids[i + 1], depth + 1)
            height = self._deeper(max(height, rheight), depth, node)
            result = Binary(str(kids[i]), result, right, result.pos)
        return result, height

    def _deeper(self, height: int, depth: int, node: Node) -> int:
        if depth + height > MAX_EXPR_DEPTH:
            self.diags.error(
                self.pos(node),
                f"expression nested too deeply (more than {MAX_EXPR_DEPTH} levels)",
            )
            raise _Abandon
        return height + 1

    def number(self, token: Node) -> int:
        """A number literal; one that cannot fit 64 bits is reported here, with its text."""
        text = str(token)
        digits = text.replace("_", "").lower()
        base = 16 if digits.startswith("0x") else 2 if digits.startswith("0b") else 10
        if base != 10:
            digits = digits[2:]
        significant = digits.lstrip("0")
        value = int(significant or "0", base) if len(significant) <= _MAX_DIGITS[base] else -1
        if not digits or not 0 <= value < (1 << VALUE_BITS):
            shown = text if len(text) <= 40 else f"{text[:37]}..."
            what = "has no digits" if not digits else f"does not fit {VALUE_BITS} bits"
            self.diags.error(self.pos(token), f"number {shown} {what}")
            self.failed = True
            return 0
        return value

    def string(self, tree: Tree[Token]) -> str:
        return str(tree.children[0])[1:-1]

    def reason(self, rest: list[Node]) -> str:
        for child in rest:
            if isinstance(child, Tree) and child.data == "reason":
                return self.string(child)
        return ""
