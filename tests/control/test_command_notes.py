"""docs/using-with-xl.md lists every operator-facing command beside its xl or Linux
counterpart: a command added without a line there fails here."""

from __future__ import annotations

import argparse
from pathlib import Path

from pciback.cli import build_parser

NOTE = Path(__file__).resolve().parents[2] / "docs" / "using-with-xl.md"


def commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_every_command_is_in_the_note() -> None:
    text = NOTE.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    found = commands()
    assert {"slot", "assignable-remove", "audit"} <= set(found)
    missing = [
        name
        for name in found
        if not any(f"`pciback {name}" in row or f"`{name}`" in row for row in rows)
    ]
    assert missing == []
