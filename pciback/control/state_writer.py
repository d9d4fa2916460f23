"""The guest tables (saved views, PIRQ records, map intents) in memory, and the one thread that
writes them behind to the database, so that no guest's op waits for the disk.

A change is a row to put or delete, keyed by (table, address), or a snapshot: a function the
writer calls when it gets to the key, returning the row (a view's state, read under its
connection's lock) or None when there is nothing to write. Changes coalesce per key: the
latest wins, so a forgotten row can never be written back by a change queued before it, and
one snapshot is taken per flush however many ops changed the view. Changes that must outlive a
crash of the daemon itself go to the interrupt journal in the same step (see state_journal).

The writer commits what is pending at most `delay` seconds after the first change of a batch,
at once when asked to flush (a clean stop, a device given back), and again later if the commit
failed. It holds no lock while it commits: the lock the op path takes guards only the memory
tables, the pending changes and the journal's write(2). A change is therefore on disk within
`delay` plus the commit under way and its own; a daemon crash loses at most that window of
non-journaled changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from pciback.control.state_journal import Journal, JournalRow

log = logging.getLogger("pciback.state")

FLUSH_DELAY = 0.5

Key = tuple[str, str]  # (table, address)
Row = tuple[int, str]  # (domid, data)
Snapshot = Callable[[], Row | None]
Change = Row | Snapshot | None  # None deletes the row


class StateWriter:
    def __init__(
        self,
        tables: dict[str, dict[str, Row]],
        commit: Callable[[dict[Key, Row | None]], None] | None,
        journal: Journal | None = None,
        delay: float = FLUSH_DELAY,
    ) -> None:
        """`commit` None: nothing is written anywhere (a store kept in memory)."""
        self.tables = tables
        # Replaceable by tests (a commit held on a gate is a disk that does not answer).
        self.commit = commit
        self.delay = delay
        self._journal = journal
        self._cond = threading.Condition()
        self._pending: dict[Key, Change] = {}
        self._first = 0.0  # when the oldest pending change came
        self._seq = 0  # changes made
        self._urgent = False  # someone waits in `flush`: commit now
        self._attempts = 0  # commit attempts finished
        self._attempted = 0  # changes the last finished attempt covered
        self._durable = 0  # changes committed
        self._stopping = False
        self._dead = False
        self._finished = False  # the thread has left
        self._thread: threading.Thread | None = None
        if commit is not None:
            self._thread = threading.Thread(
                target=self._run, name="pciback-state-writer", daemon=True
            )
            self._thread.start()

    # -- what the store calls ----------------------------------------------------------------
    def change(
        self, changes: Iterable[tuple[Key, Change]], journal: Sequence[JournalRow] = ()
    ) -> None:
        """Apply changes to the memory tables and queue them; `journal` rows are appended to
        the interrupt journal first (OSError when that fails, and then nothing changed)."""
        with self._cond:
            if self._stopping:
                return  # a thread of a stopped daemon: nothing of it may land any more
            if journal and self._journal is not None:
                self._journal.append(journal)
            for (table, address), change in changes:
                if change is None:
                    self.tables[table].pop(address, None)
                elif not callable(change):
                    self.tables[table][address] = change
                if self._thread is None:
                    continue
                if not self._pending:
                    self._first = time.monotonic()
                self._pending[(table, address)] = change
                self._seq += 1
            self._cond.notify_all()

    def rows(self, table: str) -> dict[str, Row]:
        with self._cond:
            return dict(self.tables[table])

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything changed so far now; True once it is on disk. False when the commit
        failed, the writer is stopped, or `timeout` passed first."""
        with self._cond:
            target, attempts = self._seq, self._attempts
            if self._thread is None:
                return True

            def answered() -> bool:
                tried = self._attempts > attempts and self._attempted >= target
                return self._durable >= target or tried or self._finished

            if not answered():
                self._urgent = True
                self._cond.notify_all()
                self._cond.wait_for(answered, timeout)
            return self._durable >= target

    def close(self) -> bool:
        """Write what is pending and stop; True when everything reached the disk."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            return self._durable >= self._seq

    @property
    def abandoned(self) -> bool:
        return self._dead

    def abandon(self) -> None:
        """Stop without writing anything more: what a killed daemon leaves behind (a commit
        already under way still ends)."""
        with self._cond:
            self._stopping = self._dead = True
            self._cond.notify_all()

    # -- the thread --------------------------------------------------------------------------
    def _next_batch(self) -> tuple[dict[Key, Change], int, int | None] | None:
        """Wait until a batch is due and take it (None: stop)."""
        with self._cond:
            while True:
                if self._dead:
                    return None
                if self._pending:
                    due = self._first + self.delay - time.monotonic()
                    if self._stopping or self._urgent or due <= 0:
                        break
                    self._cond.wait(due)
                elif self._stopping:
                    return None
                else:
                    self._cond.wait()
            batch, self._pending = self._pending, {}
            self._urgent = False
            # Under the lock: every line of the generation left behind is in this batch.
            generation = self._journal.rotate() if self._journal is not None else None
            return batch, self._seq, generation

    def _run(self) -> None:
        try:
            self._write_batches()
        finally:
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def _write_batches(self) -> None:
        while (taken := self._next_batch()) is not None:
            batch, seq, generation = taken
            rows: dict[Key, Row | None] = {}
            snapshots: dict[Key, Row] = {}
            for key, change in sorted(batch.items(), key=lambda item: item[0]):
                if not callable(change):
                    rows[key] = change
                    continue
                try:
                    row = change()
                except Exception:  # one view's failure must not cost the others theirs
                    log.exception("%s: taking the snapshot to save failed", key[1])
                    continue
                if row is not None:
                    rows[key] = snapshots[key] = row
            committed = True
            if rows:
                try:
                    assert self.commit is not None
                    self.commit(rows)
                except Exception:
                    log.exception("writing %d saved state row(s) failed; kept to retry", len(rows))
                    committed = False
            self._finish(seq, rows, snapshots, committed)
            if committed and generation is not None and self._journal is not None:
                self._journal.remove_through(generation)

    def _finish(
        self, seq: int, rows: dict[Key, Row | None], snapshots: dict[Key, Row], committed: bool
    ) -> None:
        with self._cond:
            for (table, address), row in snapshots.items():
                newer = self._pending.get((table, address))
                if newer is None and (table, address) in self._pending:
                    continue  # deleted since: the delete is what memory holds
                if newer is None or callable(newer):
                    self.tables[table][address] = row
            if committed:
                self._durable = seq
            elif self._stopping:
                log.error("%d saved state row(s) lost: the daemon stops", len(rows))
            else:
                for key, change in rows.items():
                    self._pending.setdefault(key, change)  # a newer change wins
                if self._pending:
                    self._first = time.monotonic()  # retried after `delay`
            self._attempts += 1
            self._attempted = seq
            self._cond.notify_all()
