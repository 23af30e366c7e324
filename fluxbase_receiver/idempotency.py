"""Idempotency: each event is handled once, however often it is delivered.

A key is *claimed* before handlers run. The claim answers one of three states:
``NEW`` (run the handlers), ``IN_PROGRESS`` (someone else is handling it: answer 409
so the sender retries later) or ``DONE`` (answer 200, run nothing). Handlers that
succeed *complete* the key; handlers that fail *release* it so a retry runs again.
An in-progress claim expires after ``processing_ttl`` (a crashed worker does not
block the event forever); a completed key is remembered for ``done_ttl``.
"""

from __future__ import annotations

import enum
import hashlib
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic_core import to_json

__all__ = [
    "AsyncIdempotencyStore",
    "ClaimState",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "SQLiteIdempotencyStore",
    "default_idempotency_key",
]


class ClaimState(enum.Enum):
    """What :meth:`IdempotencyStore.claim` found."""

    NEW = "new"
    IN_PROGRESS = "in_progress"
    DONE = "done"


@runtime_checkable
class IdempotencyStore(Protocol):
    """A blocking store of claimed and completed event keys."""

    def claim(self, key: str, ttl: float) -> ClaimState:
        """Claim ``key`` for ``ttl`` seconds unless it is already claimed or done."""
        ...

    def complete(self, key: str, ttl: float) -> None:
        """Mark ``key`` done; remember that for ``ttl`` seconds."""
        ...

    def release(self, key: str) -> None:
        """Forget a claim so the next delivery of the event runs the handlers again."""
        ...


@runtime_checkable
class AsyncIdempotencyStore(Protocol):
    """The same contract as :class:`IdempotencyStore`, for asyncio clients."""

    async def claim(self, key: str, ttl: float) -> ClaimState:
        """Claim ``key`` for ``ttl`` seconds unless it is already claimed or done."""
        ...

    async def complete(self, key: str, ttl: float) -> None:
        """Mark ``key`` done; remember that for ``ttl`` seconds."""
        ...

    async def release(self, key: str) -> None:
        """Forget a claim so the next delivery of the event runs the handlers again."""
        ...


def default_idempotency_key(event: Any) -> str | None:
    """The event's ``id`` when the body has one, else a SHA-256 of its identity.

    The identity is the compact JSON of ``webhook_id, event, schema, table, record,
    old_record``, object keys in the order the signed body has them (a retry repeats
    the same bytes for the same row). ``timestamp`` is left out: a Fluxbase server
    changes it on every retry.
    TEST events are never deduplicated (``None``): each click on "test" should arrive.
    """
    if event.event == "TEST":
        return None
    if event.id:
        return f"id:{event.id}"
    identity = (
        event.webhook_id,
        event.event,
        event.schema_name,
        event.table,
        event.record,
        event.old_record,
    )
    return "sha256:" + hashlib.sha256(to_json(identity)).hexdigest()


class MemoryIdempotencyStore:
    """In-process store: bounded (oldest entries evicted first), TTL, thread-safe.

    Right for one process. Several processes or hosts need a shared store
    (SQLite on one host; Redis or PostgreSQL across hosts).
    """

    def __init__(
        self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[ClaimState, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def claim(self, key: str, ttl: float) -> ClaimState:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[1] > now:
                return entry[0]
            self._entries[key] = (ClaimState.IN_PROGRESS, now + ttl)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            return ClaimState.NEW

    def complete(self, key: str, ttl: float) -> None:
        with self._lock:
            self._entries[key] = (ClaimState.DONE, self._clock() + ttl)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def release(self, key: str) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is ClaimState.IN_PROGRESS:
                del self._entries[key]


class SQLiteIdempotencyStore:
    """A store in a SQLite file, shared by every process on one host.

    Claims run in ``BEGIN IMMEDIATE`` transactions, so two processes never both see
    ``NEW`` for the same key. Expired rows are pruned as new keys are claimed.
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
                f"CREATE TABLE IF NOT EXISTS {table} ("
                "key TEXT PRIMARY KEY, state TEXT NOT NULL, expires_at REAL NOT NULL)"
            )

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def _transaction(self) -> _Transaction:
        return _Transaction(self._connection())

    def claim(self, key: str, ttl: float) -> ClaimState:
        now = self._clock()
        with self._transaction() as db:
            row = db.execute(
                f"SELECT state, expires_at FROM {self.table} WHERE key = ?", (key,)
            ).fetchone()
            if row is not None and row[1] > now:
                return ClaimState(row[0])
            db.execute(
                f"INSERT OR REPLACE INTO {self.table} (key, state, expires_at) VALUES (?, ?, ?)",
                (key, ClaimState.IN_PROGRESS.value, now + ttl),
            )
            self._claims += 1
            if self._claims % self._PRUNE_EVERY == 0:
                db.execute(f"DELETE FROM {self.table} WHERE expires_at <= ?", (now,))
            return ClaimState.NEW

    def complete(self, key: str, ttl: float) -> None:
        with self._transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO {self.table} (key, state, expires_at) VALUES (?, ?, ?)",
                (key, ClaimState.DONE.value, self._clock() + ttl),
            )

    def release(self, key: str) -> None:
        with self._transaction() as db:
            db.execute(
                f"DELETE FROM {self.table} WHERE key = ? AND state = ?",
                (key, ClaimState.IN_PROGRESS.value),
            )

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
