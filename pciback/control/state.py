"""Persistent state: a small SQLite database in the daemon's state directory.

What must survive a restart: which domain owns which device (so a restart neither releases a
device a guest holds nor hands it out twice), the slot list, per-device permissive and
interrupt-control flags and quirk fields, each seized device's clean config space (restored when
it is released), and for each device a guest holds: its view's virtual state and the PIRQs
mapped for its MSI/MSI-X (without those a restarted daemon could neither answer the guest as
before nor unmap the PIRQs when the guest goes), and the intent of a map under way.

When each is durable, and what a crash can lose:

- The control plane's tables (owners, slots, flags, quirks, saved config space) are written
  synchronously, each change its own committed transaction with fsync (`synchronous=FULL`):
  nothing acknowledged is lost. No guest op writes them; they change with the operator's
  requests and the xenbus handshake.
- PIRQ records and map intents are written on the op path, into the interrupt journal
  (pciback.control.state_journal: one write(2), no fsync) and folded into the database behind it. A
  crash of the daemon loses none of them; an OS crash of dom0 can lose those of the last
  FLUSH_DELAY seconds (plus the disk's time for a commit), but it also ends every guest and
  every PIRQ (Xen reboots the machine), so nothing can leak.
- Saved views are written behind (pciback.control.state_writer), coalesced per device, at most
  FLUSH_DELAY (0.5 s) after a change plus the disk's time for the commit under way and its
  own, and at once on a clean stop and when a device is given back. A crash loses at most the
  view changes of that window: the guest then sees those registers as they were before.

Why a journal and not SQLite with `synchronous=NORMAL` on the op path: in WAL mode such a
commit is a write without fsync, except the first commit after a checkpoint, which syncs the
WAL's new header (measured: 0.03 ms per commit, 200 ms for that one when fsync takes 200 ms);
and the op path would share SQLite's write lock with the writer's fsyncing commits.

Rows are read into memory when the store opens, and read back as untrusted: this module only
bounds their size and the domain number; their content is validated by whoever applies them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
from pathlib import Path

from pciback.control.state_dir import StateDirError, check_directory, check_file, open_file
from pciback.control.state_journal import Journal, JournalRow, journal_files, read_journal
from pciback.control.state_writer import FLUSH_DELAY, Change, Key, Row, Snapshot, StateWriter

DB_NAME = "pciback.sqlite3"
# 2 added view_state, irq_state and interrupt_control; 1 is upgraded. irq_intent came later
# without a new number: a daemon that does not know it only misses its resolution.
SCHEMA_VERSION = 2
MAX_BLOB = 4096
MAX_RECORD = 256 * 1024  # a view of 4 KiB config space exports far less
MAX_DOMID = 32767
# A control-plane commit waits this long for the writer's (and the reverse) before failing.
BUSY_TIMEOUT = 60.0

__all__ = ["FLUSH_DELAY", "Record", "Snapshot", "StateError", "StateStore"]

log = logging.getLogger("pciback.state")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS owners (
    address TEXT PRIMARY KEY, domid INTEGER NOT NULL CHECK (domid BETWEEN 0 AND 32767));
CREATE TABLE IF NOT EXISTS slots (pattern TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS permissive (address TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS quirks (
    address TEXT NOT NULL, offset INTEGER NOT NULL, size INTEGER NOT NULL, mask INTEGER NOT NULL,
    PRIMARY KEY (address, offset));
CREATE TABLE IF NOT EXISTS saved_state (address TEXT PRIMARY KEY, config BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS interrupt_control (address TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS view_state (
    address TEXT PRIMARY KEY, domid INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS irq_state (
    address TEXT PRIMARY KEY, domid INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attachments (
    address TEXT PRIMARY KEY, domid INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS irq_intent (
    address TEXT PRIMARY KEY, domid INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS host_drivers (address TEXT PRIMARY KEY, driver TEXT NOT NULL);
"""

# The tables a guest's activity changes: kept in memory, written behind.
GUEST_TABLES = ("view_state", "irq_state", "irq_intent")

# A guest's record as read back: (domid, JSON text), both checked for type and size only.
Record = tuple[int, str]
# What a Linux driver's name can be, as sysfs shows it under /sys/bus/pci/drivers.
_DRIVER_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,64}")


class StateError(RuntimeError):
    pass


def _connect(target: str) -> sqlite3.Connection:
    db = sqlite3.connect(
        target, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT
    )
    db.execute("PRAGMA synchronous=FULL")
    return db


# What the operator can do about a database that cannot be read.
_WHAT_TO_DO = (
    "restore it from a backup, or move it away to start with no saved state (which forgets "
    "every device's owner and saved config space)"
)


def _create_database(directory: Path, target: Path) -> None:
    """A new database with its schema, put in place by rename: a database file of 0 bytes or
    without a schema version is then never one this daemon was creating, but damage."""
    fresh = directory / (DB_NAME + ".new")
    for stale in (fresh, directory / (DB_NAME + ".new-journal")):
        if check_file(stale):
            stale.unlink()  # a creation a crash interrupted
    try:
        os.close(open_file(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL))
        db = sqlite3.connect(str(fresh), isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(
                f"BEGIN; {_SCHEMA} INSERT INTO meta VALUES ('schema', '{SCHEMA_VERSION}'); COMMIT;"
            )
        finally:
            db.close()
        fd = os.open(fresh, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(fresh, target)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)  # the rename itself is durable
        finally:
            os.close(fd)
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StateError(
            f"{target}: cannot create the state database: {reason}; make {directory} writable "
            "(a read-only file system?), or set persist = false to run without saved state"
        ) from None


def open_database(directory: Path) -> sqlite3.Connection:
    """The state database of a checked directory, created if missing, and validated before
    anything is read from it: no link for it or its companion files, the daemon's own file,
    SQLite's quick_check clean, a schema version this daemon knows. StateError (one line for
    the operator, naming the file and what to do) otherwise: the daemon never acts on a state
    it cannot read whole."""
    target = directory / DB_NAME
    for companion in ("-wal", "-shm", "-journal"):
        check_file(directory / (DB_NAME + companion))
    if not check_file(target):
        _create_database(directory, target)
    try:
        fd = open_file(target, os.O_RDWR)
    except StateDirError:
        raise
    except OSError as exc:
        raise StateError(f"{target}: cannot open the state database: {exc.strerror}") from None
    try:
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size == 0:
        raise StateError(f"{target}: the state database is empty (truncated); {_WHAT_TO_DO}")
    try:
        db = _connect(str(target))
    except sqlite3.Error as exc:
        raise StateError(
            f"{target}: the state database is unreadable ({exc}); {_WHAT_TO_DO}"
        ) from None
    try:
        _validate(db, target)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)  # tables added to schema 2 later, and schema 1's upgrade
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
    except StateError:
        db.close()
        raise
    except sqlite3.OperationalError as exc:
        db.close()
        raise StateError(
            f"{target}: cannot use the state database ({exc}); is its file system read-only "
            "or full?"
        ) from None
    except sqlite3.DatabaseError as exc:
        db.close()
        raise StateError(
            f"{target}: the state database is unreadable ({exc}); {_WHAT_TO_DO}"
        ) from None
    return db


def check_state(directory: Path) -> None:
    """What opening a StateStore on a checked `directory` would refuse, refused now and
    nothing else done (the database is created if missing): the CLI calls it before logging
    starts, so that a refusal is one line."""
    open_database(directory).close()
    journal_files(directory)  # a link or a foreign file among them is refused


def _validate(db: sqlite3.Connection, target: Path) -> None:
    rows = db.execute("PRAGMA quick_check").fetchall()
    if rows != [("ok",)]:
        detail = str(rows[0][0]) if rows else "no answer"
        raise StateError(f"{target}: the state database is corrupt ({detail[:120]}); {_WHAT_TO_DO}")
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.OperationalError:
        row = None  # no meta table
    if row is None:
        raise StateError(
            f"{target}: no schema version, not a pciback state database; {_WHAT_TO_DO}"
        )
    if row[0] not in ("1", str(SCHEMA_VERSION)):  # 1: its tables are added, nothing changes
        raise StateError(
            f"{target}: state database schema {str(row[0])[:16]}, this daemon knows "
            f"{SCHEMA_VERSION}; run the pciback that wrote it, or {_WHAT_TO_DO}"
        )


class StateStore:
    """Thread-safe access to the state; `directory` None keeps it in memory (tests, demo)."""

    def __init__(self, directory: Path | None, *, flush_delay: float = FLUSH_DELAY) -> None:
        self._lock = threading.Lock()  # the control plane's connection; never the op path's
        tables: dict[str, dict[str, Row]]
        self._journal: Journal | None = None
        self._writer_db: sqlite3.Connection | None = None
        if directory is None:
            self._db = _connect(":memory:")
            with self._lock:
                self._db.execute("PRAGMA journal_mode=MEMORY")
                self._db.executescript(_SCHEMA)
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            tables = {table: self._records(table) for table in GUEST_TABLES}
            self.writer = StateWriter(tables, None)
            return
        directory = check_directory(directory)
        target = directory / DB_NAME
        self._db = open_database(directory)
        try:
            tables = {table: self._records(table) for table in GUEST_TABLES}
            self._journal = Journal(directory, self._replay(directory, tables))
            self._writer_db = _connect(str(target))
        except sqlite3.Error as exc:
            self._db.close()
            raise StateError(f"{target}: cannot read the state database ({exc})") from None
        self.writer = StateWriter(tables, self._commit_rows, self._journal, flush_delay)

    def _replay(self, directory: Path, tables: dict[str, dict[str, Row]]) -> int:
        """Fold what a previous daemon journaled and did not fold into the database and the
        memory tables; returns the journal generation to continue with."""
        found = journal_files(directory)
        rows: dict[Key, Row | None] = {}
        for _, path in found:
            for table, address, domid, data in read_journal(path, MAX_RECORD, MAX_DOMID):
                rows[(table, address)] = None if data is None else (domid, data)
        for (table, address), row in rows.items():
            if row is None:
                tables[table].pop(address, None)
            else:
                tables[table][address] = row
        if rows:
            log.info("interrupt journal: %d record(s) of a previous daemon folded", len(rows))
            with self._lock:
                self._write_rows(self._db, rows)
        for _, path in found:
            path.unlink()
        return found[-1][0] + 1 if found else 1

    def _commit_rows(self, rows: dict[Key, Row | None]) -> None:
        """The writer's commit, on its own connection: the control plane's lock is not taken,
        so the control plane never waits for a write-behind either (SQLite's own lock aside)."""
        assert self._writer_db is not None
        self._write_rows(self._writer_db, rows)

    @staticmethod
    def _write_rows(db: sqlite3.Connection, rows: dict[Key, Row | None]) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            for (table, address), row in rows.items():
                assert table in GUEST_TABLES  # names are these constants, never input
                if row is None:
                    db.execute(f"DELETE FROM {table} WHERE address = ?", (address,))
                else:
                    db.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?)", (address, *row))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def flush(self, timeout: float | None = None) -> bool:
        """Put every change made so far on disk now; True when done (see StateWriter.flush)."""
        return self.writer.flush(timeout)

    def close(self) -> None:
        """Write what is pending, then close. The journal goes once its rows are in the
        database; if they could not be written it stays, for the next start to fold."""
        written = self.writer.close()
        if self._journal is not None:
            self._journal.close()
            if written:
                self._journal.remove_through(self._journal.generation)
        self._close_connections()

    def abandon(self) -> None:
        """Stop as a killed daemon would: nothing pending is written, the journal stays. The
        writer's connection is left to the garbage collector: a commit may still be under
        way on it."""
        self.writer.abandon()
        if self._journal is not None:
            with contextlib.suppress(OSError):
                self._journal.close()
        with self._lock:
            self._db.close()

    def _close_connections(self) -> None:
        with self._lock:
            self._db.close()
        if self._writer_db is not None:
            self._writer_db.close()

    def _run(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(sql, args).fetchall()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return rows

    # -- owners ------------------------------------------------------------------------------
    def set_owner(self, address: str, domid: int) -> None:
        self._run("INSERT OR REPLACE INTO owners VALUES (?, ?)", (address, domid))

    def clear_owner(self, address: str) -> None:
        self._run("DELETE FROM owners WHERE address = ?", (address,))

    def owners(self) -> dict[str, int]:
        rows = self._run("SELECT address, domid FROM owners ORDER BY address")
        return {str(a): int(str(d)) for a, d in rows}

    # -- slots -------------------------------------------------------------------------------
    def add_slot(self, pattern: str) -> None:
        self._run(
            "INSERT OR IGNORE INTO slots SELECT ?, COALESCE(MAX(position), 0) + 1 FROM slots",
            (pattern,),
        )

    def remove_slot(self, pattern: str) -> None:
        self._run("DELETE FROM slots WHERE pattern = ?", (pattern,))

    def slots(self) -> list[str]:
        return [str(r[0]) for r in self._run("SELECT pattern FROM slots ORDER BY position")]

    # -- permissive and quirks ---------------------------------------------------------------
    # Per-device flags are tables of addresses; the names are these constants, never input.
    _FLAG_TABLES = frozenset({"permissive", "interrupt_control"})

    def _set_flag(self, table: str, address: str, on: bool) -> None:
        assert table in self._FLAG_TABLES
        if on:
            self._run(f"INSERT OR IGNORE INTO {table} VALUES (?)", (address,))
        else:
            self._run(f"DELETE FROM {table} WHERE address = ?", (address,))

    def _flagged(self, table: str) -> set[str]:
        assert table in self._FLAG_TABLES
        return {str(r[0]) for r in self._run(f"SELECT address FROM {table}")}

    def set_permissive(self, address: str, on: bool) -> None:
        self._set_flag("permissive", address, on)

    def permissive(self) -> set[str]:
        return self._flagged("permissive")

    def add_quirk(self, address: str, offset: int, size: int, mask: int) -> None:
        self._run(
            "INSERT OR REPLACE INTO quirks VALUES (?, ?, ?, ?)", (address, offset, size, mask)
        )

    def clear_quirks(self, address: str) -> None:
        self._run("DELETE FROM quirks WHERE address = ?", (address,))

    def quirks(self) -> list[tuple[str, int, int, int]]:
        rows = self._run("SELECT address, offset, size, mask FROM quirks ORDER BY address, offset")
        return [(str(a), int(str(o)), int(str(s)), int(str(m))) for a, o, s, m in rows]

    # -- saved config space ------------------------------------------------------------------
    def save_config(self, address: str, config: bytes) -> None:
        if len(config) > MAX_BLOB:
            raise StateError(f"{address}: saved config of {len(config)} bytes")
        self._run("INSERT OR REPLACE INTO saved_state VALUES (?, ?)", (address, config))

    def saved_config(self, address: str) -> bytes | None:
        rows = self._run("SELECT config FROM saved_state WHERE address = ?", (address,))
        if not rows:
            return None
        blob = rows[0][0]
        return bytes(blob) if isinstance(blob, bytes | bytearray | memoryview) else None

    def forget_config(self, address: str) -> None:
        self._run("DELETE FROM saved_state WHERE address = ?", (address,))

    def seized(self) -> list[str]:
        """The devices with a saved config space: those the daemon holds in its pool."""
        return [str(r[0]) for r in self._run("SELECT address FROM saved_state ORDER BY address")]

    # -- the driver each seized device was taken from (table added to schema 2 later) --------
    def set_host_driver(self, address: str, driver: str | None) -> None:
        if driver is None:
            self._run("DELETE FROM host_drivers WHERE address = ?", (address,))
        elif _DRIVER_NAME.fullmatch(driver):
            self._run("INSERT OR REPLACE INTO host_drivers VALUES (?, ?)", (address, driver))
        else:
            raise StateError(f"{address}: host driver name {driver[:64]!r} refused")

    def host_driver(self, address: str) -> str | None:
        """The driver `address` was taken from; None when it had none, or none is on record
        that a driver could be bound by (a row read back is untrusted: it names what the
        daemon will bind)."""
        rows = self._run("SELECT driver FROM host_drivers WHERE address = ?", (address,))
        driver = rows[0][0] if rows else None
        if isinstance(driver, str) and _DRIVER_NAME.fullmatch(driver):
            return driver
        if driver is not None:
            log.error("state database: unusable host driver for %.64r; dropped", address)
            self._run("DELETE FROM host_drivers WHERE address = ?", (address,))
        return None

    # -- interrupt control (Linux's allow_interrupt_control) ---------------------------------
    def set_interrupt_control(self, address: str, on: bool) -> None:
        self._set_flag("interrupt_control", address, on)

    def interrupt_control(self) -> set[str]:
        return self._flagged("interrupt_control")

    # -- what a guest holds: its view's virtual state, its mapped PIRQs ----------------------
    # Read from memory; written behind (views) or journaled first (interrupts), never waiting
    # for the disk: these are called on the op path.
    def save_view(self, address: str, domid: int, data: str) -> None:
        self._change("view_state", address, (domid, self._checked(address, data)))

    def save_view_later(self, address: str, snapshot: Snapshot) -> None:
        """The view changed: the writer calls `snapshot` when it gets to it (the latest
        change queued for the address wins; None from it writes nothing)."""

        def checked() -> Row | None:
            row = snapshot()
            return None if row is None else (row[0], self._checked(address, row[1]))

        self.writer.change([(("view_state", address), checked)])

    def views(self) -> dict[str, Record]:
        return self.writer.rows("view_state")

    def forget_view(self, address: str) -> None:
        self._change("view_state", address, None)

    def save_interrupts(self, address: str, domid: int, data: str) -> None:
        """PIRQs mapped: on record when this returns (the journal), the intent settled."""
        self._journal_interrupts(address, domid, (domid, self._checked(address, data)), None)

    def interrupts(self) -> dict[str, Record]:
        return self.writer.rows("irq_state")

    def forget_interrupts(self, address: str, domid: int = 0) -> None:
        self._journal_interrupts(address, domid, None, None)

    def intend_interrupts(self, address: str, domid: int, data: str) -> None:
        """A map hypercall is about to be made: on record when this returns (the journal),
        so that a crash before its PIRQs are recorded leaves this to resolve."""
        row = (domid, self._checked(address, data))
        self.writer.change(
            [(("irq_intent", address), row)], [("irq_intent", address, domid, row[1])]
        )

    def intents(self) -> dict[str, Record]:
        return self.writer.rows("irq_intent")

    def forget_intent(self, address: str, domid: int = 0) -> None:
        self.writer.change(
            [(("irq_intent", address), None)], [("irq_intent", address, domid, None)]
        )

    def _journal_interrupts(
        self, address: str, domid: int, row: Row | None, intent: Row | None
    ) -> None:
        changes: list[tuple[Key, Change]] = [
            (("irq_state", address), row),
            (("irq_intent", address), intent),
        ]
        journal: list[JournalRow] = [
            ("irq_state", address, domid, None if row is None else row[1]),
            ("irq_intent", address, domid, None if intent is None else intent[1]),
        ]
        self.writer.change(changes, journal)

    def _change(self, table: str, address: str, row: Row | None) -> None:
        self.writer.change([((table, address), row)])

    @staticmethod
    def _checked(address: str, data: str) -> str:
        if len(data) > MAX_RECORD:
            raise StateError(f"{address}: a record of {len(data)} characters")
        return data

    def _records(self, table: str) -> dict[str, Record]:
        """Rows of the right types and sizes; others are logged and dropped from the table
        (nothing can be made of them, and they would be reported again at every start)."""
        records: dict[str, Record] = {}
        for address, domid, data in self._run(f"SELECT address, domid, data FROM {table}"):
            if (
                isinstance(address, str)
                and len(address) <= 64
                and isinstance(domid, int)
                and 0 <= domid <= MAX_DOMID
                and isinstance(data, str)
                and len(data) <= MAX_RECORD
            ):
                records[address] = (domid, data)
                continue
            log.error("state database: unusable %s row for %.64r; dropped", table, address)
            self._run(f"DELETE FROM {table} WHERE address IS ?", (address,))
        return records

    # -- the toolstack role's attachments ------------------------------------------------------
    # An attachment is recorded before anything is granted to the guest and forgotten after
    # everything is revoked, so a daemon that dies in between finds what to finish or undo.
    # These writes are committed before they return whatever the rest of the state does: the
    # grant that follows must never be ahead of its record. (A table added to schema 2 without
    # a version change: an older daemon ignores it.)
    def save_attachment(self, address: str, domid: int, data: str) -> None:
        if len(data) > MAX_RECORD:
            raise StateError(f"{address}: an attachment record of {len(data)} characters")
        self._run("INSERT OR REPLACE INTO attachments VALUES (?, ?, ?)", (address, domid, data))

    def attachments(self) -> dict[str, Record]:
        return self._records("attachments")

    def forget_attachment(self, address: str) -> None:
        self._run("DELETE FROM attachments WHERE address = ?", (address,))
