"""Diagnostics with source positions, printed as `FILE:LINE:COL: error: message`.

A warning (`FILE:LINE:COL: warning: message`) points at something that compiles but is probably
not what the author meant; it fails a run only under `pciback-dsl check --werror`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True, slots=True, order=True)
class Pos:
    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True, order=True)
class Diagnostic:
    pos: Pos
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        return f"{self.pos}: {self.severity}: {self.message}"


class Diagnostics:
    """Collects every problem of a run so that one compile reports them all."""

    def __init__(self) -> None:
        self._items: list[Diagnostic] = []

    def error(self, pos: Pos, message: str) -> None:
        self._add(Diagnostic(pos, message, ERROR))

    def warning(self, pos: Pos, message: str) -> None:
        self._add(Diagnostic(pos, message, WARNING))

    def _add(self, diag: Diagnostic) -> None:
        if diag not in self._items:
            self._items.append(diag)

    @property
    def items(self) -> list[Diagnostic]:
        return sorted(self._items)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == WARNING]

    def __bool__(self) -> bool:
        """True when the run has failed: warnings alone do not fail it."""
        return any(d.severity == ERROR for d in self._items)


class CompileFailed(Exception):
    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        errors = sum(1 for d in diagnostics if d.severity == ERROR)
        super().__init__(f"{errors} error(s)")
        self.diagnostics = diagnostics


def summary(diagnostics: Iterable[Diagnostic]) -> str:
    """`2 errors, 1 warning`: the last line of a run that reported anything."""
    items = list(diagnostics)
    errors = sum(1 for d in items if d.severity == ERROR)
    warnings = len(items) - errors
    parts = [_count(errors, "error")] if errors or not warnings else []
    if warnings:
        parts.append(_count(warnings, "warning"))
    return ", ".join(parts)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when a known name is close to `name`, otherwise nothing."""
    close = closest(name, candidates)
    return f" (did you mean '{close}'?)" if close is not None else ""


def closest(name: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The candidate most like `name` (case aside), or None when none is close enough."""
    by_lower: dict[str, str] = {}
    for candidate in sorted(set(candidates)):
        if candidate != name:
            by_lower.setdefault(candidate.lower(), candidate)
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[found[0]] if found else None
