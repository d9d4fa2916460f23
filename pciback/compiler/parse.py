"""Pass 1: text -> lark parse tree, syntax errors turned into positioned diagnostics."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import lark
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from pciback.compiler.diagnostics import Diagnostics, Pos, closest
from pciback.compiler.model import MATCH_KEY_BITS
from pciback.tables import Access

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
    "MUL_OP": "'*', '<<' or '>>'",
    "DIV": "'/'",
    "AND_OP": "'&'",
    "LINUX_WORD": "how Linux treats it (ro, rw, rw1c, rsvdp, rsvdz, undescribed, refused)",
    "LENGTH_AUTO": "'auto'",
    "$END": "end of file",
}
_ACCESS_WORDS = tuple(access.value for access in Access)
# The words of the terminals that are alternatives, for "did you mean" on a misspelt keyword.
_WORDS = {
    "WIDTH": ("u8", "u16", "u32"),
    "ACCESS": _ACCESS_WORDS,
    "POLICY": ("expose", "hide"),
    "MATCH_KEY": tuple(MATCH_KEY_BITS),
    "LINUX_WORD": (*_ACCESS_WORDS, "undescribed", "refused"),
}
# What may follow a field's access: a misspelling of one of them reads as the next field's name.
_FIELD_TAIL = ("permissive", "on_write", "on_rising", "on_falling", "on_read", "linux")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The significant tokens of a source, roughly: enough to find the word before an error.
_ROUGH_TOKEN = re.compile(r'"[^"\n]*"|#[^\n]*|[A-Za-z0-9_]+|\S')


class _WholeWords(lark.lark.PostLex):
    """Lets the lexer see a NAME in every parser state. Without it, where no name may stand, a
    keyword matches the start of a longer word (`ifx` lexes as `if` and `x`); with it the word
    is one token, a keyword only when it is the whole word, and a misspelling is reported as
    the word it is."""

    always_accept = ("NAME",)

    def process(self, stream: Iterator[lark.Token]) -> Iterator[lark.Token]:
        return stream


@cache
def parser() -> lark.Lark:
    return lark.Lark(
        GRAMMAR.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        postlex=_WholeWords(),
        propagate_positions=True,
        maybe_placeholders=False,
    )


def parse(text: str, path: str, diags: Diagnostics) -> lark.Tree[lark.Token] | None:
    try:
        return parser().parse(text)
    except UnexpectedInput as exc:
        diags.error(_error_pos(exc, path, text), _describe(exc, text))
        return None


def _error_pos(exc: UnexpectedInput, path: str, text: str) -> Pos:
    line = getattr(exc, "line", -1)
    column = getattr(exc, "column", -1)
    if isinstance(exc, UnexpectedEOF) or line is None or line < 1:
        lines = text.splitlines() or [""]
        return Pos(path, len(lines), len(lines[-1]) + 1)
    return Pos(path, line, column)


def _describe(exc: UnexpectedInput, text: str) -> str:
    if isinstance(exc, UnexpectedCharacters):
        found = repr(exc.char)
        expected = _expected(_acceptable(exc, set(exc.allowed or ())))
        return f"syntax error: unexpected character {found}" + (
            f", expected {expected}" if expected else ""
        )
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        found = "end of file" if tok.type == "$END" else repr(str(tok))
        names = _acceptable(exc, set(exc.expected))
        message = f"syntax error: unexpected {found}, expected {_expected(names)}"
        return message + _hint(str(tok) if tok.type != "$END" else "", names, exc, text)
    if isinstance(exc, UnexpectedEOF):
        return f"syntax error: unexpected end of file, expected {_expected(set(exc.expected))}"
    return "syntax error"


def _acceptable(exc: UnexpectedInput, expected: set[str]) -> set[str]:
    """The terminals the parser would take here. LALR's own `expected` merges the lookaheads of
    every rule that shares the state (after `@0x10` it would list what may follow any number),
    and the lexer allows a name everywhere (_WholeWords); trying each terminal with the parser
    as it stands keeps only those that would be accepted."""
    state = getattr(exc, "interactive_parser", None)
    if state is None:
        return expected
    try:
        accepted = set(state.accepts())
    except Exception:  # a best effort: lark's own answer stands
        return expected
    return accepted or expected


def _hint(found: str, names: set[str], exc: UnexpectedToken, text: str) -> str:
    """` (did you mean 'register'?)` for a misspelt keyword."""
    if _WORD.fullmatch(found):
        close = closest(found, _keywords(names))
        if close is not None:
            return f" (did you mean '{close}'?)"
    if found == "linux" and "STRING" in names:
        # Only a register's reason may be followed by its `linux` note.
        return ' (a register\'s `linux` note follows its reason: `"why" linux WORD`)'
    if names == {"LSQB"}:
        # Only a field's name is followed by `[`: the word before the error was read as one,
        # where `permissive` or a hook was probably meant.
        previous = _word_before(text, exc.token.start_pos)
        close = closest(previous, _FIELD_TAIL, cutoff=0.75) if previous else None
        if close is not None:
            return f" ('{previous}' was read as a field name: did you mean '{close}'?)"
    return ""


def _keywords(names: set[str]) -> list[str]:
    terminals = {t.name: t for t in parser().terminals}
    words: list[str] = []
    for name in names:
        if name in _WORDS:
            words.extend(_WORDS[name])
            continue
        term = terminals.get(name)
        if (
            term is not None
            and isinstance(term.pattern, lark.lexer.PatternStr)
            and _WORD.fullmatch(term.pattern.value)
        ):
            words.append(str(term.pattern.value))
    return words


def _word_before(text: str, offset: int | None) -> str | None:
    if offset is None:
        return None
    tokens = [t for t in _ROUGH_TOKEN.findall(text[:offset]) if not t.startswith("#")]
    if tokens and _WORD.fullmatch(tokens[-1]):
        return str(tokens[-1])
    return None


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
