"""Evaluating expressions at compile time (constants, and field values being enumerated)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pciback.compiler.diagnostics import Pos, did_you_mean
from pciback.compiler.model import (
    Binary,
    Call,
    CapabilityFieldRef,
    Expr,
    FieldRef,
    NameRef,
    Num,
    Unary,
)

# Every value the language computes fits 64 bits (a sign aside): registers are at most 32 bits
# wide, and the bound keeps a hostile `1 << 1000000` from costing memory or time.
VALUE_BITS = 64

_OPS: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "&": lambda a, b: a & b,
    "==": lambda a, b: int(a == b),
    "!=": lambda a, b: int(a != b),
    "<": lambda a, b: int(a < b),
    "<=": lambda a, b: int(a <= b),
    ">": lambda a, b: int(a > b),
    ">=": lambda a, b: int(a >= b),
    "and": lambda a, b: int(bool(a) and bool(b)),
    "or": lambda a, b: int(bool(a) or bool(b)),
}


# The functions an expression may call, each of one or more arguments.
FUNCTIONS: dict[str, Callable[..., int]] = {"min": min, "max": max}

FieldValues = Mapping[tuple[str, ...], int]
"""Device field values: (register, field) of the block, (block, register, field) of another."""


class Unresolved(Exception):
    """The expression names something with no value here."""


class EvalError(Exception):
    """A value that cannot be computed (it does not fit 64 bits, divides by zero, or shifts by a
    negative count)."""

    def __init__(self, pos: Pos, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message


class DivisionByZero(EvalError):
    """A divisor that is 0 (for some value of the device fields it reads)."""


def fits(value: int) -> bool:
    return abs(value).bit_length() <= VALUE_BITS


def evaluate(
    expr: Expr,
    consts: Mapping[str, int],
    fields: FieldValues | None = None,
) -> int:
    if isinstance(expr, Num):
        if not fits(expr.value):
            raise EvalError(expr.pos, f"{expr.value:#x} does not fit {VALUE_BITS} bits")
        return expr.value
    if isinstance(expr, NameRef):
        if expr.name not in consts:
            raise Unresolved(expr.name)
        return consts[expr.name]
    if isinstance(expr, FieldRef):
        key = (expr.register, expr.field)
        if fields is None or key not in fields:
            raise Unresolved(f"{expr.register}.{expr.field}")
        return fields[key]
    if isinstance(expr, CapabilityFieldRef):
        if fields is None or expr.key not in fields:
            raise Unresolved(".".join(expr.key))
        return fields[expr.key]
    if isinstance(expr, Unary):
        return int(not evaluate(expr.operand, consts, fields))
    if isinstance(expr, Call):
        function = FUNCTIONS.get(expr.function)
        if function is None:
            hint = did_you_mean(expr.function, FUNCTIONS)
            known = " and ".join(sorted(FUNCTIONS))
            raise EvalError(
                expr.pos, f"unknown function '{expr.function}'{hint}: the functions are {known}"
            )
        return int(function(evaluate(arg, consts, fields) for arg in expr.args))
    left = evaluate(expr.left, consts, fields)
    right = evaluate(expr.right, consts, fields)
    return _apply(expr, left, right)


def _apply(expr: Binary, left: int, right: int) -> int:
    """One operation on values that fit 64 bits, whose result must fit them too."""
    if expr.op == "/":
        if right == 0:
            raise DivisionByZero(expr.right.pos, f"division by zero: {left:#x} / 0")
        return left // right  # rounds down; the result is never larger than `left`
    if expr.op == ">>":
        if right < 0:
            raise EvalError(expr.pos, f"{left:#x} >> {right}: a shift count cannot be negative")
        return left >> right
    if expr.op == "<<":
        if right < 0:
            raise EvalError(expr.pos, f"{left:#x} << {right}: a shift count cannot be negative")
        # Decided before shifting: the shifted value is never built when it cannot fit.
        if left and abs(left).bit_length() + right > VALUE_BITS:
            raise EvalError(expr.pos, f"{left:#x} << {right} does not fit {VALUE_BITS} bits")
        return left << right if left else 0
    result = _OPS[expr.op](left, right)
    if not fits(result):
        raise EvalError(expr.pos, f"{left:#x} {expr.op} {right:#x} does not fit {VALUE_BITS} bits")
    return result


def to_python(expr: Expr, consts: Mapping[str, int], lookup: str = "f") -> str:
    """The expression as Python source over a field lookup: `lookup(register, field)` for the
    block's own fields, `lookup.of(block, register, field)` for another capability's."""
    if isinstance(expr, Num):
        return hex(expr.value) if expr.value > 9 else str(expr.value)
    if isinstance(expr, NameRef):
        value = consts[expr.name]
        return hex(value) if value > 9 else str(value)
    if isinstance(expr, FieldRef):
        return f'{lookup}("{expr.register}", "{expr.field}")'
    if isinstance(expr, CapabilityFieldRef):
        return f'{lookup}.of("{expr.block}", "{expr.register}", "{expr.field}")'
    if isinstance(expr, Unary):
        return f"int(not {to_python(expr.operand, consts, lookup)})"
    if isinstance(expr, Call):
        args = ", ".join(to_python(arg, consts, lookup) for arg in expr.args)
        return f"{expr.function}({args})"
    left = to_python(expr.left, consts, lookup)
    right = to_python(expr.right, consts, lookup)
    if expr.op in ("and", "or"):
        return f"int(bool({left}) {expr.op} bool({right}))"
    if expr.op in ("==", "!=", "<", "<=", ">", ">="):
        return f"int({left} {expr.op} {right})"
    if expr.op == "/":
        return f"({left} // {right})"
    return f"({left} {expr.op} {right})"


def to_text(expr: Expr) -> str:
    """The expression as the policy author wrote it (normalised spacing)."""
    if isinstance(expr, Num):
        return hex(expr.value) if expr.value > 9 else str(expr.value)
    if isinstance(expr, NameRef):
        return expr.name
    if isinstance(expr, FieldRef):
        return f"{expr.register}.{expr.field}"
    if isinstance(expr, CapabilityFieldRef):
        return ".".join(expr.key)
    if isinstance(expr, Unary):
        return f"not {to_text(expr.operand)}"
    if isinstance(expr, Call):
        return f"{expr.function}({', '.join(to_text(arg) for arg in expr.args)})"
    return f"({to_text(expr.left)} {expr.op} {to_text(expr.right)})"
