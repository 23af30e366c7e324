"""The asynchronous store interface every sender database implements, and its factory.

A store keeps webhooks, captured events fanned out into deliveries, leases, attempts
and history. Everything that does I/O is a coroutine, so a round trip to a network
database never stalls the other sends of a worker. :meth:`SenderStore.wait_for_work`
is the wake-up hook: it returns when work may have arrived (PostgreSQL: ``LISTEN`` /
``NOTIFY``) or when its timeout, the polling fallback, runs out.

Ordering: with ``ordering="row"`` (the default) the deliveries of one webhook for one
row (table + primary key; the whole table where there is no key) are sent one at a
time in capture order. ``ordering="none"`` sends every delivery as soon as it is due.
The choice is made when a change is captured (``watch`` records it in the trigger).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeAlias

from fluxbase_receiver.sender.capture import CapturedEvent, wire_body
from fluxbase_receiver.sender.delivery import AttemptResult
from fluxbase_receiver.sender.models import (
    AttemptOutcome,
    Delivery,
    DeliveryAttempt,
    Webhook,
    WebhookSpec,
)
from fluxbase_receiver.sender.policy import Decision

__all__ = [
    "AttemptRecord",
    "ClaimedDelivery",
    "Ordering",
    "SenderStore",
    "open_store",
    "sqlite_path",
    "webhook_changes",
]

Ordering: TypeAlias = Literal["row", "none"]


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A leased delivery with everything needed to send it and decide what follows."""

    delivery_id: str
    attempt: int
    in_progress_answers: int
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
    """One attempt's result and the policy's decision, for the store to record."""

    delivery_id: str
    webhook_id: str
    owner: str
    attempt: int
    result: AttemptResult
    started_at: float
    decision: Decision


class SenderStore(Protocol):
    """What the sender needs from a database. Times are unix seconds."""

    ordering: Ordering

    async def open(self) -> None:
        """Connect and bring the store's tables up to date (safe in parallel processes)."""
        ...

    async def close(self) -> None:
        """Release every connection."""
        ...

    async def create_webhook(self, spec: WebhookSpec, now: float) -> Webhook:
        """Store a new webhook and its subscriptions."""
        ...

    async def update_webhook(
        self, webhook_id: str, spec: WebhookSpec, now: float
    ) -> Webhook | None:
        """Replace a webhook's fields; ``None`` when it does not exist.

        Enabling a webhook clears its failure state and resumes its paused deliveries;
        disabling it pauses them.
        """
        ...

    async def get_webhook(self, webhook_id: str) -> Webhook | None:
        """One webhook, or ``None``."""
        ...

    async def list_webhooks(self) -> list[Webhook]:
        """Every webhook, oldest first."""
        ...

    async def delete_webhook(self, webhook_id: str) -> bool:
        """Delete a webhook with its delivery history; ``False`` when it did not exist."""
        ...

    async def add_event(self, event: CapturedEvent, connection: Any | None = None) -> list[str]:
        """Store an event and fan it out into one delivery per matching enabled webhook.

        With ``connection`` (the application's own asynchronous connection to the same
        database, where the driver has one) the rows are written in its open
        transaction: rolled back, nothing is sent. Returns the new delivery ids.
        """
        ...

    def capture(self, event: CapturedEvent, connection: Any) -> list[str]:
        """:meth:`add_event` in the open transaction of the application's own synchronous
        connection (``sqlite3`` / psycopg), in the calling thread (the outbox)."""
        ...

    async def add_test_delivery(
        self, event: CapturedEvent, webhook_id: str, owner: str, now: float, lease_grace: float
    ) -> ClaimedDelivery | None:
        """Store a one-attempt delivery of ``event`` to a webhook, already leased to ``owner``.

        The webhook gets it whether or not it matches or is enabled (test sends); it is
        never ordered. ``None`` when the webhook does not exist.
        """
        ...

    async def watch(self, table: str, schema: str) -> None:
        """Install capture triggers on an application table."""
        ...

    async def unwatch(self, table: str, schema: str) -> None:
        """Remove the capture triggers of a table."""
        ...

    async def claim(
        self, owner: str, now: float, due_before: float, limit: int, lease_grace: float
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` deliveries due by ``due_before`` to ``owner``, earliest first.

        Each lease counts an attempt and lasts the webhook's timeout plus ``lease_grace``
        from ``now``. An expired lease is taken over: its attempt was lost with its
        worker and is recorded as failed ("worker lost"); a delivery with no attempts
        left then fails instead. Deliveries waiting for an earlier change of their row,
        and those of a disabled webhook, are not due.
        """
        ...

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> list[AttemptOutcome]:
        """Store attempts and update their deliveries and webhooks, in one transaction.

        A success is recorded once per delivery: a later one is ``"superseded"``. A
        failure reported after the lease moved on does not change the delivery. A
        finished delivery lets the next change of its row go.
        """
        ...

    async def next_due(self) -> float | None:
        """When the earliest claimable delivery is due (leases included), or ``None``."""
        ...

    async def backlog(self) -> int:
        """How many deliveries are not finished yet."""
        ...

    async def wait_for_work(self, timeout: float) -> None:
        """Return when new work may have arrived, or after ``timeout`` seconds."""
        ...

    def wake(self) -> None:
        """Make a waiting :meth:`wait_for_work` in this process return (thread-safe)."""
        ...

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        """One delivery, or ``None``."""
        ...

    async def list_deliveries(
        self, webhook_id: str | None, limit: int, offset: int
    ) -> list[Delivery]:
        """Deliveries newest first, for one webhook or all."""
        ...

    async def list_attempts(self, delivery_id: str) -> list[DeliveryAttempt]:
        """Every attempt of a delivery, oldest first."""
        ...

    async def redeliver(self, delivery_id: str, now: float) -> str | None:
        """Queue the delivery's event to its webhook again as a new delivery; its id."""
        ...

    async def recover(self, since: float, now: float) -> int:
        """Re-queue failed deliveries created at or after ``since``; how many."""
        ...

    async def prune(self, before: float) -> int:
        """Delete finished deliveries created before ``before`` with their attempts."""
        ...


def webhook_changes(
    records: Sequence[AttemptRecord],
) -> list[tuple[str, bool, float | None, str | None]]:
    """Per webhook in a batch: ``(id, reset, failing_since, disable_reason)``.

    ``reset``: a success ended its run of failures; ``failing_since``: when the run of
    failures after that (or the one that goes on) started; a reason to disable it.
    """
    state: dict[str, tuple[bool, float | None, str | None]] = {}
    for record in records:
        reset, failing_since, reason = state.get(record.webhook_id, (False, None, None))
        decision = record.decision
        if decision.status == "success":
            reset, failing_since = True, None
        elif decision.counted and failing_since is None:
            failing_since = record.started_at if reset else decision.failing_since
        state[record.webhook_id] = (reset, failing_since, decision.disable_reason or reason)
    return [(webhook_id, *change) for webhook_id, change in state.items()]


def open_store(database_url: str, *, ordering: Ordering = "row", **options: Any) -> SenderStore:
    """The store for ``database_url`` (not opened yet: ``await store.open()``).

    ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` gives a :class:`SQLiteStore`;
    ``postgresql://...`` (or ``postgres://``) a :class:`PostgresStore`, whose ``options``
    are that class's keyword arguments (``schema``, ``pool_size``, ...).
    """
    scheme = database_url.partition("://")[0].lower()
    if scheme == "sqlite":
        from fluxbase_receiver.sender.sqlite import SQLiteStore

        return SQLiteStore(sqlite_path(database_url), ordering=ordering, **options)
    if scheme in ("postgresql", "postgres"):
        from fluxbase_receiver.sender.postgres import PostgresStore

        return PostgresStore(database_url, ordering=ordering, **options)
    raise ValueError("database_url must start with sqlite:/// or postgresql://")


def sqlite_path(database_url: str) -> str:
    """The file path of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL."""
    prefix = "sqlite:///"
    if not database_url.startswith(prefix) or database_url == prefix:
        raise ValueError("database_url must look like sqlite:///path/to/file.db")
    path = database_url[len(prefix) :]
    if path == ":memory:" or path.startswith("file::memory:"):
        raise ValueError(
            "the sender needs a database file that every connection shares, not :memory:"
        )
    return path


class Row(Protocol):
    """A result row read by column name (``sqlite3.Row``, a psycopg dict row)."""

    def __getitem__(self, column: str, /) -> Any: ...


def unix_datetime(value: float | None) -> datetime | None:
    """A stored unix time as an aware UTC datetime."""
    return None if value is None else datetime.fromtimestamp(value, UTC)


def max_attempts(row: Row) -> int:
    """A delivery's attempt limit: its own, else its webhook's ``max_retries + 1``."""
    limit: int = row["max_attempts"] or row["max_retries"] + 1
    return limit


def captured_event(row: Row) -> CapturedEvent:
    """The captured change of a delivery row joined with its event."""
    return CapturedEvent(
        id=row["event_id"],
        event=row["event"],
        schema=row["schema_name"],
        table=row["table_name"],
        record=row["record"],
        old_record=row["old_record"],
        occurred_at=row["occurred_at"],
    )


def delivery_from_row(row: Row) -> Delivery:
    """The public view of a delivery row joined with its event."""
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
        created_at=unix_datetime(row["created_at"]),
        delivered_at=unix_datetime(row["delivered_at"]),
        next_attempt_at=unix_datetime(row["next_attempt_at"]),
        payload=json.loads(wire_body(captured_event(row), row["webhook_id"])),
    )


def claimed_from_row(row: Row, *, headers: dict[str, str], attempt: int) -> ClaimedDelivery:
    """A leased delivery row joined with its event and webhook, ready to send."""
    return ClaimedDelivery(
        delivery_id=row["id"],
        attempt=attempt,
        in_progress_answers=row["in_progress_answers"],
        max_attempts=max_attempts(row),
        created_at=row["created_at"],
        event=captured_event(row),
        webhook_id=row["webhook_id"],
        url=row["url"],
        secret=row["secret"],
        headers=headers,
        timeout_seconds=row["timeout_seconds"],
        retry_backoff_seconds=row["retry_backoff_seconds"],
        failing_since=row["failing_since"],
    )
