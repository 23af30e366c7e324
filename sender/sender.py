"""The :class:`Sender` facade: subscriptions, capture, delivery workers and history."""

from __future__ import annotations

import asyncio
import builtins
import logging
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from fluxbase_receiver.sender.backend import Ordering, SenderStore, open_store, sqlite_path
from fluxbase_receiver.sender.capture import CapturedEvent, check_identifier, new_event
from fluxbase_receiver.sender.delivery import DestinationRefused, check_url
from fluxbase_receiver.sender.models import (
    MASK,
    Delivery,
    DeliveryAttempt,
    DeliveryCounts,
    NotFound,
    TestResult,
    Webhook,
    WebhookSpec,
    WebhookValidationError,
)
from fluxbase_receiver.sender.policy import RetryPolicy
from fluxbase_receiver.sender.worker import AttemptObserver, Worker, default_worker_id

__all__ = ["Sender", "Webhooks"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Webhooks:
    """Webhook management, named as in the Fluxbase SDK (``sender.webhooks``)."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender
        self._store = sender.store

    def create(
        self, spec: WebhookSpec | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> Webhook:
        """Validate and store a webhook; raises :class:`WebhookValidationError`."""
        data = _spec_fields(spec) | fields
        parsed = WebhookSpec.parse(data)
        self._check_destination(parsed.url)
        return self._sender._call(self._store.create_webhook(parsed, time.time()))

    def _check_destination(self, url: str) -> None:
        """Refuse a URL naming a non-public address unless private networks are allowed."""
        if self._sender.allow_private_networks:
            return
        try:
            check_url(url)
        except (DestinationRefused, ValueError) as refusal:
            raise WebhookValidationError([{"field": "url", "message": str(refusal)}]) from None

    def list(self) -> list[Webhook]:
        """Every webhook, oldest first."""
        return self._sender._call(self._store.list_webhooks())

    def get(self, webhook_id: str) -> Webhook:
        """One webhook; raises :class:`NotFound`."""
        webhook = self._sender._call(self._store.get_webhook(webhook_id))
        if webhook is None:
            raise NotFound(f"no webhook with id {webhook_id!r}")
        return webhook

    def update(
        self, webhook_id: str, spec: WebhookSpec | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> Webhook:
        """Change some fields of a webhook (the rest stay); re-enabling clears its failure.

        A header value given as the mask it is shown with keeps its stored value, so a
        webhook read and written back unchanged keeps its headers.
        """
        current = self.get(webhook_id).fields()
        merged = {key: current[key] for key in WebhookSpec.model_fields}
        changes = _spec_fields(spec) | fields
        if isinstance(changes.get("headers"), Mapping):
            changes["headers"] = _unmasked(changes["headers"], current["headers"])
        merged.update(changes)
        parsed = WebhookSpec.parse(merged)
        if parsed.url != current["url"]:
            self._check_destination(parsed.url)
        updated = self._sender._call(self._store.update_webhook(webhook_id, parsed, time.time()))
        if updated is None:
            raise NotFound(f"no webhook with id {webhook_id!r}")
        return updated

    def delete(self, webhook_id: str) -> None:
        """Delete a webhook and its delivery history; raises :class:`NotFound`."""
        if not self._sender._call(self._store.delete_webhook(webhook_id)):
            raise NotFound(f"no webhook with id {webhook_id!r}")

    def get_deliveries(
        self, webhook_id: str, limit: int = 50, offset: int = 0
    ) -> builtins.list[Delivery]:
        """A webhook's deliveries, newest first."""
        self.get(webhook_id)
        found = self._store.list_deliveries(webhook_id, _bounded(limit), max(0, offset))
        return self._sender._call(found)

    def test(
        self,
        webhook_id: str,
        *,
        event: str = "TEST",
        table: str = "test",
        record: Any = None,
        old_record: Any = None,
        schema: str = "public",
    ) -> TestResult:
        """Send one event now (by default Fluxbase's TEST event), record it, report it.

        Sent even when the webhook is disabled or does not subscribe to ``table``; it is
        attempted once, not retried. From async code, await :meth:`test_async`.
        """
        return self._sender._call(self._test(webhook_id, event, table, record, old_record, schema))

    async def test_async(
        self,
        webhook_id: str,
        *,
        event: str = "TEST",
        table: str = "test",
        record: Any = None,
        old_record: Any = None,
        schema: str = "public",
    ) -> TestResult:
        """:meth:`test` for async code."""
        return await self._sender._call_async(
            self._test(webhook_id, event, table, record, old_record, schema)
        )

    async def _test(
        self, webhook_id: str, event: str, table: str, record: Any, old_record: Any, schema: str
    ) -> TestResult:
        captured = new_event(
            event,
            table,
            {"test": True} if record is None else record,
            old_record,
            schema,
            time.time(),
        )
        sent = await self._sender._worker.send_test(captured, webhook_id)
        if sent is None:
            raise NotFound(f"no webhook with id {webhook_id!r}")
        delivery_id, result = sent
        return TestResult(
            success=result.ok,
            status_code=result.status,
            response_body=result.body,
            error=result.error,
            delivery_id=delivery_id,
        )


class Sender:
    """Captures row changes and delivers them as signed Fluxbase webhooks.

    ``database_url`` picks the store: ``sqlite:///path/to/app.db`` (embedded, the
    sender's tables next to the application's) or ``postgresql://...`` (any number of
    worker processes on any number of hosts share the work; ``schema`` names the
    schema of the sender's tables, ``fluxbase_sender`` by default). Either way
    :meth:`emit` can join the application's transaction. Run a worker with :meth:`run`
    (blocking), ``await`` :meth:`serve`, or call :meth:`deliver_pending` from tests and
    cron jobs.

    ``allow_private_networks`` turns the SSRF guard off (local development and tests).
    ``concurrency`` caps simultaneous sends per worker. Leases last the webhook's
    timeout plus ``lease_grace_seconds``; an attempt counts when its lease is taken,
    so a worker dying mid-send still uses one up. ``disable_after`` is the retry
    period: a webhook failing every attempt for that long is disabled, and a delivery
    answered 409 (another copy in progress) is retried that long without using up
    ``max_retries``. Finished deliveries older than ``retention`` are pruned by running
    workers (``None`` keeps them). ``ordering="row"`` (the default) sends a webhook's
    changes of one row one at a time, in capture order; ``"none"`` sends each as soon
    as it is due.

    The store's work runs on an event loop of the sender's own, in a thread: the
    synchronous methods can be called from any thread, the ``async`` ones from any
    event loop.
    """

    def __init__(
        self,
        database_url: str,
        *,
        allow_private_networks: bool = False,
        concurrency: int = 16,
        poll_interval: float = 1.0,
        lease_grace_seconds: float = 30.0,
        max_backoff_seconds: float = 6 * 3600.0,
        disable_after: timedelta = timedelta(days=5),
        retention: timedelta | None = timedelta(days=30),
        worker_id: str | None = None,
        ordering: Ordering = "row",
        schema: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if schema is not None and not database_url.startswith(("postgresql:", "postgres:")):
            raise ValueError("schema applies to a postgresql:// database only")
        self.database_url = database_url
        self.store: SenderStore = open_store(
            database_url, ordering=ordering, **({"schema": schema} if schema else {})
        )
        self.allow_private_networks = allow_private_networks
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.lease_grace_seconds = lease_grace_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.disable_after = disable_after
        self.retention = retention
        self.worker_id = worker_id or default_worker_id()
        self.policy = RetryPolicy(
            max_backoff_seconds=max_backoff_seconds, disable_after=disable_after
        )
        self._worker = Worker(
            self.store,
            policy=self.policy,
            owner=self.worker_id,
            concurrency=concurrency,
            lease_grace_seconds=lease_grace_seconds,
            poll_interval=poll_interval,
            allow_private_networks=allow_private_networks,
            retention=retention,
        )
        self.webhooks = Webhooks(self)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fluxbase-sender", daemon=True
        )
        self._thread.start()
        try:
            self._call(self.store.open())
        except BaseException:
            self._stop_loop()
            raise

    def __repr__(self) -> str:
        return f"<Sender {self.store!r} worker={self.worker_id}>"

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the sender's database connections."""
        if self._thread.is_alive():
            self._call(self.store.close())
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the sender's loop and wait for it (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _call_async(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the sender's loop and await it from the caller's loop."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return await asyncio.wrap_future(future)

    # -- capture ------------------------------------------------------------------

    def connect(self) -> Any:
        """A new connection to the sender's database, for the application's own writes.

        SQLite: a ``sqlite3`` connection (WAL mode, busy timeout, autocommit).
        PostgreSQL: a ``psycopg.Connection``.
        """
        if self.database_url.startswith("sqlite:"):
            from fluxbase_receiver.sender.sqlite import connect

            return connect(sqlite_path(self.database_url))
        import psycopg

        return psycopg.connect(self.database_url)

    def emit(
        self,
        event: str,
        table: str,
        record: Any,
        old_record: Any = None,
        schema: str = "public",
        *,
        connection: Any = None,
    ) -> list[str]:
        """Capture one change and fan it out to the matching enabled webhooks.

        ``record`` / ``old_record`` are anything pydantic can serialise to JSON. With
        ``connection`` (the application's own ``sqlite3`` or psycopg connection to the
        same database) the rows are written in that connection's open transaction:
        rolled back, nothing is sent. Returns the ids of the deliveries created (none
        when no webhook matched).
        """
        captured = _captured(event, table, record, old_record, schema)
        if connection is not None:
            return self.store.capture(captured, connection)
        return self._call(self.store.add_event(captured))

    async def emit_async(
        self,
        event: str,
        table: str,
        record: Any,
        old_record: Any = None,
        schema: str = "public",
        *,
        connection: Any = None,
    ) -> list[str]:
        """:meth:`emit` for async code; ``connection`` is a psycopg ``AsyncConnection``."""
        captured = _captured(event, table, record, old_record, schema)
        if connection is not None:
            return await self.store.add_event(captured, connection)
        return await self._call_async(self.store.add_event(captured))

    def watch(self, table: str, schema: str = "public") -> None:
        """Install triggers capturing INSERT, UPDATE and DELETE on an application table.

        The row is captured as JSON with the columns the table has now: run ``watch``
        again after ``ALTER TABLE``. PostgreSQL: ``schema`` is the table's schema.
        SQLite: it is the name sent in events.
        """
        check_identifier("table", table)
        check_identifier("schema", schema)
        self._call(self.store.watch(table, schema))

    def unwatch(self, table: str, schema: str = "public") -> None:
        """Remove the capture triggers of a table."""
        check_identifier("table", table)
        check_identifier("schema", schema)
        self._call(self.store.unwatch(table, schema))

    # -- history ------------------------------------------------------------------

    def get_delivery(self, delivery_id: str) -> Delivery:
        """One delivery; raises :class:`NotFound`."""
        delivery = self._call(self.store.get_delivery(delivery_id))
        if delivery is None:
            raise NotFound(f"no delivery with id {delivery_id!r}")
        return delivery

    def get_deliveries(self, limit: int = 50, offset: int = 0) -> list[Delivery]:
        """Deliveries of every webhook, newest first."""
        return self._call(self.store.list_deliveries(None, _bounded(limit), max(0, offset)))

    def get_attempts(self, delivery_id: str) -> list[DeliveryAttempt]:
        """Every HTTP attempt of a delivery, oldest first."""
        self.get_delivery(delivery_id)
        return self._call(self.store.list_attempts(delivery_id))

    def redeliver(self, delivery_id: str) -> Delivery:
        """Queue a delivery's event to its webhook again, as a new delivery (returned)."""
        new_id = self._call(self.store.redeliver(delivery_id, time.time()))
        if new_id is None:
            raise NotFound(f"no delivery with id {delivery_id!r}")
        return self.get_delivery(new_id)

    def recover(self, since: datetime | float) -> int:
        """Re-queue every failed delivery created at or after ``since``, with fresh retries."""
        moment = since.timestamp() if isinstance(since, datetime) else float(since)
        return self._call(self.store.recover(moment, time.time()))

    def prune(self, older_than: timedelta | None = None) -> int:
        """Delete finished deliveries older than ``older_than`` (default: ``retention``)."""
        period = self.retention if older_than is None else older_than
        if period is None:
            return 0
        return self._call(self.store.prune(time.time() - period.total_seconds()))

    def next_due(self) -> datetime | None:
        """When the earliest pending delivery can be sent (leases included), or ``None``."""
        due = self._call(self.store.next_due())
        return None if due is None else datetime.fromtimestamp(due, UTC)

    def backlog(self) -> int:
        """How many deliveries are not finished yet (pending or retrying)."""
        return self._call(self.store.backlog())

    def observe(self, observer: AttemptObserver) -> Callable[[], None]:
        """Call ``observer(claimed, record)`` after each delivery attempt, on the sender's
        event loop (see :meth:`Worker.observe`); returns a function that stops it."""
        return self._worker.observe(observer)

    # -- delivery -----------------------------------------------------------------

    def deliver_pending(self) -> DeliveryCounts:
        """Send every delivery due now, once each, and return what happened."""
        return self._call(self._worker.deliver_due())

    async def deliver_pending_async(self) -> DeliveryCounts:
        """:meth:`deliver_pending` for async code."""
        return await self._call_async(self._worker.deliver_due())

    def run(self) -> None:
        """Deliver until :meth:`stop`, SIGINT or SIGTERM (blocking)."""
        asyncio.run(self._serve_with_signals())

    async def _serve_with_signals(self) -> None:
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self.stop)
        await self.serve()

    async def serve(self) -> None:
        """Deliver until :meth:`stop` (cancelling the task stops it too): wakes on
        captures, polls for those made elsewhere, logs progress at INFO."""
        await self._call_async(self._worker.serve())

    @property
    def serving(self) -> bool:
        """Whether :meth:`serve` is running."""
        return self._worker.serving

    def stop(self) -> None:
        """Ask a running :meth:`serve` / :meth:`run` to finish its sends and return."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._worker.stop)


def _captured(event: str, table: str, record: Any, old_record: Any, schema: str) -> CapturedEvent:
    captured = new_event(event, table, record, old_record, schema, time.time())
    if captured.event == "TEST":
        raise ValueError("TEST events are sent with sender.webhooks.test")
    return captured


def _spec_fields(spec: WebhookSpec | Mapping[str, Any] | None) -> dict[str, Any]:
    if spec is None:
        return {}
    if isinstance(spec, WebhookSpec):
        return spec.fields()
    return dict(spec)


def _unmasked(given: Mapping[str, Any], stored: Mapping[str, str]) -> dict[str, Any]:
    return {
        name: stored[name] if value == MASK and name in stored else value
        for name, value in given.items()
    }


def _bounded(limit: int) -> int:
    return max(1, min(limit, 1000))
