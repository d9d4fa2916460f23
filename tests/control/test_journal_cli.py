"""`pciback journal`: the audit journal read back for the operator, oldest first across its
rotated files, with -n and --json, and clear lines for what is not an entry or not there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pciback.cli import main
from pciback.daemon.audit_journal import JOURNAL_NAME, AuditJournal
from pciback.daemon.changes import ChangeAudit
from pciback.daemon.control import PeerCred


def journaled(tmp_path: Path, count: int) -> Path:
    """A state directory whose journal holds `count` permissive changes, rotated."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    journal = AuditJournal(state, max_bytes=600, keep=3)
    audit = ChangeAudit(journal)
    for number in range(count):
        request = {"op": "permissive_add", "device": f"0000:03:00.{number % 8}"}
        audit.record(PeerCred(pid=100 + number, uid=0, gid=0), request, True, f"change {number}")
    assert journal.flush()
    journal.close()
    return state


def test_entries_come_oldest_first_across_the_rotated_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = journaled(tmp_path, 12)
    assert (state / f"{JOURNAL_NAME}.1").exists()  # it did rotate
    assert main(["journal", "--state-dir", str(state)]) == 0
    lines = capsys.readouterr().out.splitlines()
    numbers = [int(line.rsplit("change ", 1)[1].rstrip(")")) for line in lines]
    assert numbers == sorted(numbers) and numbers[-1] == 11
    assert "uid 0 pid 111  permissive_add device=0000:03:00.3: ok (change 11)" in lines[-1]


def test_the_last_entries_and_the_raw_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = journaled(tmp_path, 5)
    assert main(["journal", "--state-dir", str(state), "-n", "2", "--json"]) == 0
    raw = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [entry["detail"] for entry in raw] == ["change 3", "change 4"]


def test_a_line_that_is_no_entry_is_shown_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = journaled(tmp_path, 1)
    with (state / JOURNAL_NAME).open("a") as handle:
        handle.write("garbage\n")
    assert main(["journal", "--state-dir", str(state)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"{JOURNAL_NAME}:2: not a journal entry: 'garbage'"
    )


def test_no_journal_and_bad_arguments_are_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["journal", "--state-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == f"pciback journal: no {JOURNAL_NAME} in {tmp_path}"
    assert main(["journal", "--state-dir", str(tmp_path), "-n", "0"]) == 2
    assert "-n takes a number" in capsys.readouterr().err
    config = tmp_path / "pciback.toml"
    config.write_text('backend = "sim"\npersist = false\n')
    assert main(["journal", "--config", str(config)]) == 2
    assert "persist = false" in capsys.readouterr().err
