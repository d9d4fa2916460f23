"""What a benchmark cannot run without. A missing fixture stops it with one line on stderr and
a non-zero exit: a benchmark that quietly measured something else (an all-zero device, fewer
dumps) would print ratios that look valid and mean nothing."""

from __future__ import annotations

import sys
from pathlib import Path

from pciback.sim.fixtures import fixture

EXIT_MISSING = 2


def missing(what: str) -> SystemExit:
    """The exit to raise: the line is printed here, with the script's name."""
    print(f"{Path(sys.argv[0]).name}: cannot run: {what}", file=sys.stderr)
    return SystemExit(EXIT_MISSING)


def fixture_or_exit(name: str) -> Path:
    try:
        return fixture(name)
    except FileNotFoundError as exc:
        raise missing(str(exc)) from None
