"""`pciback journal`: the audit journal of changes made through the control socket, oldest first.

The journal lives in the daemon's state directory (pciback.daemon.audit_journal): `audit.jsonl`
and, as it rotates, `audit.jsonl.1` ... `.KEEP`, newest first. This reads the files directly, so
it works with the daemon stopped; it needs the right to read them (root, or the daemon's user:
they are 0600). A line that is not one of the journal's is reported as such, never skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pciback.cli.socket import ENV_CONFIG
from pciback.daemon.audit_journal import JOURNAL_NAME, KEEP, MAX_BYTES
from pciback.daemon.config import DEFAULT_STATE_DIR, ConfigError, load_config

if TYPE_CHECKING:
    from pciback.cli import Subparsers

# What one line may hold before it is shown cut: a journal line is bounded when written, so a
# longer one was not written by the daemon.
MAX_LINE = 8192


def register(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "journal",
        help="the audit journal of control-socket changes, oldest first",
        description=(
            "Print the changes made through the daemon's control socket, as its audit journal "
            "in the state directory has them (rotated files included), oldest first."
        ),
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help=(
            f"the daemon's state directory (default: from --config or ${ENV_CONFIG}, else "
            f"{DEFAULT_STATE_DIR})"
        ),
    )
    parser.add_argument(
        "--config",
        default=argparse.SUPPRESS,  # leaves the global option's value when not given here
        metavar="FILE",
        help=f"the daemon's TOML configuration, for its state directory (default: ${ENV_CONFIG})",
    )
    parser.add_argument("-n", "--lines", type=int, metavar="N", help="only the last N entries")
    parser.add_argument("--json", action="store_true", help="the entries as the journal has them")
    parser.set_defaults(func=_journal)


def _journal(args: argparse.Namespace) -> int:
    if args.lines is not None and args.lines < 1:
        print("pciback journal: -n takes a number of entries, 1 or more", file=sys.stderr)
        return 2
    try:
        directory = _state_dir(args)
    except ConfigError as exc:
        print(f"pciback journal: {exc}", file=sys.stderr)
        return 2
    files = journal_files(directory)
    if not files:
        print(f"pciback journal: no {JOURNAL_NAME} in {directory}", file=sys.stderr)
        return 1
    entries: deque[str] = deque(maxlen=args.lines)
    try:
        for line, where in journal_lines(files):
            entries.append(line if args.json else describe(line, where))
    except OSError as exc:
        print(f"pciback journal: {exc.filename or directory}: {exc.strerror}", file=sys.stderr)
        return 1
    for entry in entries:
        print(entry)
    return 0


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir:
        return Path(args.state_dir)
    config = getattr(args, "config", None) or os.environ.get(ENV_CONFIG, "").strip()
    if config:
        state_dir = load_config(Path(config)).state_dir
        if state_dir is None:
            raise ConfigError(f"{config} runs the daemon with persist = false: it has no journal")
        return state_dir
    return DEFAULT_STATE_DIR


def journal_files(directory: Path) -> list[Path]:
    """The journal's files, oldest first."""
    names = [f"{JOURNAL_NAME}.{k}" for k in range(KEEP, 0, -1)] + [JOURNAL_NAME]
    return [directory / name for name in names if (directory / name).is_file()]


def journal_lines(files: list[Path]) -> Iterator[tuple[str, str]]:
    """Each line of the files (bounded by what the journal may hold), with FILE:LINE."""
    for path in files:
        with path.open("rb") as handle:
            # A file grows to MAX_BYTES before it rotates; one more line may end it.
            data = handle.read(MAX_BYTES + MAX_LINE)
        for number, raw in enumerate(data.splitlines(), start=1):
            yield raw[:MAX_LINE].decode("utf-8", "replace"), f"{path.name}:{number}"


def describe(line: str, where: str) -> str:
    """One entry as a line for the operator."""
    try:
        entry: Any = json.loads(line)
    except ValueError:
        entry = None
    if not isinstance(entry, dict):
        return f"{where}: not a journal entry: {line[:120]!r}"
    if entry.get("event") == "lines lost":
        return f"(the journal lost {entry.get('count', '?')} lines here: the disk fell behind)"
    request = entry.get("request")
    words = []
    if isinstance(request, dict):
        words.append(str(request.get("op", "?")))
        words += [f"{k}={v}" for k, v in sorted(request.items()) if k != "op"]
    detail = entry.get("detail") or ""
    return (
        f"{entry.get('time', '?')}  uid {entry.get('uid', '?')} pid {entry.get('pid', '?')}  "
        f"{' '.join(words) or '?'}: {entry.get('outcome', '?')}"
        + (f" ({detail})" if detail else "")
    )
