"""The audit journal's file: bounded on disk by rotation, never written through a link planted
in its place (at start-up or while the daemon runs), and saying when it lost lines."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from pciback.control.state_dir import StateDirError
from pciback.daemon import audit_journal
from pciback.daemon.audit_journal import JOURNAL_NAME, MAX_QUEUED, AuditJournal

VICTIM_TEXT = "the attacker's target\n"


def state_dir(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    return state


def victim(tmp_path: Path) -> Path:
    target = tmp_path / "victim"
    target.write_text(VICTIM_TEXT)
    target.chmod(0o644)
    return target


def untouched(target: Path) -> bool:
    return target.read_text() == VICTIM_TEXT and stat.S_IMODE(target.stat().st_mode) == 0o644


def entries(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_journal_rotates_and_stays_bounded(tmp_path: Path) -> None:
    state = state_dir(tmp_path)
    journal = AuditJournal(state, max_bytes=1000, keep=2)
    for number in range(200):
        journal.append({"n": number, "pad": "x" * 40})
    assert journal.flush()
    journal.close()
    names = sorted(p.name for p in state.iterdir())
    assert names == [JOURNAL_NAME, f"{JOURNAL_NAME}.1", f"{JOURNAL_NAME}.2"]
    line = len(json.dumps({"n": 100, "pad": "x" * 40}, separators=(",", ":"))) + 1
    for path in state.iterdir():
        assert path.stat().st_size < 1000 + line  # a file is rotated once past the bound
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The newest lines are kept, in order, and none twice.
    kept = [
        e["n"]
        for name in (f"{JOURNAL_NAME}.2", f"{JOURNAL_NAME}.1", JOURNAL_NAME)
        for e in entries(state / name)
    ]
    assert kept == list(range(200 - len(kept), 200))
    assert journal.lost == 0


def test_a_link_planted_at_start_is_refused(tmp_path: Path) -> None:
    state = state_dir(tmp_path)
    target = victim(tmp_path)
    (state / JOURNAL_NAME).symlink_to(target)
    with pytest.raises(StateDirError, match="a symbolic link where a state file belongs"):
        AuditJournal(state)
    assert untouched(target)


def test_a_link_planted_while_running_is_not_written_through(tmp_path: Path) -> None:
    state = state_dir(tmp_path)
    target = victim(tmp_path)
    journal = AuditJournal(state, max_bytes=100, keep=1)
    journal.append({"first": "x" * 120})  # past the bound: rotated, reopened at the next line
    assert journal.flush()
    (state / JOURNAL_NAME).symlink_to(target)  # planted in the window
    journal.append({"second": 2})
    assert journal.flush()
    assert untouched(target)
    assert journal.lost == 1
    (state / JOURNAL_NAME).unlink()
    journal.append({"third": 3})
    journal.close()
    assert untouched(target)
    assert entries(state / JOURNAL_NAME) == [{"count": 1, "event": "lines lost"}, {"third": 3}]
    assert entries(state / f"{JOURNAL_NAME}.1") == [{"first": "x" * 120}]


def test_a_disk_that_does_not_answer_never_blocks_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appending is queueing: with the writer stuck in write(2), callers go on at once, the
    queue stays bounded (the excess is counted as lost), and the journal says so later."""
    state = state_dir(tmp_path)
    gate = threading.Event()
    real_write = os.write

    def stuck_write(fd: int, data: bytes | memoryview) -> int:
        gate.wait(30)
        return real_write(fd, data)

    monkeypatch.setattr(audit_journal, "_write_fd", stuck_write)
    journal = AuditJournal(state)
    journal.append({"n": -1})
    time.sleep(0.1)  # the writer took that line and is stuck writing it
    started = time.monotonic()
    for number in range(MAX_QUEUED + 100):
        journal.append({"n": number})
    assert time.monotonic() - started < 2.0
    assert journal.lost == 100
    gate.set()
    assert journal.flush(10)
    journal.close()
    lines = entries(state / JOURNAL_NAME)
    assert lines[0] == {"n": -1}
    assert lines[1] == {"count": 100, "event": "lines lost"}
    assert [line["n"] for line in lines[2:]] == list(range(MAX_QUEUED))
