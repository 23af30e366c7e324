"""The :class:`Sender` facade: subscriptions, capture, delivery workers and history."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import signal
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from fluxbase_receiver.sender.capture import check_identifier, new_event, wire_body
from fluxbase_receiver.sender.delivery import (
    AttemptResult,
    DestinationRefused,
    HttpSender,
    backoff_delay,
    check_url,
    signed_headers,
)
from fluxbase_receiver.sender.models import (
    MASK,
    Delivery,
    DeliveryAttempt,
    DeliveryCounts,
    DeliveryStatus,
    NotFound,
    TestResult,
    Webhook,
    WebhookSpec,
    WebhookValidationError,
)
from fluxbase_receiver.sender.store import (
    AttemptRecord,
    ClaimedDelivery,
    SenderStore,
    SQLiteStore,
    connect,
)

__all__ = ["Sender", "Webhooks"]

logger = logging.getLogger("fluxbase_receiver.sender")


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
        return self._store.create_webhook(parsed, time.time())

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
        return self._store.list_webhooks()

    def get(self, webhook_id: str) -> Webhook:
        """One webhook; raises :class:`NotFound`."""
        webhook = self._store.get_webhook(webhook_id)
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
        updated = self._store.update_webhook(webhook_id, parsed, time.time())
        if updated is None:
            raise NotFound(f"no webhook with id {webhook_id!r}")
        return updated

    def delete(self, webhook_id: str) -> None:
        """Delete a webhook and its delivery history; raises :class:`NotFound`."""
        if not self._store.delete_webhook(webhook_id):
            raise NotFound(f"no webhook with id {webhook_id!r}")

    def get_deliveries(
        self, webhook_id: str, limit: int = 50, offset: int = 0
    ) -> builtins.list[Delivery]:
        """A webhook's deliveries, newest first."""
        self.get(webhook_id)
        return self._store.list_deliveries(webhook_id, _bounded(limit), max(0, offset))

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
        return asyncio.run(
            self.test_async(
                webhook_id,
                event=event,
                table=table,
                record=record,
                old_record=old_record,
                schema=schema,
            )
        )

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
        self.get(webhook_id)
        now = time.time()
        captured = new_event(
            event, table, {"test": True} if record is None else record, old_record, schema, now
        )
        sender = self._sender
        claimed = self._store.add_test_delivery(
            captured, webhook_id, sender.worker_id, now, sender.lease_grace_seconds
        )
        if claimed is None:
            raise NotFound(f"no webhook with id {webhook_id!r}")
        async with HttpSender(allow_private_networks=sender.allow_private_networks) as http:
            _, result = await sender._attempt(http, claimed, retry=False)
        return TestResult(
            success=result.ok,
            status_code=result.status,
            response_body=result.body,
            error=result.error,
            delivery_id=claimed.delivery_id,
        )


class Sender:
    """Captures row changes and delivers them as signed Fluxbase webhooks.

    ``database_url`` is ``sqlite:///path/to/app.db``: the sender's tables live next
    to the application's, so :meth:`emit` can join the application's transaction.
    Run a worker with :meth:`run` (blocking), ``await`` :meth:`serve`, or call
    :meth:`deliver_pending` from tests and cron jobs.

    ``allow_private_networks`` turns the SSRF guard off (local development and tests).
    ``concurrency`` caps simultaneous sends per worker. Leases last the webhook's
    timeout plus ``lease_grace_seconds``; an attempt counts when its lease is taken,
    so a worker dying mid-send still uses one up. ``disable_after`` is the retry
    period: a webhook failing every attempt for that long is disabled, and a delivery
    answered 409 (another copy in progress) is retried that long without using up
    ``max_retries``. Finished deliveries older than ``retention`` are pruned by running
    workers (``None`` keeps them).
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
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.database_url = database_url
        self.store: SenderStore = SQLiteStore(sqlite_path(database_url))
        self.allow_private_networks = allow_private_networks
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.lease_grace_seconds = lease_grace_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.disable_after = disable_after
        self.retention = retention
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.webhooks = Webhooks(self)
        self._wake_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_event: asyncio.Event | None = None
        self._stopping = False

    def __repr__(self) -> str:
        return f"<Sender {self.database_url} worker={self.worker_id}>"

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the sender's database connection."""
        self.store.close()

    # -- capture ------------------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        """A new connection to the sender's database (WAL mode, busy timeout, autocommit)."""
        return connect(sqlite_path(self.database_url))

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
        ``connection`` (a ``sqlite3`` connection to the same database) the rows are
        written in that connection's open transaction: rolled back, nothing is sent.
        Returns the ids of the deliveries created (none when no webhook matched).
        """
        captured = new_event(event, table, record, old_record, schema, time.time())
        if captured.event == "TEST":
            raise ValueError("TEST events are sent with sender.webhooks.test")
        ids = self.store.add_event(captured, connection)
        if ids:
            self._wake()
        return ids

    def watch(self, table: str, schema: str = "public") -> None:
        """Install triggers capturing INSERT, UPDATE and DELETE on an application table.

        The row is captured as JSON with the columns the table has now: run ``watch``
        again after ``ALTER TABLE``. ``schema`` is the name sent in events.
        """
        self.store.watch(check_identifier("table", table), check_identifier("schema", schema))

    def unwatch(self, table: str) -> None:
        """Remove the capture triggers of a table."""
        self.store.unwatch(check_identifier("table", table))

    # -- history ------------------------------------------------------------------

    def get_delivery(self, delivery_id: str) -> Delivery:
        """One delivery; raises :class:`NotFound`."""
        delivery = self.store.get_delivery(delivery_id)
        if delivery is None:
            raise NotFound(f"no delivery with id {delivery_id!r}")
        return delivery

    def get_deliveries(self, limit: int = 50, offset: int = 0) -> list[Delivery]:
        """Deliveries of every webhook, newest first."""
        return self.store.list_deliveries(None, _bounded(limit), max(0, offset))

    def get_attempts(self, delivery_id: str) -> list[DeliveryAttempt]:
        """Every HTTP attempt of a delivery, oldest first."""
        self.get_delivery(delivery_id)
        return self.store.list_attempts(delivery_id)

    def redeliver(self, delivery_id: str) -> Delivery:
        """Queue a delivery's event to its webhook again, as a new delivery (returned)."""
        new_id = self.store.redeliver(delivery_id, time.time())
        if new_id is None:
            raise NotFound(f"no delivery with id {delivery_id!r}")
        self._wake()
        return self.get_delivery(new_id)

    def recover(self, since: datetime | float) -> int:
        """Re-queue every failed delivery created at or after ``since``, with fresh retries."""
        moment = since.timestamp() if isinstance(since, datetime) else float(since)
        count = self.store.recover(moment, time.time())
        if count:
            self._wake()
        return count

    def prune(self, older_than: timedelta | None = None) -> int:
        """Delete finished deliveries older than ``older_than`` (default: ``retention``)."""
        period = self.retention if older_than is None else older_than
        if period is None:
            return 0
        return self.store.prune(time.time() - period.total_seconds())

    # -- delivery -----------------------------------------------------------------

    def deliver_pending(self) -> DeliveryCounts:
        """Send every delivery due now, once each, and return what happened."""
        return asyncio.run(self.deliver_pending_async())

    async def deliver_pending_async(self) -> DeliveryCounts:
        """:meth:`deliver_pending` for async code."""
        async with HttpSender(allow_private_networks=self.allow_private_networks) as http:
            return await self._pass(http)

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
        """Deliver until :meth:`stop`: wakes on :meth:`emit`, polls for trigger captures."""
        self._stopping = False
        with self._wake_lock:
            self._loop = asyncio.get_running_loop()
            self._wake_event = asyncio.Event()
        wake = self._wake_event
        logger.info("sender worker %s started", self.worker_id)
        pruned_at = 0.0
        try:
            async with HttpSender(allow_private_networks=self.allow_private_networks) as http:
                while not self._stopping:
                    wake.clear()
                    await self._pass(http)
                    if self.retention is not None and time.time() - pruned_at > 3600:
                        pruned_at = time.time()
                        self.prune()
                    if self._stopping:
                        break
                    await _wait(wake, self._sleep_for())
        finally:
            with self._wake_lock:
                self._loop = self._wake_event = None
            logger.info("sender worker %s stopped", self.worker_id)

    def stop(self) -> None:
        """Ask a running :meth:`serve` / :meth:`run` to finish its sends and return."""
        self._stopping = True
        self._wake()

    def _wake(self) -> None:
        with self._wake_lock:
            if self._loop is not None and self._wake_event is not None:
                self._loop.call_soon_threadsafe(self._wake_event.set)

    def _sleep_for(self) -> float:
        due = self.store.next_due()
        if due is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.0, due - time.time()))

    async def _pass(self, http: HttpSender) -> DeliveryCounts:
        """Send what is due as of now, ``concurrency`` at a time, each delivery once."""
        counts = DeliveryCounts()
        due_before = time.time()
        running: set[asyncio.Task[tuple[DeliveryStatus, AttemptResult]]] = set()
        more = True
        while True:
            room = self.concurrency - len(running)
            if more and room > 0:
                batch = self.store.claim(
                    self.worker_id, time.time(), due_before, room, self.lease_grace_seconds
                )
                more = len(batch) == room
                running.update(asyncio.create_task(self._attempt(http, c)) for c in batch)
            if not running:
                return counts
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                status, _ = task.result()
                counts.attempted += 1
                if status == "success":
                    counts.succeeded += 1
                elif status == "retrying":
                    counts.retrying += 1
                else:
                    counts.failed += 1

    async def _attempt(
        self, http: HttpSender, claimed: ClaimedDelivery, *, retry: bool = True
    ) -> tuple[DeliveryStatus, AttemptResult]:
        """Send one attempt and record it; ``retry=False`` makes a failure final (test sends)."""
        body = wire_body(claimed.event, claimed.webhook_id)
        headers = signed_headers(
            body, claimed.secret, claimed.event.id, claimed.attempt, claimed.headers
        )
        started = time.time()
        result = await http.post(claimed.url, body, headers, claimed.timeout_seconds)
        record = self._decide(claimed, result, started, retry)
        outcome = self.store.record_attempt(record)
        if result.ok:
            logger.debug(
                "delivery %s to webhook %s: %s (%s)",
                claimed.delivery_id,
                claimed.webhook_id,
                outcome,
                result.status,
            )
        else:
            logger.warning(
                "delivery %s to webhook %s attempt %d failed (%s); now %s",
                claimed.delivery_id,
                claimed.webhook_id,
                claimed.attempt,
                result.error,
                record.status,
            )
        if record.disable_reason:
            logger.warning("webhook %s disabled: %s", claimed.webhook_id, record.disable_reason)
        return record.status, result

    def _decide(
        self, claimed: ClaimedDelivery, result: AttemptResult, started: float, retry: bool
    ) -> AttemptRecord:
        """The retry policy: what an attempt's result means for its delivery and webhook.

        A 2xx is a success. ``410 Gone`` fails the delivery and disables the webhook. A
        ``409`` (the receiver is handling another copy of the event) is retried without
        using up one of ``max_retries``, while the delivery is younger than
        ``disable_after``. Anything else is retried while attempts remain. A webhook
        whose attempts have all failed for ``disable_after`` is disabled.
        """
        if result.ok:
            return AttemptRecord(
                claimed.delivery_id,
                self.worker_id,
                claimed.attempt,
                result,
                started,
                "success",
                None,
                None,
            )
        period = self.disable_after.total_seconds()
        failing_since = claimed.failing_since or started
        disable_reason = None
        status: DeliveryStatus = "failed"
        delay = None
        counted = True
        if result.status == 410:
            disable_reason = "the receiver answered 410 Gone"
        elif result.status == 409 and retry:
            if started - claimed.created_at < period:
                status, counted = "retrying", False
                delay = backoff_delay(
                    claimed.attempt, claimed.retry_backoff_seconds, self.max_backoff_seconds
                )
        elif retry and claimed.attempt - claimed.in_progress_answers < claimed.max_attempts:
            status = "retrying"
            delay = result.retry_after
            if delay is None:
                delay = backoff_delay(
                    claimed.attempt - claimed.in_progress_answers,
                    claimed.retry_backoff_seconds,
                    self.max_backoff_seconds,
                )
        next_attempt_at = (
            None if delay is None else time.time() + min(delay, self.max_backoff_seconds)
        )
        if disable_reason is None and started - failing_since >= period:
            disable_reason = f"every attempt failed for {self.disable_after}"
        return AttemptRecord(
            claimed.delivery_id,
            self.worker_id,
            claimed.attempt,
            result,
            started,
            status,
            next_attempt_at,
            failing_since,
            disable_reason,
            counted,
        )


async def _wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


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
