"""Persistent control-plane state: a small SQLite database in the daemon's state directory.

What must survive a restart: which domain owns which device (so a restart neither releases a
device a guest holds nor hands it out twice), the slot list, per-device permissive and
interrupt-control flags and quirk fields, each seized device's clean config space (restored when
it is released), and for each device a guest holds: its view's virtual state and the PIRQs
mapped for its MSI/MSI-X (without those a restarted daemon could neither answer the guest as
before nor unmap the PIRQs when the guest goes). Every change is its own committed transaction,
so a crash loses at most the change under way.

View and interrupt records are stored as JSON text and read back as untrusted: this module only
bounds their size and the domain number; their content is validated by whoever applies them.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

DB_NAME = "pciback.sqlite3"
SCHEMA_VERSION = 2  # 2 added view_state, irq_state and interrupt_control; 1 is upgraded
MAX_BLOB = 4096
MAX_RECORD = 256 * 1024  # a view of 4 KiB config space exports far less
MAX_DOMID = 32767

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
"""

# A guest's record as read back: (domid, JSON text), both checked for type and size only.
Record = tuple[int, str]


class StateError(RuntimeError):
    pass


class StateStore:
    """Thread-safe access to the database; `path` None keeps it in memory (tests, demo)."""

    def __init__(self, directory: Path | None) -> None:
        if directory is None:
            target = ":memory:"
        else:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            target = str(directory / DB_NAME)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        if directory is not None:
            os.chmod(target, 0o600)  # ownership and saved device state are root's business
        with self._lock:
            self._db.execute(
                "PRAGMA journal_mode=WAL" if directory else "PRAGMA journal_mode=MEMORY"
            )
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif row[0] == "1":  # the new tables were just created; nothing else changed
                self._db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),)
                )
            elif row[0] != str(SCHEMA_VERSION):
                raise StateError(f"state database schema {row[0]}, expected {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

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

    # -- interrupt control (Linux's allow_interrupt_control) ---------------------------------
    def set_interrupt_control(self, address: str, on: bool) -> None:
        self._set_flag("interrupt_control", address, on)

    def interrupt_control(self) -> set[str]:
        return self._flagged("interrupt_control")

    # -- what a guest holds: its view's virtual state, its mapped PIRQs ----------------------
    def save_view(self, address: str, domid: int, data: str) -> None:
        self._save_record("view_state", address, domid, data)

    def views(self) -> dict[str, Record]:
        return self._records("view_state")

    def forget_view(self, address: str) -> None:
        self._run("DELETE FROM view_state WHERE address = ?", (address,))

    def save_interrupts(self, address: str, domid: int, data: str) -> None:
        self._save_record("irq_state", address, domid, data)

    def interrupts(self) -> dict[str, Record]:
        return self._records("irq_state")

    def forget_interrupts(self, address: str) -> None:
        self._run("DELETE FROM irq_state WHERE address = ?", (address,))

    def _save_record(self, table: str, address: str, domid: int, data: str) -> None:
        if len(data) > MAX_RECORD:
            raise StateError(f"{address}: a {table} record of {len(data)} characters")
        self._run(f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?)", (address, domid, data))

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
        self._commit_now(
            "INSERT OR REPLACE INTO attachments VALUES (?, ?, ?)", (address, domid, data)
        )

    def attachments(self) -> dict[str, Record]:
        return self._records("attachments")

    def forget_attachment(self, address: str) -> None:
        self._commit_now("DELETE FROM attachments WHERE address = ?", (address,))

    def _commit_now(self, sql: str, args: tuple[object, ...]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(sql, args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
