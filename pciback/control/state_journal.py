"""The interrupt journal: append-only files of the op path's interrupt records.

An MSI enable must be on record before its map hypercall and its PIRQs before the device is
programmed, yet a guest's op may not wait for the disk (Linux's pcifront gives it 2 s). A line
appended here is one write(2) into the page cache and no fsync: it survives the daemon's crash,
which is the crash that matters for PIRQs, and not an OS crash of dom0, which takes the whole
machine down (Xen reboots it) and every guest and PIRQ with it. The state writer folds what is
appended into the database (with fsync) and then deletes the files it folded.

Each file is one generation; the writer rotates to the next one when it takes a batch, so a
generation's lines are all in the batch that folds it. Each line is one change, a JSON list of
[table, address, domid, data-or-null] rows applied together. Lines are read back as untrusted:
a line that does not parse or check (a torn last line after a crash, typically) is reported
and skipped.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from pciback.control.state_dir import check_file, open_file

log = logging.getLogger("pciback.state")

JOURNAL_TABLES = frozenset({"irq_state", "irq_intent"})
_NAME = re.compile(r"interrupts\.(\d{1,12})\.journal")

# One row: (table, address, domid, data); data None deletes the row.
JournalRow = tuple[str, str, int, str | None]


def _path(directory: Path, generation: int) -> Path:
    return directory / f"interrupts.{generation:012d}.journal"


def journal_files(directory: Path) -> list[tuple[int, Path]]:
    """The journal generations present, oldest first (StateDirError for a link or a file not
    the daemon's among them: it is never read nor followed)."""
    found = []
    for path in directory.iterdir():
        match = _NAME.fullmatch(path.name)
        if match:
            check_file(path)
            found.append((int(match.group(1)), path))
    return sorted(found)


def _checked(row: object, max_data: int, max_domid: int) -> JournalRow | None:
    if not isinstance(row, list) or len(row) != 4:
        return None
    table, address, domid, data = row
    if (
        table in JOURNAL_TABLES
        and isinstance(address, str)
        and len(address) <= 64
        and isinstance(domid, int)
        and not isinstance(domid, bool)
        and 0 <= domid <= max_domid
        and (data is None or (isinstance(data, str) and len(data) <= max_data))
    ):
        return (str(table), address, domid, data)
    return None


def read_journal(path: Path, max_data: int, max_domid: int) -> list[JournalRow]:
    """The rows of one file, in order; lines that do not check are logged and skipped."""
    rows: list[JournalRow] = []
    fd = open_file(path, os.O_RDONLY)  # never through a link planted in its place
    with os.fdopen(fd, "rb") as file:
        lines = file.read().split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        change: list[JournalRow] = []
        try:
            decoded = json.loads(line) if len(line) <= 8 * max_data else None
        except (ValueError, RecursionError):
            decoded = None
        if isinstance(decoded, list) and decoded:
            for row in decoded:
                checked = _checked(row, max_data, max_domid)
                if checked is None:
                    change = []
                    break
                change.append(checked)
        if not change:
            torn = number == len(lines)  # no newline after it: the write was cut short
            log.log(
                logging.WARNING if torn else logging.ERROR,
                "%s line %d: %s interrupt record skipped",
                path.name,
                number,
                "a torn" if torn else "an unusable",
            )
            continue
        rows.extend(change)
    return rows


class Journal:
    """The current generation, open for appending. Not thread-safe: the state store appends
    and rotates under its own lock."""

    def __init__(self, directory: Path, generation: int) -> None:
        self.directory = directory
        self.generation = generation
        self._fd = self._open(generation)
        self._written = False

    def _open(self, generation: int) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        return os.open(_path(self.directory, generation), flags, 0o600)

    def append(self, rows: Sequence[JournalRow]) -> None:
        """One change, whole or (if the process dies inside the write) torn; never fsynced."""
        data = json.dumps([list(row) for row in rows], separators=(",", ":")).encode() + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._written = True

    def rotate(self) -> int | None:
        """Continue in a new generation; returns the one left behind, None if it is empty
        (then nothing changes)."""
        if not self._written:
            return None
        fd = self._open(self.generation + 1)
        os.close(self._fd)
        self._fd, self._written = fd, False
        self.generation += 1
        return self.generation - 1

    def remove_through(self, generation: int) -> None:
        """Delete the files of this generation and older ones: their rows are in the database."""
        for number, path in journal_files(self.directory):
            if number <= generation:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        os.close(self._fd)
