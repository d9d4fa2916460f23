"""`length auto`: a capability's length as the extent of its registers, an expression the
checker then treats as if the author had written it.

Written out by hand, such a length repeats every register condition in arithmetic (the PCIe
capability's depended on the version and four port types); derived, it cannot disagree with
the registers, and the extent check still proves that no byte below it is left undescribed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from pciback.compiler.diagnostics import Diagnostics, Pos
from pciback.compiler.evaluate import EvalError, Unresolved, evaluate, to_text
from pciback.compiler.model import (
    Binary,
    BlockDecl,
    Call,
    Expr,
    Num,
    RegisterDecl,
    Unary,
    device_refs,
)

# Operators whose value is already 0 or 1: a condition built of them multiplies as it is.
_TRUTH_OPS = frozenset(("==", "!=", "<", "<=", ">", ">=", "and", "or", "not"))


def elaborate_length(block: BlockDecl, consts: Mapping[str, int], diags: Diagnostics) -> BlockDecl:
    """The block with its `length auto` replaced by the extent of its registers (arrays
    already expanded); misuse is reported at the word `auto`. The grammar gives a length
    to capabilities only."""
    pos = block.length_auto
    if pos is None:
        return block
    if not block.registers:
        diags.error(
            pos,
            f"`length auto` of {block.kind.value.replace('_', ' ')} '{block.name}' that"
            " describes no register: write its length",
        )
        return block
    return replace(block, length=extent(block.registers, consts, pos))


def extent(registers: tuple[RegisterDecl, ...], consts: Mapping[str, int], pos: Pos) -> Expr:
    """max over the registers of (end if present else 0): one term per distinct condition,
    holding the furthest end among the registers it places, and the unconditional fixed ends
    folded into one number."""
    fixed = 0
    terms: dict[str, Expr] = {}  # by the condition's text ('' for none), in source order
    ends: dict[str, int] = {}  # the furthest fixed end of each condition
    for reg in registers:
        end = _end(reg, consts, pos)
        key = to_text(reg.condition) if reg.condition is not None else ""
        if isinstance(end, int):
            if reg.condition is None:
                fixed = max(fixed, end)
                continue
            if end <= ends.get(key, -1):
                continue
            ends[key] = end
            end_expr: Expr = Num(end, pos)
        else:
            key += f"@{to_text(end)}"  # a movable end is a term of its own
            end_expr = end
        terms[key] = _when(end_expr, reg.condition, pos)
    # A conditional term that cannot exceed the unconditional ends adds nothing.
    kept = [t for k, t in terms.items() if not (k in ends and ends[k] <= fixed)]
    if not kept:
        return Num(fixed, pos)
    if fixed:
        kept.insert(0, Num(fixed, pos))
    return kept[0] if len(kept) == 1 else Call("max", tuple(kept), pos)


def _end(reg: RegisterDecl, consts: Mapping[str, int], pos: Pos) -> int | Expr:
    """The byte after the register: a number when its offset is one."""
    if not device_refs(reg.offset):
        try:
            return evaluate(reg.offset, consts) + reg.width
        except (EvalError, Unresolved):
            pass  # reported where the offset is checked; kept as written meanwhile
    return Binary("+", reg.offset, Num(reg.width, pos), pos)


def _when(end: Expr, condition: Expr | None, pos: Pos) -> Expr:
    if condition is None:
        return end
    op = condition.op if isinstance(condition, Binary | Unary) else ""
    truth = condition if op in _TRUTH_OPS else Binary("!=", condition, Num(0, pos), pos)
    return Binary("*", end, truth, pos)
