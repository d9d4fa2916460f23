"""Persistent control-plane state: a small SQLite database in the daemon's state directory.

What must survive a restart: which domain owns which device (so a restart neither releases a
device a guest holds nor hands it out twice), the slot list, per-device permissive flags and
quirk fields, and each seized device's clean config space (restored when it is released).
Every change is its own committed transaction, so a crash loses at most the change under way.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

DB_NAME = "pciback.sqlite3"
SCHEMA_VERSION = 1
MAX_BLOB = 4096

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
"""


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
    def set_permissive(self, address: str, on: bool) -> None:
        if on:
            self._run("INSERT OR IGNORE INTO permissive VALUES (?)", (address,))
        else:
            self._run("DELETE FROM permissive WHERE address = ?", (address,))

    def permissive(self) -> set[str]:
        return {str(r[0]) for r in self._run("SELECT address FROM permissive")}

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
