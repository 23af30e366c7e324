"""Idempotency stores: claims with an owner and a lease, and remembered completions.

A key is *claimed* before handlers run, by an ``owner`` (a random token the receiver
makes per delivery) for a short ``lease``. The claim answers one of three states:
``NEW`` (this owner holds it: run the handlers), ``IN_PROGRESS`` (another owner holds it:
answer 409 so the sender retries later) or ``DONE`` (answer 200, run nothing).

While the handlers run, the owner *renews* the lease; when they end it *completes* the key
(remembered as done for a ``ttl``) or *releases* it (the next delivery runs again). Renew,
complete and release are compare-and-set on the owner: a claimant that outlived its lease
never touches the claim that replaced it. A claim whose holder died stops being renewed
and lapses when its lease runs out, so the sender's next retry runs the handlers.
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
    "content_key",
]


class ClaimState(enum.Enum):
    """What :meth:`IdempotencyStore.claim` found."""

    NEW = "new"
    IN_PROGRESS = "in_progress"
    DONE = "done"


# The states as module names: reading a member off an Enum class goes through its
# metaclass, a tenth of a microsecond each time on the claim path.
_NEW, _IN_PROGRESS, _DONE = ClaimState.NEW, ClaimState.IN_PROGRESS, ClaimState.DONE


@runtime_checkable
class IdempotencyStore(Protocol):
    """A blocking store of owned claims and completed keys."""

    def claim(self, key: str, owner: str, lease: float) -> ClaimState:
        """Claim ``key`` for ``owner`` for ``lease`` seconds unless it is held or done."""
        ...

    def renew(self, key: str, owner: str, lease: float) -> bool:
        """Extend ``owner``'s live claim to ``lease`` seconds from now; False if it is lost."""
        ...

    def complete(self, key: str, owner: str, ttl: float) -> bool:
        """Mark ``owner``'s live claim done for ``ttl`` seconds; False if it is lost."""
        ...

    def release(self, key: str, owner: str) -> None:
        """Drop ``owner``'s claim so the next delivery runs the handlers again."""
        ...


@runtime_checkable
class AsyncIdempotencyStore(Protocol):
    """The same contract as :class:`IdempotencyStore`, for asyncio clients."""

    async def claim(self, key: str, owner: str, lease: float) -> ClaimState:
        """Claim ``key`` for ``owner`` for ``lease`` seconds unless it is held or done."""
        ...

    async def renew(self, key: str, owner: str, lease: float) -> bool:
        """Extend ``owner``'s live claim to ``lease`` seconds from now; False if it is lost."""
        ...

    async def complete(self, key: str, owner: str, ttl: float) -> bool:
        """Mark ``owner``'s live claim done for ``ttl`` seconds; False if it is lost."""
        ...

    async def release(self, key: str, owner: str) -> None:
        """Drop ``owner``'s claim so the next delivery runs the handlers again."""
        ...


def content_key(event: Any) -> str:
    """A SHA-256 of what the event says changed, for events that carry no id.

    The identity is the compact JSON of ``webhook_id, event, schema, table, record,
    old_record``, object keys in the order the signed body has them. ``timestamp`` is
    left out: a Fluxbase server changes it on every retry. Two real changes with the same
    content (a flag toggled back, a row re-inserted) have the same content key.
    """
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
        # key -> (state, expires at, owner of an in-progress claim)
        self._entries: OrderedDict[str, tuple[ClaimState, float, str | None]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def claim(self, key: str, owner: str, lease: float) -> ClaimState:
        now = self._clock()
        entries = self._entries
        self._lock.acquire()  # not "with": this is the hot path, and "with" costs twice as much
        try:
            entry = entries.get(key)
            if entry is not None:
                if entry[1] > now:
                    return entry[0]
                del entries[key]  # expired: claimed anew, as the newest entry
            entries[key] = (_IN_PROGRESS, now + lease, owner)
            while len(entries) > self.max_entries:
                entries.popitem(last=False)
            return _NEW
        finally:
            self._lock.release()

    def _held(self, key: str, owner: str, now: float) -> bool:
        entry = self._entries.get(key)
        return (
            entry is not None and entry[2] == owner and entry[0] is _IN_PROGRESS and entry[1] > now
        )

    def renew(self, key: str, owner: str, lease: float) -> bool:
        now = self._clock()
        with self._lock:
            if not self._held(key, owner, now):
                return False
            self._entries[key] = (_IN_PROGRESS, now + lease, owner)
            return True

    def complete(self, key: str, owner: str, ttl: float) -> bool:
        now = self._clock()
        self._lock.acquire()
        try:
            if not self._held(key, owner, now):
                return False
            self._entries[key] = (_DONE, now + ttl, None)
            self._entries.move_to_end(key)
            return True
        finally:
            self._lock.release()

    def release(self, key: str, owner: str) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[2] == owner and entry[0] is _IN_PROGRESS:
                del self._entries[key]


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
