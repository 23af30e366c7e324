"""The sender's embedded store: one SQLite file, next to the application's tables.

The store's calls run on a thread of its own with its own connection (WAL mode, a busy
timeout), so the event loop never waits on the file. Several processes may share the
file: every write takes the write lock first (``BEGIN IMMEDIATE``). Wake-ups are in
process (:meth:`SQLiteStore.wake`, called by every capture through the store) with
polling for changes captured by triggers or by other processes.

Tables (all prefixed ``fluxbase_``): ``webhooks``, ``subscriptions`` (one row per
webhook, schema pattern, table pattern and operation; ``*`` is the wildcard),
``events``, ``deliveries`` and ``attempts``. ``PRAGMA user_version`` numbers the
schema; :data:`MIGRATIONS` bring older files up to date when the store opens.

Every per-delivery statement goes through an index: a leased delivery's
``next_attempt_at`` is its lease's expiry, and deliveries waiting behind an earlier
change of their row (``blocked``) or belonging to a disabled webhook (``paused``) are
outside the due index.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from fluxbase_receiver.sender.backend import (
    AttemptRecord,
    ClaimedDelivery,
    Ordering,
    claimed_from_row,
    delivery_from_row,
    max_attempts,
    unix_datetime,
    webhook_changes,
)
from fluxbase_receiver.sender.capture import CapturedEvent, check_identifier
from fluxbase_receiver.sender.delivery import MAX_STORED_BODY
from fluxbase_receiver.sender.models import (
    AttemptOutcome,
    Delivery,
    DeliveryAttempt,
    Webhook,
    WebhookSpec,
)

__all__ = ["MIGRATIONS", "SQLiteStore", "connect"]

T = TypeVar("T")

_UNFINISHED = "status IN ('pending', 'retrying')"
_DUE = f"{_UNFINISHED} AND blocked = 0 AND paused = 0"
"""The due index's condition, written the same way wherever it should be used."""

MIGRATIONS: tuple[str, ...] = (
    """
CREATE TABLE IF NOT EXISTS fluxbase_webhooks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    events TEXT NOT NULL,
    max_retries INTEGER NOT NULL,
    timeout_seconds REAL NOT NULL,
    retry_backoff_seconds REAL NOT NULL,
    headers TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    failing_since REAL,
    disabled_reason TEXT
);
CREATE TABLE IF NOT EXISTS fluxbase_subscriptions (
    webhook_id TEXT NOT NULL,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    operation TEXT NOT NULL,
    PRIMARY KEY (webhook_id, schema_name, table_name, operation)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fluxbase_events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    record TEXT,
    old_record TEXT,
    occurred_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fluxbase_deliveries (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    webhook_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER,
    response_status INTEGER,
    response_body TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    delivered_at REAL,
    next_attempt_at REAL,
    lease_owner TEXT,
    lease_expires_at REAL
);
CREATE INDEX IF NOT EXISTS fluxbase_deliveries_webhook ON fluxbase_deliveries (webhook_id, seq);
CREATE INDEX IF NOT EXISTS fluxbase_deliveries_event ON fluxbase_deliveries (event_id);
CREATE TABLE IF NOT EXISTS fluxbase_attempts (
    id INTEGER PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    response_status INTEGER,
    response_body TEXT,
    error TEXT,
    duration_ms REAL NOT NULL,
    started_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS fluxbase_attempts_delivery ON fluxbase_attempts (delivery_id);
""",
    """
ALTER TABLE fluxbase_webhooks ADD COLUMN scope TEXT NOT NULL DEFAULT 'user';
""",
    """
ALTER TABLE fluxbase_deliveries ADD COLUMN in_progress_answers INTEGER NOT NULL DEFAULT 0;
""",
    f"""
ALTER TABLE fluxbase_deliveries ADD COLUMN row_key TEXT;
ALTER TABLE fluxbase_deliveries ADD COLUMN blocked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE fluxbase_deliveries ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
DROP INDEX IF EXISTS fluxbase_deliveries_due;
UPDATE fluxbase_deliveries SET next_attempt_at = lease_expires_at, lease_expires_at = NULL
    WHERE lease_owner IS NOT NULL AND {_UNFINISHED};
UPDATE fluxbase_deliveries SET paused = 1 WHERE {_UNFINISHED}
    AND webhook_id IN (SELECT id FROM fluxbase_webhooks WHERE enabled = 0);
CREATE INDEX fluxbase_deliveries_due ON fluxbase_deliveries (next_attempt_at) WHERE {_DUE};
CREATE INDEX fluxbase_deliveries_row ON fluxbase_deliveries (webhook_id, row_key, seq)
    WHERE {_UNFINISHED} AND row_key IS NOT NULL;
CREATE INDEX fluxbase_deliveries_failed ON fluxbase_deliveries (created_at)
    WHERE status = 'failed';
""",
)
"""Schema versions (``PRAGMA user_version``), oldest first; a file made before versions
were numbered has the first three already, in part or whole."""

_NEW_UUID = (
    "lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2)"
    " || '-' || substr('89ab', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2)"
    " || '-' || hex(randomblob(6)))"
)
"""A random (version 4) UUID in its usual text form: delivery ids."""
_NEW_ID = "lower(hex(randomblob(16)))"
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"


def _fan_out(seq: str, row_key: str) -> str:
    """SQL fanning out the event with ``seq`` (alias ``e``) into deliveries ordered by
    ``row_key`` (an SQL expression, ``NULL`` for no order)."""
    return f"""
INSERT INTO fluxbase_deliveries
    (id, webhook_id, event_id, row_key, blocked, status, created_at, next_attempt_at)
SELECT {_NEW_UUID}, w.id, e.id, {row_key},
    {row_key} IS NOT NULL AND EXISTS (
        SELECT 1 FROM fluxbase_deliveries AS p
        WHERE p.webhook_id = w.id AND p.row_key = {row_key} AND p.{_UNFINISHED}),
    'pending', e.occurred_at, e.occurred_at
FROM fluxbase_events AS e JOIN fluxbase_webhooks AS w ON w.enabled = 1
WHERE e.seq = {seq} AND EXISTS (
    SELECT 1 FROM fluxbase_subscriptions AS s
    WHERE s.webhook_id = w.id AND s.operation = e.event
      AND s.schema_name IN ('*', e.schema_name) AND s.table_name IN ('*', e.table_name)
)
ORDER BY w.created_at, w.id"""


_EMITTED_KEY = """CASE WHEN json_type(coalesce(e.record, e.old_record), '$.id') IS NULL THEN ''
    ELSE json_array(json_extract(coalesce(e.record, e.old_record), '$.id')) END"""
"""The key values of an emitted change: its record's ``id``, if it has one."""


_DROP_UNMATCHED = """
DELETE FROM fluxbase_events
WHERE seq = (SELECT max(seq) FROM fluxbase_events)
  AND NOT EXISTS (SELECT 1 FROM fluxbase_deliveries AS d WHERE d.event_id = fluxbase_events.id)"""
"""Drop the event just captured when no webhook wanted it (writes are serialised)."""

_DELIVERY_COLUMNS = """
d.id, d.webhook_id, d.event_id, e.event, e.table_name, e.schema_name, d.status, d.attempts,
d.response_status, d.response_body, d.error, d.created_at, d.delivered_at, d.next_attempt_at,
e.record, e.old_record, e.occurred_at"""

_CLAIM_SELECT = """
SELECT d.seq, d.id, d.attempts, d.in_progress_answers, d.max_attempts, d.created_at,
    d.lease_owner, d.next_attempt_at, d.row_key, e.id AS event_id, e.event, e.schema_name,
    e.table_name, e.record, e.old_record, e.occurred_at, w.id AS webhook_id, w.enabled, w.url,
    w.secret, w.headers, w.timeout_seconds, w.retry_backoff_seconds, w.max_retries,
    w.failing_since
FROM fluxbase_deliveries AS d
JOIN fluxbase_webhooks AS w ON w.id = d.webhook_id
JOIN fluxbase_events AS e ON e.id = d.event_id"""
"""A delivery with everything needed to send it (add a ``WHERE``)."""

_HAND_OVER = f"""
UPDATE fluxbase_deliveries SET blocked = 0
WHERE seq = (
    SELECT min(b.seq) FROM fluxbase_deliveries AS b
    WHERE b.webhook_id = :webhook AND b.row_key = :key AND b.{_UNFINISHED} AND b.blocked = 1)
  AND NOT EXISTS (
    SELECT 1 FROM fluxbase_deliveries AS a
    WHERE a.webhook_id = :webhook AND a.row_key = :key AND a.{_UNFINISHED} AND a.blocked = 0)"""
"""A finished delivery lets the next waiting change of its row go."""

_MAX_JSON_ARGS = 60
"""Column pairs per json_object()/json_set() call (SQLite allows 127 arguments)."""


def connect(path: str, *, busy_timeout: float = 10.0) -> sqlite3.Connection:
    """An autocommit SQLite connection in WAL mode with a busy timeout."""
    db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    deadline = time.monotonic() + busy_timeout
    while True:
        try:  # switching a new file to WAL does not wait for the busy timeout by itself
            db.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(0.01)
    db.execute("PRAGMA synchronous = NORMAL")
    return db


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def row_json(columns: Sequence[str], prefix: str) -> str:
    """SQL building a JSON object of a trigger's ``NEW``/``OLD`` row (BLOBs as hex)."""

    def value(column: str) -> str:
        ref = f"{prefix}.{_quote(column)}"
        return f"CASE WHEN typeof({ref}) = 'blob' THEN hex({ref}) ELSE {ref} END"

    chunks = [columns[i : i + _MAX_JSON_ARGS] for i in range(0, len(columns), _MAX_JSON_ARGS)]
    expression = "json_object(" + ", ".join(f"{_literal(c)}, {value(c)}" for c in chunks[0]) + ")"
    for chunk in chunks[1:]:
        pairs = ", ".join(f"{_literal('$.' + _quote(c))}, {value(c)}" for c in chunk)
        expression = f"json_set({expression}, {pairs})"
    return expression


def _row_key(schema: str, table: str, values: str | None) -> str:
    """SQL for an ordering key: the table, then the JSON array of the key's values."""
    prefix = _literal(f"{schema}.{table}")
    return prefix if values is None else f"{prefix} || {values}"


def _trigger_name(table: str, operation: str) -> str:
    return _quote(f"fluxbase_capture_{table}_{operation.lower()}")


class SQLiteStore:
    """:class:`~fluxbase_receiver.sender.backend.SenderStore` on one SQLite file.

    ``watch_interval`` is how often a waiting worker looks for commits made by other
    connections (``PRAGMA data_version``: a read of shared memory, no query).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        ordering: Ordering = "row",
        busy_timeout: float = 10.0,
        watch_interval: float = 0.02,
    ) -> None:
        if ordering not in ("row", "none"):
            raise ValueError("ordering must be 'row' or 'none'")
        self.path = str(path)
        self.ordering: Ordering = ordering
        self.watch_interval = watch_interval
        self._busy_timeout = busy_timeout
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fluxbase-sqlite")
        self._woken: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r}>"

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` with the store's connection on the store's thread."""

        def run() -> T:
            if self._db is None:
                raise RuntimeError("open the store first")
            return work(self._db)

        return await asyncio.get_running_loop().run_in_executor(self._thread, run)

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """:meth:`_call` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``."""

        def transaction(db: sqlite3.Connection) -> T:
            with _immediate(db):
                return work(db)

        return await self._call(transaction)

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self._call(lambda db: db.execute(sql, params).fetchall())

    # -- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._woken = asyncio.Event()

        def migrate() -> sqlite3.Connection:
            db = connect(self.path, busy_timeout=self._busy_timeout)
            with _immediate(db):
                _migrate(db)
            return db

        self._db = await self._loop.run_in_executor(self._thread, migrate)

    async def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._thread, shut)
        self._thread.shutdown(wait=False)

    # -- webhooks -----------------------------------------------------------------

    async def create_webhook(self, spec: WebhookSpec, now: float) -> Webhook:
        webhook_id = str(uuid.uuid4())

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO fluxbase_webhooks (id, name, description, url, secret, enabled,"
                " events, max_retries, timeout_seconds, retry_backoff_seconds, headers, scope,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (webhook_id, *_webhook_values(spec), now, now),
            )
            _write_subscriptions(db, webhook_id, spec)

        await self._write(work)
        created = await self.get_webhook(webhook_id)
        assert created is not None
        return created

    async def update_webhook(
        self, webhook_id: str, spec: WebhookSpec, now: float
    ) -> Webhook | None:
        def work(db: sqlite3.Connection) -> bool:
            changed = db.execute(
                "UPDATE fluxbase_webhooks SET name = ?, description = ?, url = ?, secret = ?,"
                " enabled = ?, events = ?, max_retries = ?, timeout_seconds = ?,"
                " retry_backoff_seconds = ?, headers = ?, scope = ?, updated_at = ?,"
                " disabled_reason = CASE WHEN ? THEN NULL ELSE disabled_reason END,"
                " failing_since = CASE WHEN ? THEN NULL ELSE failing_since END"
                " WHERE id = ?",
                (*_webhook_values(spec), now, spec.enabled, spec.enabled, webhook_id),
            ).rowcount
            if changed:
                _write_subscriptions(db, webhook_id, spec)
                db.execute(
                    "UPDATE fluxbase_deliveries SET paused = ?"
                    f" WHERE webhook_id = ? AND {_UNFINISHED} AND paused = ?",
                    (not spec.enabled, webhook_id, spec.enabled),
                )
            return changed > 0

        changed = await self._write(work)
        if changed and spec.enabled:
            self.wake()
        return await self.get_webhook(webhook_id) if changed else None

    async def get_webhook(self, webhook_id: str) -> Webhook | None:
        rows = await self._query("SELECT * FROM fluxbase_webhooks WHERE id = ?", (webhook_id,))
        return _webhook(rows[0]) if rows else None

    async def list_webhooks(self) -> list[Webhook]:
        rows = await self._query("SELECT * FROM fluxbase_webhooks ORDER BY created_at, id")
        return [_webhook(row) for row in rows]

    async def delete_webhook(self, webhook_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            db.execute(
                "DELETE FROM fluxbase_attempts WHERE delivery_id IN"
                " (SELECT id FROM fluxbase_deliveries WHERE webhook_id = ?)",
                (webhook_id,),
            )
            events = [
                row[0]
                for row in db.execute(
                    "DELETE FROM fluxbase_deliveries WHERE webhook_id = ? RETURNING event_id",
                    (webhook_id,),
                )
            ]
            _drop_orphan_events(db, events)
            db.execute("DELETE FROM fluxbase_subscriptions WHERE webhook_id = ?", (webhook_id,))
            deleted = db.execute("DELETE FROM fluxbase_webhooks WHERE id = ?", (webhook_id,))
            return deleted.rowcount > 0

        return await self._write(work)

    # -- capture ------------------------------------------------------------------

    async def add_event(self, event: CapturedEvent, connection: Any | None = None) -> list[str]:
        """See the protocol; a SQLite connection is synchronous: give it to :meth:`capture`."""
        if connection is not None:
            raise TypeError("give a sqlite3 connection to capture(), not add_event()")
        ordered = self.ordering == "row"
        ids = await self._write(lambda db: _add_event(db, event, ordered))
        if ids:
            self.wake()
        return ids

    def capture(self, event: CapturedEvent, connection: Any) -> list[str]:
        """See the protocol; ``connection`` is a ``sqlite3`` connection to the same file."""
        if not isinstance(connection, sqlite3.Connection):
            raise TypeError("connection must be a sqlite3.Connection")
        ids = _add_event(connection, event, self.ordering == "row")
        if ids:
            self.wake()
        return ids

    async def add_test_delivery(
        self, event: CapturedEvent, webhook_id: str, owner: str, now: float, lease_grace: float
    ) -> ClaimedDelivery | None:
        delivery_id = str(uuid.uuid4())

        def work(db: sqlite3.Connection) -> ClaimedDelivery | None:
            _insert_event(db, event)
            inserted = db.execute(
                "INSERT INTO fluxbase_deliveries (id, webhook_id, event_id, status, attempts,"
                " max_attempts, created_at, next_attempt_at, lease_owner)"
                " SELECT ?, id, ?, 'pending', 1, 1, ?, ? + timeout_seconds + ?, ?"
                " FROM fluxbase_webhooks WHERE id = ?",
                (delivery_id, event.id, now, now, lease_grace, owner, webhook_id),
            ).rowcount
            if not inserted:
                db.execute("DELETE FROM fluxbase_events WHERE id = ?", (event.id,))
                return None
            (row,) = db.execute(f"{_CLAIM_SELECT} WHERE d.id = ?", (delivery_id,)).fetchall()
            return claimed_from_row(
                row, headers=json.loads(row["headers"]), attempt=row["attempts"]
            )

        return await self._write(work)

    async def watch(self, table: str, schema: str) -> None:
        check_identifier("table", table)
        check_identifier("schema", schema)

        def work(db: sqlite3.Connection) -> None:
            info = db.execute(f"PRAGMA table_info({_quote(table)})").fetchall()
            if not info:
                raise ValueError(f"table {table!r} does not exist in {self.path}")
            columns = [row["name"] for row in info]
            keys = [row["name"] for row in sorted(info, key=lambda r: r["pk"]) if row["pk"]]
            _drop_triggers(db, table)
            for operation, timing in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
                record = row_json(columns, timing)
                old = row_json(columns, "OLD") if operation != "INSERT" else "NULL"
                values = (
                    "json_array(" + ", ".join(f"{timing}.{_quote(k)}" for k in keys) + ")"
                    if keys
                    else None
                )
                row_key = _row_key(schema, table, values) if self.ordering == "row" else "NULL"
                db.execute(
                    f"CREATE TRIGGER {_trigger_name(table, operation)}"
                    f" AFTER {operation} ON {_quote(table)} BEGIN"
                    " INSERT INTO fluxbase_events (id, event, schema_name, table_name, record,"
                    f" old_record, occurred_at) VALUES ({_NEW_ID}, '{operation}',"
                    f" {_literal(schema)}, {_literal(table)}, {record}, {old}, {_NOW});"
                    f" {_fan_out('last_insert_rowid()', row_key)};"
                    f" {_DROP_UNMATCHED};"
                    " END"
                )

        await self._write(work)

    async def unwatch(self, table: str, schema: str) -> None:
        """Remove the capture triggers of ``table`` (SQLite has one schema per file)."""
        check_identifier("table", table)
        await self._write(lambda db: _drop_triggers(db, table))

    # -- delivery -----------------------------------------------------------------

    async def claim(
        self, owner: str, now: float, due_before: float, limit: int, lease_grace: float
    ) -> list[ClaimedDelivery]:
        def work(db: sqlite3.Connection) -> list[ClaimedDelivery]:
            rows = db.execute(
                f"{_CLAIM_SELECT} WHERE d.{_UNFINISHED} AND d.blocked = 0 AND d.paused = 0"
                " AND d.next_attempt_at <= ? ORDER BY d.next_attempt_at LIMIT ?",
                (due_before, limit),
            ).fetchall()
            leased: list[sqlite3.Row] = []
            for row in rows:
                if row["lease_owner"] is not None and _settle_lost_attempt(db, row):
                    continue
                if not row["enabled"]:
                    db.execute(
                        "UPDATE fluxbase_deliveries SET paused = 1 WHERE seq = ?", (row["seq"],)
                    )
                    continue
                leased.append(row)
            db.executemany(
                "UPDATE fluxbase_deliveries SET attempts = attempts + 1, lease_owner = ?,"
                " next_attempt_at = ? WHERE seq = ?",
                [(owner, now + r["timeout_seconds"] + lease_grace, r["seq"]) for r in leased],
            )
            return [
                claimed_from_row(
                    row, headers=json.loads(row["headers"]), attempt=row["attempts"] + 1
                )
                for row in leased
            ]

        return await self._write(work)

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> list[AttemptOutcome]:
        if not records:
            return []
        return await self._write(lambda db: _record_attempts(db, records))

    async def next_due(self) -> float | None:
        rows = await self._query(
            f"SELECT min(next_attempt_at) FROM fluxbase_deliveries WHERE {_DUE}"
        )
        due: float | None = rows[0][0]
        return due

    async def backlog(self) -> int:
        rows = await self._query(f"SELECT count(*) FROM fluxbase_deliveries WHERE {_UNFINISHED}")
        count: int = rows[0][0]
        return count

    async def wait_for_work(self, timeout: float) -> None:
        """Return on :meth:`wake`, on a commit to the file by another connection (checked
        every ``watch_interval``), or after ``timeout``."""
        if self._woken is None:
            raise RuntimeError("open the store first")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = await self._call(_data_version)
        while (left := deadline - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), min(left, self.watch_interval))
                break
            if await self._call(_data_version) != seen:
                break
        self._woken.clear()

    def wake(self) -> None:
        if self._loop is not None and self._woken is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._woken.set)

    # -- history ------------------------------------------------------------------

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        rows = await self._query(
            f"SELECT {_DELIVERY_COLUMNS} FROM fluxbase_deliveries AS d"
            " JOIN fluxbase_events AS e ON e.id = d.event_id WHERE d.id = ?",
            (delivery_id,),
        )
        return delivery_from_row(rows[0]) if rows else None

    async def list_deliveries(
        self, webhook_id: str | None, limit: int, offset: int
    ) -> list[Delivery]:
        where, params = ("WHERE d.webhook_id = ?", [webhook_id]) if webhook_id else ("", [])
        rows = await self._query(
            f"SELECT {_DELIVERY_COLUMNS} FROM fluxbase_deliveries AS d"
            f" JOIN fluxbase_events AS e ON e.id = d.event_id {where}"
            " ORDER BY d.seq DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [delivery_from_row(row) for row in rows]

    async def list_attempts(self, delivery_id: str) -> list[DeliveryAttempt]:
        rows = await self._query(
            "SELECT * FROM fluxbase_attempts WHERE delivery_id = ? ORDER BY id", (delivery_id,)
        )
        return [
            DeliveryAttempt.model_validate(
                {**dict(row), "started_at": unix_datetime(row["started_at"])}
            )
            for row in rows
        ]

    async def redeliver(self, delivery_id: str, now: float) -> str | None:
        new_id = str(uuid.uuid4())

        def work(db: sqlite3.Connection) -> int:
            return db.execute(
                "INSERT INTO fluxbase_deliveries (id, webhook_id, event_id, paused, status,"
                " created_at, next_attempt_at)"
                " SELECT ?, d.webhook_id, d.event_id, 1 - w.enabled, 'pending', ?, ?"
                " FROM fluxbase_deliveries AS d JOIN fluxbase_webhooks AS w"
                " ON w.id = d.webhook_id WHERE d.id = ?",
                (new_id, now, now, delivery_id),
            ).rowcount

        if not await self._write(work):
            return None
        self.wake()
        return new_id

    async def recover(self, since: float, now: float) -> int:
        def work(db: sqlite3.Connection) -> int:
            return db.execute(
                "UPDATE fluxbase_deliveries SET status = 'pending', attempts = 0,"
                " in_progress_answers = 0, next_attempt_at = ?, lease_owner = NULL,"
                " blocked = 0, paused = 1 - (SELECT enabled FROM fluxbase_webhooks AS w"
                " WHERE w.id = fluxbase_deliveries.webhook_id)"
                " WHERE status = 'failed' AND created_at >= ?",
                (now, since),
            ).rowcount

        count = await self._write(work)
        if count:
            self.wake()
        return count

    async def prune(self, before: float) -> int:
        def work(db: sqlite3.Connection) -> int:
            finished = "status IN ('success', 'failed') AND created_at < ?"
            db.execute(
                "DELETE FROM fluxbase_attempts WHERE delivery_id IN"
                f" (SELECT id FROM fluxbase_deliveries WHERE {finished})",
                (before,),
            )
            events = [
                row[0]
                for row in db.execute(
                    f"DELETE FROM fluxbase_deliveries WHERE {finished} RETURNING event_id",
                    (before,),
                )
            ]
            _drop_orphan_events(db, events)
            return len(events)

        return await self._write(work)


@contextlib.contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _migrate(db: sqlite3.Connection) -> None:
    """Bring the file to the newest schema (inside the caller's write transaction)."""
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        # Files from before the schema was numbered: the first migrations may be in place.
        for script in MIGRATIONS[:3]:
            for statement in _statements(script):
                with contextlib.suppress(sqlite3.OperationalError):
                    db.execute(statement)
        version = 3
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        for statement in _statements(script):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {number}")
    if version < len(MIGRATIONS):
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")


def _data_version(db: sqlite3.Connection) -> int:
    """Changes whenever another connection commits to the file."""
    version: int = db.execute("PRAGMA data_version").fetchone()[0]
    return version


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


def _insert_event(db: sqlite3.Connection, event: CapturedEvent) -> int:
    cursor = db.execute(
        "INSERT INTO fluxbase_events (id, event, schema_name, table_name, record, old_record,"
        " occurred_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            event.id,
            event.event,
            event.schema,
            event.table,
            event.record,
            event.old_record,
            event.occurred_at,
        ),
    )
    seq: int = cursor.lastrowid or 0
    return seq


def _add_event(db: sqlite3.Connection, event: CapturedEvent, ordered: bool) -> list[str]:
    seq = _insert_event(db, event)
    row_key = _row_key(event.schema, event.table, _EMITTED_KEY) if ordered else "NULL"
    db.execute(_fan_out("?", row_key), (seq,))
    ids = [
        row[0]
        for row in db.execute(
            "SELECT id FROM fluxbase_deliveries WHERE event_id = ? ORDER BY seq", (event.id,)
        )
    ]
    if not ids:
        db.execute("DELETE FROM fluxbase_events WHERE seq = ?", (seq,))
    return ids


def _settle_lost_attempt(db: sqlite3.Connection, row: sqlite3.Row) -> bool:
    """Record an expired lease's attempt as failed; ``True`` when that was the last one."""
    lost = (
        f"worker lost: {row['lease_owner']} took the lease for attempt {row['attempts']}"
        " and did not record it before the lease expired"
    )
    db.execute(
        "INSERT INTO fluxbase_attempts (delivery_id, attempt, outcome, error, duration_ms,"
        " started_at) VALUES (?, ?, 'failed', ?, 0, ?)",
        (row["id"], row["attempts"], lost, row["next_attempt_at"]),
    )
    exhausted: bool = row["attempts"] - row["in_progress_answers"] >= max_attempts(row)
    db.execute(
        "UPDATE fluxbase_deliveries SET error = ?, response_status = NULL, response_body = NULL,"
        " status = CASE WHEN ? THEN 'failed' ELSE status END,"
        " next_attempt_at = CASE WHEN ? THEN NULL ELSE next_attempt_at END,"
        " lease_owner = NULL WHERE seq = ?",
        (lost, exhausted, exhausted, row["seq"]),
    )
    if exhausted and row["row_key"] is not None:
        db.execute(_HAND_OVER, {"webhook": row["webhook_id"], "key": row["row_key"]})
    return exhausted


def _record_attempts(
    db: sqlite3.Connection, records: Sequence[AttemptRecord]
) -> list[AttemptOutcome]:
    outcomes: list[AttemptOutcome] = []
    finished: list[str] = []
    for record in records:
        result = record.result
        body = None if result.body is None else result.body[:MAX_STORED_BODY]
        if result.ok:
            changed = db.execute(
                "UPDATE fluxbase_deliveries SET status = 'success', attempts = max(attempts, ?),"
                " response_status = ?, response_body = ?, error = NULL, delivered_at = ?,"
                " next_attempt_at = NULL, lease_owner = NULL WHERE id = ? AND status != 'success'",
                (record.attempt, result.status, body, record.started_at, record.delivery_id),
            ).rowcount
            outcome: AttemptOutcome = "success" if changed else "superseded"
        else:
            decision = record.decision
            changed = db.execute(
                "UPDATE fluxbase_deliveries SET status = ?, response_status = ?,"
                " response_body = ?, error = ?, next_attempt_at = ?, lease_owner = NULL,"
                " in_progress_answers = in_progress_answers + ?"
                f" WHERE id = ? AND {_UNFINISHED} AND lease_owner = ?",
                (
                    decision.status,
                    result.status,
                    body,
                    result.error,
                    decision.next_attempt_at,
                    0 if decision.counted else 1,
                    record.delivery_id,
                    record.owner,
                ),
            ).rowcount
            outcome = "refused" if result.refused else "failed"
        if changed and record.decision.status in ("success", "failed"):
            finished.append(record.delivery_id)
        outcomes.append(outcome)
    db.executemany(
        "INSERT INTO fluxbase_attempts (delivery_id, attempt, outcome, response_status,"
        " response_body, error, duration_ms, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                r.delivery_id,
                r.attempt,
                outcome,
                r.result.status,
                None if r.result.body is None else r.result.body[:MAX_STORED_BODY],
                r.result.error,
                r.result.duration_ms,
                r.started_at,
            )
            for r, outcome in zip(records, outcomes, strict=True)
        ],
    )
    _update_webhooks(db, records)
    for delivery_id in finished:
        row = db.execute(
            "SELECT webhook_id, row_key FROM fluxbase_deliveries WHERE id = ?", (delivery_id,)
        ).fetchone()
        if row is not None and row["row_key"] is not None:
            db.execute(_HAND_OVER, {"webhook": row["webhook_id"], "key": row["row_key"]})
    return outcomes


def _update_webhooks(db: sqlite3.Connection, records: Sequence[AttemptRecord]) -> None:
    """A batch's effect on its webhooks: the run of failures, and disabling (pausing work)."""
    for webhook_id, reset, failing_since, reason in webhook_changes(records):
        row = db.execute(
            "SELECT enabled, failing_since FROM fluxbase_webhooks WHERE id = ?", (webhook_id,)
        ).fetchone()
        if row is None:
            continue
        current = row["failing_since"]
        if reset:
            new = failing_since
        else:
            known = [t for t in (current, failing_since) if t is not None]
            new = min(known) if known else None
        disable = reason is not None and row["enabled"]
        if new == current and not disable:
            continue
        db.execute(
            "UPDATE fluxbase_webhooks SET failing_since = ?,"
            " enabled = CASE WHEN ? THEN 0 ELSE enabled END,"
            " disabled_reason = coalesce(?, disabled_reason) WHERE id = ?",
            (new, disable, reason, webhook_id),
        )
        if disable:
            db.execute(
                "UPDATE fluxbase_deliveries SET paused = 1"
                f" WHERE webhook_id = ? AND {_UNFINISHED} AND paused = 0",
                (webhook_id,),
            )


def _drop_triggers(db: sqlite3.Connection, table: str) -> None:
    for operation in ("INSERT", "UPDATE", "DELETE"):
        db.execute(f"DROP TRIGGER IF EXISTS {_trigger_name(table, operation)}")


def _drop_orphan_events(db: sqlite3.Connection, event_ids: Sequence[str]) -> None:
    db.executemany(
        "DELETE FROM fluxbase_events WHERE id = ? AND NOT EXISTS"
        " (SELECT 1 FROM fluxbase_deliveries AS d WHERE d.event_id = fluxbase_events.id)",
        [(event_id,) for event_id in set(event_ids)],
    )


def _webhook_values(spec: WebhookSpec) -> tuple[Any, ...]:
    fields = spec.fields()
    return (
        fields["name"],
        fields["description"],
        fields["url"],
        fields["secret"],
        int(fields["enabled"]),
        json.dumps(fields["events"]),
        fields["max_retries"],
        fields["timeout_seconds"],
        fields["retry_backoff_seconds"],
        json.dumps(fields["headers"]),
        fields["scope"],
    )


def _write_subscriptions(db: sqlite3.Connection, webhook_id: str, spec: WebhookSpec) -> None:
    db.execute("DELETE FROM fluxbase_subscriptions WHERE webhook_id = ?", (webhook_id,))
    rows = {
        (webhook_id, *event_filter.patterns, operation)
        for event_filter in spec.events
        for operation in event_filter.expanded_operations()
    }
    db.executemany("INSERT INTO fluxbase_subscriptions VALUES (?, ?, ?, ?)", sorted(rows))


def _webhook(row: sqlite3.Row) -> Webhook:
    data = dict(row)
    data.pop("failing_since")
    data["enabled"] = bool(data["enabled"])
    data["events"] = json.loads(data["events"])
    data["headers"] = json.loads(data["headers"])
    data["created_at"] = unix_datetime(data["created_at"])
    data["updated_at"] = unix_datetime(data["updated_at"])
    return Webhook.model_validate(data)
