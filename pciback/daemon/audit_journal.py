"""The audit journal: every change made through the control socket, one JSON line each, in the
state directory (`audit.jsonl`, then `audit.jsonl.1` ... `.KEEP` as it rotates).

A line is appended by a thread of its own: the request's reply, and whatever lock the daemon
holds while answering it, never wait for the disk. The queue in front of it is bounded; a
journal that cannot keep up (a disk that does not answer) loses lines rather than the daemon's
control, and says how many it lost in the next line it writes.

The files get the state directory's care (pciback.control.state_dir): opened with O_NOFOLLOW
and checked on the descriptor (a regular file of the daemon's user with one link, made 0600), so
a link planted in the journal's place is refused rather than written through. Rotation renames
inside the directory: a rename moves a link itself, never its target.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

from pciback.control.state_dir import StateDirError, open_file

JOURNAL_NAME = "audit.jsonl"
MAX_BYTES = 1 << 20  # per file; with KEEP old ones, the journal's bound on disk
KEEP = 3
MAX_QUEUED = 1024

_write_fd = os.write  # replaceable by tests: a disk that does not answer

log = logging.getLogger("pciback.audit")


class AuditJournal:
    def __init__(self, directory: Path, *, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        """Open (or create) the journal: StateDirError when its file may not be used."""
        self.path = directory / JOURNAL_NAME
        self.max_bytes = max_bytes
        self.keep = max(1, keep)
        self.lost = 0  # lines never written (queue full, or the file unusable)
        self._unreported = 0  # of them, not yet said in the journal itself
        self._fd: int | None = self._open()
        self._size = os.fstat(self._fd).st_size
        self._queue: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._writing = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="pciback-audit", daemon=True)
        self._thread.start()

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        try:
            return open_file(self.path, flags)
        except StateDirError:
            raise
        except OSError as exc:
            raise StateDirError(
                f"{self.path}: cannot open the audit journal: {exc.strerror}"
            ) from None

    def append(self, entry: dict[str, Any]) -> None:
        """Queue one line; never blocks on the disk."""
        line = json.dumps(entry, separators=(",", ":"), sort_keys=True).encode() + b"\n"
        with self._cond:
            if self._closing or len(self._queue) >= MAX_QUEUED:
                self._lose(1)
                return
            self._queue.append(line)
            self._cond.notify_all()

    def _lose(self, count: int) -> None:
        if not self.lost:
            log.error("audit journal %s: lines lost (the disk does not keep up)", self.path)
        self.lost += count
        self._unreported += count

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued line is written (or lost); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._writing, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the thread --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                self._writing = False
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    return
                lines = list(self._queue)
                self._queue.clear()
                self._writing = True
                lost, self._unreported = self._unreported, 0
            if lost:
                note = {"event": "lines lost", "count": lost}
                lines.insert(0, json.dumps(note, separators=(",", ":")).encode() + b"\n")
            for line in lines:
                self._write(line)

    def _write(self, line: bytes) -> None:
        try:
            if self._fd is None:
                self._fd = self._open()
                self._size = os.fstat(self._fd).st_size
            view = memoryview(line)
            while view:
                written = _write_fd(self._fd, view)
                view = view[written:]
                self._size += written
        except (OSError, StateDirError) as exc:
            log.error("audit journal %s: %s", self.path, exc)
            with self._cond:
                self._lose(1)
            self._close_fd()  # opened (and checked) afresh for the next line
            return
        if self._size >= self.max_bytes:
            self._rotate()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _rotate(self) -> None:
        self._close_fd()
        try:
            for number in range(self.keep - 1, 0, -1):
                older = self.path.with_name(f"{JOURNAL_NAME}.{number}")
                with contextlib.suppress(FileNotFoundError):
                    os.replace(older, self.path.with_name(f"{JOURNAL_NAME}.{number + 1}"))
            os.replace(self.path, self.path.with_name(f"{JOURNAL_NAME}.1"))
        except OSError as exc:
            log.error("audit journal %s: cannot rotate: %s", self.path, exc)
        self._size = 0  # the next line opens the file again, new or (rotation failed) old
