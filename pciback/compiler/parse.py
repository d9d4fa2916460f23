"""Pass 1: text -> lark parse tree, syntax errors turned into positioned diagnostics."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import lark
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from pciback.compiler.diagnostics import Diagnostics, Pos

GRAMMAR = Path(__file__).with_name("grammar.lark")

_READABLE = {
    "NAME": "a name",
    "INT": "a number",
    "STRING": "a quoted reason",
    "WIDTH": "a width (u8, u16, u32)",
    "ACCESS": "an access class (ro, rw, rw1c, rsvdp, rsvdz)",
    "POLICY": "a policy (expose, hide)",
    "MATCH_KEY": "a match key (vendor, device, subsystem_vendor, subsystem_device, class)",
    "COMPARE": "a comparison",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*' or '<<'",
    "$END": "end of file",
}


@cache
def parser() -> lark.Lark:
    return lark.Lark(
        GRAMMAR.read_text(encoding="utf-8"),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=False,
    )


def parse(text: str, path: str, diags: Diagnostics) -> lark.Tree[lark.Token] | None:
    try:
        return parser().parse(text)
    except UnexpectedInput as exc:
        diags.error(_error_pos(exc, path, text), _describe(exc))
        return None


def _error_pos(exc: UnexpectedInput, path: str, text: str) -> Pos:
    line = getattr(exc, "line", -1)
    column = getattr(exc, "column", -1)
    if isinstance(exc, UnexpectedEOF) or line is None or line < 1:
        lines = text.splitlines() or [""]
        return Pos(path, len(lines), len(lines[-1]) + 1)
    return Pos(path, line, column)


def _describe(exc: UnexpectedInput) -> str:
    if isinstance(exc, UnexpectedCharacters):
        found = repr(exc.char)
        expected = _expected(set(exc.allowed or ()))
        return f"syntax error: unexpected character {found}" + (
            f", expected {expected}" if expected else ""
        )
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        found = "end of file" if tok.type == "$END" else repr(str(tok))
        return f"syntax error: unexpected {found}, expected {_expected(set(exc.expected))}"
    if isinstance(exc, UnexpectedEOF):
        return f"syntax error: unexpected end of file, expected {_expected(set(exc.expected))}"
    return "syntax error"


def _expected(names: set[str]) -> str:
    terminals = {t.name: t for t in parser().terminals}
    words: set[str] = set()
    for name in names:
        if name in _READABLE:
            words.add(_READABLE[name])
            continue
        term = terminals.get(name)
        if term is not None and isinstance(term.pattern, lark.lexer.PatternStr):
            words.add(f"'{term.pattern.value}'")
        else:
            words.add(name.lower())
    ordered = sorted(words)
    if len(ordered) <= 1:
        return "".join(ordered)
    return "one of " + ", ".join(ordered)
