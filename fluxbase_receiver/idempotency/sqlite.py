"""The store in a SQLite file, for every process on one host."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fluxbase_receiver.idempotency.base import ClaimState

__all__ = ["SQLiteIdempotencyStore"]


class SQLiteIdempotencyStore:
    """A store in a SQLite file, shared by every process on one host.

    Every statement runs in a ``BEGIN IMMEDIATE`` transaction with a 30 s busy timeout,
    so two processes never both see ``NEW`` for the same key, and any number of processes
    can create the table at once. Expired rows are pruned as new keys are claimed.
    """

    _PRUNE_EVERY = 1000

    def __init__(
        self,
        path: str | Path,
        table: str = "fluxbase_idempotency",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not table.isidentifier():
            raise ValueError("table must be a plain SQL identifier")
        self.path = str(path)
        self.table = table
        self._clock = clock
        self._local = threading.local()
        self._claims = 0
        with self._transaction() as db:
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, "
                "state TEXT NOT NULL, expires_at REAL NOT NULL, owner TEXT)"
            )
            columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            if "owner" not in columns:  # a table made before claims had owners
                db.execute(f"ALTER TABLE {table} ADD COLUMN owner TEXT")

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT, isolation_level=None)
            _use_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def _transaction(self) -> _Transaction:
        return _Transaction(self._connection())

    def claim(self, key: str, owner: str, lease: float) -> ClaimState:
        now = self._clock()
        with self._transaction() as db:
            row = db.execute(
                f"SELECT state, expires_at FROM {self.table} WHERE key = ?", (key,)
            ).fetchone()
            if row is not None and row[1] > now:
                return ClaimState(row[0])
            db.execute(
                f"INSERT OR REPLACE INTO {self.table} (key, state, expires_at, owner) "
                "VALUES (?, 'in_progress', ?, ?)",
                (key, now + lease, owner),
            )
            self._claims += 1
            if self._claims % self._PRUNE_EVERY == 0:
                db.execute(f"DELETE FROM {self.table} WHERE expires_at <= ?", (now,))
            return ClaimState.NEW

    def _update_held(self, key: str, owner: str, state: str, ttl: float) -> bool:
        now = self._clock()
        with self._transaction() as db:
            cursor = db.execute(
                f"UPDATE {self.table} SET state = ?, expires_at = ?, owner = ? WHERE key = ? "
                "AND owner = ? AND state = 'in_progress' AND expires_at > ?",
                (state, now + ttl, owner if state == "in_progress" else None, key, owner, now),
            )
            return cursor.rowcount == 1

    def renew(self, key: str, owner: str, lease: float) -> bool:
        return self._update_held(key, owner, "in_progress", lease)

    def complete(self, key: str, owner: str, ttl: float) -> bool:
        return self._update_held(key, owner, "done", ttl)

    def release(self, key: str, owner: str) -> None:
        with self._transaction() as db:
            db.execute(
                f"DELETE FROM {self.table} WHERE key = ? AND owner = ? AND state = 'in_progress'",
                (key, owner),
            )

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


_BUSY_TIMEOUT = 30.0


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch the file to WAL. The switch answers "busy" at once, without waiting for the
    busy timeout, while another connection switches it too: retry until the timeout."""
    deadline = time.monotonic() + _BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorname != "SQLITE_BUSY" or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
