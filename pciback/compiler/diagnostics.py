"""Diagnostics with source positions, printed as `FILE:LINE:COL: error: message`."""

from __future__ import annotations

from dataclasses import dataclass


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
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.pos}: {self.severity}: {self.message}"


class Diagnostics:
    """Collects every problem of a run so that one compile reports them all."""

    def __init__(self) -> None:
        self._items: list[Diagnostic] = []

    def error(self, pos: Pos, message: str) -> None:
        diag = Diagnostic(pos, message)
        if diag not in self._items:
            self._items.append(diag)

    @property
    def items(self) -> list[Diagnostic]:
        return sorted(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)


class CompileFailed(Exception):
    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__(f"{len(diagnostics)} error(s)")
        self.diagnostics = diagnostics
