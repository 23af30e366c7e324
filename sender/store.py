"""Durable sender state behind one small interface, and its SQLite implementation.

:class:`SenderStore` is everything the sender asks of a database: webhooks, captured
events fanned out into deliveries, leases, attempts and history. A backend keeps
deliveries in the same database as the application's tables so capture can join the
application's transaction (the outbox: rolled back means never sent).

SQLite layout (all tables prefixed ``fluxbase_``): ``webhooks``, ``subscriptions``
(one row per webhook, schema pattern, table pattern and operation; ``*`` is the
wildcard), ``events`` (captured changes), ``deliveries`` (one per event and matching
webhook, with the lease columns) and ``attempts`` (every HTTP attempt).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from fluxbase_receiver.sender.capture import CapturedEvent, wire_body
from fluxbase_receiver.sender.delivery import MAX_STORED_BODY, AttemptResult
from fluxbase_receiver.sender.models import (
    AttemptOutcome,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Webhook,
    WebhookSpec,
)

__all__ = [
    "AttemptRecord",
    "ClaimedDelivery",
    "SQLiteStore",
    "SenderStore",
]


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A leased delivery with everything needed to send it."""

    delivery_id: str
    attempt: int
    """This attempt's number, from 1 (counted when the lease was taken)."""
    in_progress_answers: int
    """Earlier attempts answered 409: they do not count against ``max_attempts``."""
    max_attempts: int
    created_at: float
    event: CapturedEvent
    webhook_id: str
    url: str
    secret: str
    headers: dict[str, str]
    timeout_seconds: float
    retry_backoff_seconds: float
    failing_since: float | None

    def __repr__(self) -> str:
        return f"<ClaimedDelivery {self.delivery_id} attempt={self.attempt} to {self.webhook_id}>"


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """The result of one attempt and what follows from it."""

    delivery_id: str
    owner: str
    attempt: int
    result: AttemptResult
    started_at: float
    status: DeliveryStatus
    next_attempt_at: float | None
    failing_since: float | None
    """The webhook's new ``failing_since`` (``None`` after a success)."""
    disable_reason: str | None = None
    counted: bool = True
    """``False`` for a 409 retried without using up one of ``max_attempts``."""


class SenderStore(Protocol):
    """What the sender needs from a database. Times are unix seconds."""

    def create_webhook(self, spec: WebhookSpec, now: float) -> Webhook:
        """Store a new webhook and its subscriptions."""
        ...

    def update_webhook(self, webhook_id: str, spec: WebhookSpec, now: float) -> Webhook | None:
        """Replace a webhook's fields; ``None`` when it does not exist."""
        ...

    def get_webhook(self, webhook_id: str) -> Webhook | None:
        """One webhook, or ``None``."""
        ...

    def list_webhooks(self) -> list[Webhook]:
        """Every webhook, oldest first."""
        ...

    def delete_webhook(self, webhook_id: str) -> bool:
        """Delete a webhook with its delivery history; ``False`` when it did not exist."""
        ...

    def add_event(self, event: CapturedEvent, connection: Any | None = None) -> list[str]:
        """Store an event and fan it out into one delivery per matching enabled webhook.

        With ``connection`` the rows are written in the caller's open transaction.
        Returns the new delivery ids.
        """
        ...

    def add_test_delivery(
        self, event: CapturedEvent, webhook_id: str, owner: str, now: float, lease_grace: float
    ) -> ClaimedDelivery | None:
        """Store a one-attempt delivery of ``event`` to a webhook, already leased to ``owner``.

        The webhook gets it whether or not it matches or is enabled (test sends); no
        worker can take it while the lease holds. ``None`` when the webhook does not exist.
        """
        ...

    def claim(
        self, owner: str, now: float, due_before: float, limit: int, lease_grace: float
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` due deliveries to ``owner``, counting an attempt for each.

        Each lease lasts the webhook's timeout plus ``lease_grace``. An expired lease
        is taken over: its attempt was lost with its worker and is recorded as failed
        ("worker lost"); a delivery with no attempts left then fails instead.
        """
        ...

    def record_attempt(self, record: AttemptRecord) -> AttemptOutcome:
        """Store an attempt and update its delivery and webhook.

        A success is recorded once per delivery: a later one is ``"superseded"``. A
        failure reported after the lease moved on does not change the delivery.
        """
        ...

    def next_due(self) -> float | None:
        """When the earliest pending delivery can be claimed (leases included), or ``None``."""
        ...

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        """One delivery, or ``None``."""
        ...

    def list_deliveries(self, webhook_id: str | None, limit: int, offset: int) -> list[Delivery]:
        """Deliveries newest first, for one webhook or all."""
        ...

    def list_attempts(self, delivery_id: str) -> list[DeliveryAttempt]:
        """Every attempt of a delivery, oldest first."""
        ...

    def redeliver(self, delivery_id: str, now: float) -> str | None:
        """Queue the delivery's event to its webhook again as a new delivery; its id."""
        ...

    def recover(self, since: float, now: float) -> int:
        """Re-queue failed deliveries created at or after ``since``; how many."""
        ...

    def prune(self, before: float) -> int:
        """Delete finished deliveries created before ``before`` with their attempts."""
        ...

    def watch(self, table: str, schema: str) -> None:
        """Install capture triggers on an application table."""
        ...

    def unwatch(self, table: str) -> None:
        """Remove the capture triggers of a table."""
        ...

    def close(self) -> None:
        """Release the database connection."""
        ...


_SCHEMA = """
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
    disabled_reason TEXT,
    scope TEXT NOT NULL DEFAULT 'user'
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
    in_progress_answers INTEGER NOT NULL DEFAULT 0,
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
CREATE INDEX IF NOT EXISTS fluxbase_deliveries_due
    ON fluxbase_deliveries (next_attempt_at) WHERE status IN ('pending', 'retrying');
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
"""

_NEW_ID = "lower(hex(randomblob(16)))"
_NEW_UUID = (
    "lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2)"
    " || '-' || substr('89ab', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2)"
    " || '-' || hex(randomblob(6)))"
)
"""A random (version 4) UUID in its usual text form: delivery ids."""
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"

_FAN_OUT = f"""
INSERT INTO fluxbase_deliveries (id, webhook_id, event_id, status, created_at, next_attempt_at)
SELECT {_NEW_UUID}, w.id, e.id, 'pending', e.occurred_at, e.occurred_at
FROM fluxbase_events AS e JOIN fluxbase_webhooks AS w ON w.enabled = 1
WHERE e.seq = {{seq}} AND EXISTS (
    SELECT 1 FROM fluxbase_subscriptions AS s
    WHERE s.webhook_id = w.id AND s.operation = e.event
      AND s.schema_name IN ('*', e.schema_name) AND s.table_name IN ('*', e.table_name)
)"""
"""Fan-out of one event (by ``seq``) into deliveries: used by emit and by the triggers."""

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
SELECT d.id, d.attempts, d.in_progress_answers, d.max_attempts, d.created_at, d.lease_owner,
    d.lease_expires_at, e.id AS event_id, e.event, e.schema_name, e.table_name, e.record,
    e.old_record, e.occurred_at, w.id AS webhook_id, w.url, w.secret, w.headers,
    w.timeout_seconds, w.retry_backoff_seconds, w.max_retries, w.failing_since
FROM fluxbase_deliveries AS d
JOIN fluxbase_webhooks AS w ON w.id = d.webhook_id
JOIN fluxbase_events AS e ON e.id = d.event_id"""
"""A delivery with everything needed to send it (add a ``WHERE``)."""

_MAX_JSON_ARGS = 60
"""Column pairs per json_object()/json_set() call (SQLite allows 127 arguments)."""


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


def _trigger_name(table: str, operation: str) -> str:
    return _quote(f"fluxbase_capture_{table}_{operation.lower()}")


def _unix(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class SQLiteStore:
    """:class:`SenderStore` on one SQLite file (WAL mode, busy timeout).

    One connection, shared by the threads of a process under a lock; several
    processes may use the same file (leases are taken in ``BEGIN IMMEDIATE``).
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._db = connect(self.path, busy_timeout=busy_timeout)
        with self._lock:
            self._db.executescript(_SCHEMA)
            table = self._db.execute("PRAGMA table_info(fluxbase_webhooks)")
            if "scope" not in {row["name"] for row in table}:
                self._db.execute(
                    "ALTER TABLE fluxbase_webhooks ADD COLUMN scope TEXT NOT NULL DEFAULT 'user'"
                )
            table = self._db.execute("PRAGMA table_info(fluxbase_deliveries)")
            if "in_progress_answers" not in {row["name"] for row in table}:
                self._db.execute(
                    "ALTER TABLE fluxbase_deliveries"
                    " ADD COLUMN in_progress_answers INTEGER NOT NULL DEFAULT 0"
                )

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r}>"

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- webhooks -----------------------------------------------------------------

    def create_webhook(self, spec: WebhookSpec, now: float) -> Webhook:
        webhook_id = str(uuid.uuid4())
        fields = spec.fields()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO fluxbase_webhooks (id, name, description, url, secret, enabled,"
                " events, max_retries, timeout_seconds, retry_backoff_seconds, headers, scope,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (webhook_id, *_webhook_values(fields), now, now),
            )
            _write_subscriptions(db, webhook_id, spec)
        created = self.get_webhook(webhook_id)
        assert created is not None
        return created

    def update_webhook(self, webhook_id: str, spec: WebhookSpec, now: float) -> Webhook | None:
        fields = spec.fields()
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE fluxbase_webhooks SET name = ?, description = ?, url = ?, secret = ?,"
                " enabled = ?, events = ?, max_retries = ?, timeout_seconds = ?,"
                " retry_backoff_seconds = ?, headers = ?, scope = ?, updated_at = ?,"
                " disabled_reason = CASE WHEN ? THEN NULL ELSE disabled_reason END,"
                " failing_since = CASE WHEN ? THEN NULL ELSE failing_since END"
                " WHERE id = ?",
                (*_webhook_values(fields), now, spec.enabled, spec.enabled, webhook_id),
            ).rowcount
            if changed:
                _write_subscriptions(db, webhook_id, spec)
        return self.get_webhook(webhook_id) if changed else None

    def get_webhook(self, webhook_id: str) -> Webhook | None:
        rows = self._query("SELECT * FROM fluxbase_webhooks WHERE id = ?", (webhook_id,))
        return _webhook(rows[0]) if rows else None

    def list_webhooks(self) -> list[Webhook]:
        rows = self._query("SELECT * FROM fluxbase_webhooks ORDER BY created_at, id")
        return [_webhook(row) for row in rows]

    def delete_webhook(self, webhook_id: str) -> bool:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM fluxbase_attempts WHERE delivery_id IN"
                " (SELECT id FROM fluxbase_deliveries WHERE webhook_id = ?)",
                (webhook_id,),
            )
            db.execute("DELETE FROM fluxbase_deliveries WHERE webhook_id = ?", (webhook_id,))
            db.execute("DELETE FROM fluxbase_subscriptions WHERE webhook_id = ?", (webhook_id,))
            deleted = db.execute("DELETE FROM fluxbase_webhooks WHERE id = ?", (webhook_id,))
            _drop_orphan_events(db)
            return deleted.rowcount > 0

    # -- capture ------------------------------------------------------------------

    def add_event(self, event: CapturedEvent, connection: Any | None = None) -> list[str]:
        if connection is not None:
            return _add_event(connection, event)
        with self._transaction() as db:
            return _add_event(db, event)

    def add_test_delivery(
        self, event: CapturedEvent, webhook_id: str, owner: str, now: float, lease_grace: float
    ) -> ClaimedDelivery | None:
        delivery_id = str(uuid.uuid4())
        with self._transaction() as db:
            _insert_event(db, event)
            inserted = db.execute(
                "INSERT INTO fluxbase_deliveries (id, webhook_id, event_id, status, attempts,"
                " max_attempts, created_at, next_attempt_at, lease_owner, lease_expires_at)"
                " SELECT ?, id, ?, 'pending', 1, 1, ?, ?, ?, ? + timeout_seconds + ?"
                " FROM fluxbase_webhooks WHERE id = ?",
                (delivery_id, event.id, now, now, owner, now, lease_grace, webhook_id),
            ).rowcount
            if not inserted:
                db.execute("DELETE FROM fluxbase_events WHERE id = ?", (event.id,))
                return None
            (row,) = db.execute(f"{_CLAIM_SELECT} WHERE d.id = ?", (delivery_id,)).fetchall()
        return _claimed(row, attempt=1)

    def watch(self, table: str, schema: str) -> None:
        columns = [row["name"] for row in self._query(f"PRAGMA table_info({_quote(table)})")]
        if not columns:
            raise ValueError(f"table {table!r} does not exist in {self.path}")
        with self._transaction() as db:
            _drop_triggers(db, table)
            for operation, timing in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
                record = row_json(columns, timing)
                old = row_json(columns, "OLD") if operation != "INSERT" else "NULL"
                db.execute(
                    f"CREATE TRIGGER {_trigger_name(table, operation)}"
                    f" AFTER {operation} ON {_quote(table)} BEGIN"
                    " INSERT INTO fluxbase_events (id, event, schema_name, table_name, record,"
                    f" old_record, occurred_at) VALUES ({_NEW_ID}, '{operation}',"
                    f" {_literal(schema)}, {_literal(table)}, {record}, {old}, {_NOW});"
                    f" {_FAN_OUT.format(seq='last_insert_rowid()')};"
                    f" {_DROP_UNMATCHED};"
                    " END"
                )

    def unwatch(self, table: str) -> None:
        with self._transaction() as db:
            _drop_triggers(db, table)

    # -- delivery -----------------------------------------------------------------

    def claim(
        self, owner: str, now: float, due_before: float, limit: int, lease_grace: float
    ) -> list[ClaimedDelivery]:
        with self._transaction() as db:
            lost = db.execute(
                f"{_CLAIM_SELECT} WHERE d.status IN ('pending', 'retrying')"
                " AND d.lease_owner IS NOT NULL AND d.lease_expires_at <= ?",
                (now,),
            ).fetchall()
            for row in lost:
                _record_lost_attempt(db, row)
            rows = db.execute(
                f"{_CLAIM_SELECT} WHERE d.status IN ('pending', 'retrying')"
                " AND d.next_attempt_at <= ? AND w.enabled = 1 AND d.lease_owner IS NULL"
                " ORDER BY d.next_attempt_at, d.seq LIMIT ?",
                (due_before, limit),
            ).fetchall()
            db.executemany(
                "UPDATE fluxbase_deliveries SET attempts = attempts + 1, lease_owner = ?,"
                " lease_expires_at = ? WHERE id = ?",
                [(owner, now + row["timeout_seconds"] + lease_grace, row["id"]) for row in rows],
            )
        return [_claimed(row, attempt=row["attempts"] + 1) for row in rows]

    def record_attempt(self, record: AttemptRecord) -> AttemptOutcome:
        result = record.result
        body = None if result.body is None else result.body[:MAX_STORED_BODY]
        with self._transaction() as db:
            if result.ok:
                changed = db.execute(
                    "UPDATE fluxbase_deliveries SET status = 'success', attempts = ?,"
                    " response_status = ?, response_body = ?, error = NULL, delivered_at = ?,"
                    " next_attempt_at = NULL, lease_owner = NULL, lease_expires_at = NULL"
                    " WHERE id = ? AND status != 'success'",
                    (record.attempt, result.status, body, record.started_at, record.delivery_id),
                ).rowcount
                outcome: AttemptOutcome = "success" if changed else "superseded"
            else:
                db.execute(
                    "UPDATE fluxbase_deliveries SET status = ?, attempts = ?, response_status = ?,"
                    " response_body = ?, error = ?, next_attempt_at = ?, lease_owner = NULL,"
                    " lease_expires_at = NULL, in_progress_answers = in_progress_answers + ?"
                    " WHERE id = ? AND status != 'success' AND lease_owner = ?",
                    (
                        record.status,
                        record.attempt,
                        result.status,
                        body,
                        result.error,
                        record.next_attempt_at,
                        0 if record.counted else 1,
                        record.delivery_id,
                        record.owner,
                    ),
                )
                outcome = "refused" if result.refused else "failed"
            db.execute(
                "INSERT INTO fluxbase_attempts (delivery_id, attempt, outcome, response_status,"
                " response_body, error, duration_ms, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.delivery_id,
                    record.attempt,
                    outcome,
                    result.status,
                    body,
                    result.error,
                    result.duration_ms,
                    record.started_at,
                ),
            )
            db.execute(
                "UPDATE fluxbase_webhooks SET failing_since = ?,"
                " enabled = CASE WHEN ? IS NULL THEN enabled ELSE 0 END,"
                " disabled_reason = coalesce(?, disabled_reason)"
                " WHERE id = (SELECT webhook_id FROM fluxbase_deliveries WHERE id = ?)",
                (
                    record.failing_since,
                    record.disable_reason,
                    record.disable_reason,
                    record.delivery_id,
                ),
            )
        return outcome

    def next_due(self) -> float | None:
        rows = self._query(
            "SELECT min(max(d.next_attempt_at, coalesce(d.lease_expires_at, 0)))"
            " FROM fluxbase_deliveries AS d JOIN fluxbase_webhooks AS w ON w.id = d.webhook_id"
            " WHERE d.status IN ('pending', 'retrying') AND w.enabled = 1"
        )
        value: float | None = rows[0][0]
        return value

    # -- history ------------------------------------------------------------------

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        rows = self._query(
            f"SELECT {_DELIVERY_COLUMNS} FROM fluxbase_deliveries AS d"
            " JOIN fluxbase_events AS e ON e.id = d.event_id WHERE d.id = ?",
            (delivery_id,),
        )
        return _delivery(rows[0]) if rows else None

    def list_deliveries(self, webhook_id: str | None, limit: int, offset: int) -> list[Delivery]:
        where, params = ("WHERE d.webhook_id = ?", [webhook_id]) if webhook_id else ("", [])
        rows = self._query(
            f"SELECT {_DELIVERY_COLUMNS} FROM fluxbase_deliveries AS d"
            f" JOIN fluxbase_events AS e ON e.id = d.event_id {where}"
            " ORDER BY d.seq DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [_delivery(row) for row in rows]

    def list_attempts(self, delivery_id: str) -> list[DeliveryAttempt]:
        rows = self._query(
            "SELECT * FROM fluxbase_attempts WHERE delivery_id = ? ORDER BY id", (delivery_id,)
        )
        return [
            DeliveryAttempt.model_validate({**dict(row), "started_at": _unix(row["started_at"])})
            for row in rows
        ]

    def redeliver(self, delivery_id: str, now: float) -> str | None:
        new_id = str(uuid.uuid4())
        with self._transaction() as db:
            inserted = db.execute(
                "INSERT INTO fluxbase_deliveries (id, webhook_id, event_id, status, created_at,"
                " next_attempt_at) SELECT ?, webhook_id, event_id, 'pending', ?, ?"
                " FROM fluxbase_deliveries WHERE id = ?",
                (new_id, now, now, delivery_id),
            ).rowcount
        return new_id if inserted else None

    def recover(self, since: float, now: float) -> int:
        with self._transaction() as db:
            return db.execute(
                "UPDATE fluxbase_deliveries SET status = 'pending', attempts = 0,"
                " in_progress_answers = 0, next_attempt_at = ?, lease_owner = NULL,"
                " lease_expires_at = NULL"
                " WHERE status = 'failed' AND created_at >= ?",
                (now, since),
            ).rowcount

    def prune(self, before: float) -> int:
        finished = "status IN ('success', 'failed') AND created_at < ?"
        with self._transaction() as db:
            db.execute(
                "DELETE FROM fluxbase_attempts WHERE delivery_id IN"
                f" (SELECT id FROM fluxbase_deliveries WHERE {finished})",
                (before,),
            )
            pruned = db.execute(f"DELETE FROM fluxbase_deliveries WHERE {finished}", (before,))
            _drop_orphan_events(db)
            return pruned.rowcount


def connect(path: str, *, busy_timeout: float = 10.0) -> sqlite3.Connection:
    """An autocommit SQLite connection in WAL mode with a busy timeout."""
    db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    return db


def _insert_event(db: Any, event: CapturedEvent) -> int:
    seq: int = db.execute(
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
    ).lastrowid
    return seq


def _add_event(db: Any, event: CapturedEvent) -> list[str]:
    seq = _insert_event(db, event)
    db.execute(_FAN_OUT.format(seq="?"), (seq,))
    ids = [
        row[0]
        for row in db.execute(
            "SELECT id FROM fluxbase_deliveries WHERE event_id = ? ORDER BY seq", (event.id,)
        )
    ]
    if not ids:
        db.execute("DELETE FROM fluxbase_events WHERE seq = ?", (seq,))
    return ids


def _record_lost_attempt(db: sqlite3.Connection, row: sqlite3.Row) -> None:
    """Record the attempt of an expired lease as failed; fail the delivery if none are left."""
    lost = (
        f"worker lost: {row['lease_owner']} took the lease for attempt {row['attempts']}"
        " and did not record it before the lease expired"
    )
    db.execute(
        "INSERT INTO fluxbase_attempts (delivery_id, attempt, outcome, error, duration_ms,"
        " started_at) VALUES (?, ?, 'failed', ?, 0, ?)",
        (row["id"], row["attempts"], lost, row["lease_expires_at"]),
    )
    counted: int = row["attempts"] - row["in_progress_answers"]
    exhausted = counted >= _max_attempts(row)
    db.execute(
        "UPDATE fluxbase_deliveries SET error = ?, response_status = NULL, response_body = NULL,"
        " status = CASE WHEN ? THEN 'failed' ELSE status END,"
        " next_attempt_at = CASE WHEN ? THEN NULL ELSE next_attempt_at END,"
        " lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
        (lost, exhausted, exhausted, row["id"]),
    )


def _drop_triggers(db: sqlite3.Connection, table: str) -> None:
    for operation in ("INSERT", "UPDATE", "DELETE"):
        db.execute(f"DROP TRIGGER IF EXISTS {_trigger_name(table, operation)}")


def _drop_orphan_events(db: sqlite3.Connection) -> None:
    db.execute(
        "DELETE FROM fluxbase_events WHERE NOT EXISTS"
        " (SELECT 1 FROM fluxbase_deliveries AS d WHERE d.event_id = fluxbase_events.id)"
    )


def _webhook_values(fields: dict[str, Any]) -> tuple[Any, ...]:
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
    data["created_at"] = _unix(data["created_at"])
    data["updated_at"] = _unix(data["updated_at"])
    return Webhook.model_validate(data)


def _delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(
        id=row["id"],
        webhook_id=row["webhook_id"],
        event_id=row["event_id"],
        event=row["event"],
        table=row["table_name"],
        schema_name=row["schema_name"],
        status=row["status"],
        attempts=row["attempts"],
        response_status=row["response_status"],
        response_body=row["response_body"],
        error=row["error"],
        created_at=_unix(row["created_at"]),
        delivered_at=_unix(row["delivered_at"]),
        next_attempt_at=_unix(row["next_attempt_at"]),
        payload=json.loads(wire_body(_captured(row, row["event_id"]), row["webhook_id"])),
    )


def _captured(row: sqlite3.Row, event_id: str) -> CapturedEvent:
    return CapturedEvent(
        id=event_id,
        event=row["event"],
        schema=row["schema_name"],
        table=row["table_name"],
        record=row["record"],
        old_record=row["old_record"],
        occurred_at=row["occurred_at"],
    )


def _max_attempts(row: sqlite3.Row) -> int:
    """A delivery's own limit (test sends: 1), else the webhook's ``max_retries`` + 1."""
    limit: int = row["max_attempts"] or row["max_retries"] + 1
    return limit


def _claimed(row: sqlite3.Row, attempt: int) -> ClaimedDelivery:
    return ClaimedDelivery(
        delivery_id=row["id"],
        attempt=attempt,
        in_progress_answers=row["in_progress_answers"],
        max_attempts=_max_attempts(row),
        created_at=row["created_at"],
        event=_captured(row, row["event_id"]),
        webhook_id=row["webhook_id"],
        url=row["url"],
        secret=row["secret"],
        headers=json.loads(row["headers"]),
        timeout_seconds=row["timeout_seconds"],
        retry_backoff_seconds=row["retry_backoff_seconds"],
        failing_since=row["failing_since"],
    )
