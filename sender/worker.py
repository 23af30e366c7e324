"""A delivery worker over any :class:`~fluxbase_receiver.sender.backend.SenderStore`.

The hot path is batched: deliveries are claimed when at least half of the ``concurrency``
slots are free (or none is busy), and the attempts that finished while the previous batch
was being written are recorded together, in one store call, while sends go on (a group
commit). A running worker logs a progress line at INFO every ``progress_interval``;
lines about single deliveries are DEBUG.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeAlias

from fluxbase_receiver.sender.backend import AttemptRecord, ClaimedDelivery, SenderStore
from fluxbase_receiver.sender.capture import CapturedEvent, wire_body
from fluxbase_receiver.sender.delivery import AttemptResult, HttpSender, signed_headers
from fluxbase_receiver.sender.models import DeliveryCounts
from fluxbase_receiver.sender.policy import RetryPolicy

__all__ = ["AttemptObserver", "Worker", "default_worker_id"]

logger = logging.getLogger(__name__)

_TRIES_WHEN_STOPPING = 3
"""Store errors a stopping worker sits through before it exits with attempts unrecorded."""

AttemptObserver: TypeAlias = Callable[[ClaimedDelivery, AttemptRecord], None]
"""Called with ``(claimed, record)`` after each delivery attempt; see :meth:`Worker.observe`."""


def default_worker_id() -> str:
    """``host:pid:random``: unique per worker, readable in lease columns and logs."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Worker:
    """Claims due deliveries from ``store``, sends them, records what happened."""

    store: SenderStore
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    owner: str = field(default_factory=default_worker_id)
    concurrency: int = 16
    lease_grace_seconds: float = 30.0
    poll_interval: float = 1.0
    allow_private_networks: bool = False
    retention: timedelta | None = timedelta(days=30)
    progress_interval: float = 10.0
    totals: DeliveryCounts = field(default_factory=DeliveryCounts)
    """Everything this worker attempted since it was made."""
    _stopping: asyncio.Event | None = field(default=None, init=False, repr=False)
    _observers: list[AttemptObserver] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")

    async def deliver_due(self) -> DeliveryCounts:
        """Send every delivery due now, once each (a later change of a row included)."""
        async with self._http() as http:
            return await self._deliver(http, due_before=time.time(), until_idle=True)

    async def send_test(
        self, event: CapturedEvent, webhook_id: str
    ) -> tuple[str, AttemptResult] | None:
        """Send ``event`` to one webhook now, once, whether or not it matches or is enabled.

        Returns the delivery's id and the attempt's result; ``None`` for no such webhook.
        """
        claimed = await self.store.add_test_delivery(
            event, webhook_id, self.owner, time.time(), self.lease_grace_seconds
        )
        if claimed is None:
            return None
        async with self._http() as http:
            record = await self._attempt(http, claimed, retry=False)
        await self._record([record], self.totals)
        return claimed.delivery_id, record.result

    async def serve(self) -> None:
        """Deliver until :meth:`stop`; then finish and record the sends in flight."""
        self._stopping = asyncio.Event()
        logger.info("sender worker %s started", self.owner)
        progress = asyncio.create_task(self._report_progress())
        try:
            async with self._http() as http:
                await self._deliver(http, due_before=None, until_idle=False)
        finally:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
            self._stopping = None
            logger.info("sender worker %s stopped (%s)", self.owner, _describe(self.totals))

    def observe(self, observer: AttemptObserver) -> Callable[[], None]:
        """Call ``observer(claimed, record)`` after each attempt, on the worker's event loop.

        For metrics and tracing: it must return quickly. One that raises is logged and
        otherwise ignored. Returns a function that stops the observing.
        """
        self._observers.append(observer)

        def stop() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return stop

    @property
    def serving(self) -> bool:
        """Whether :meth:`serve` is running."""
        return self._stopping is not None

    def stop(self) -> None:
        """Ask :meth:`serve` to drain its sends and return (from the worker's loop)."""
        if self._stopping is not None:
            self._stopping.set()
            self.store.wake()

    def _http(self) -> HttpSender:
        return HttpSender(
            allow_private_networks=self.allow_private_networks, limit=self.concurrency
        )

    def _stopped(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    async def _deliver(
        self, http: HttpSender, *, due_before: float | None, until_idle: bool
    ) -> DeliveryCounts:
        counts = DeliveryCounts()
        sends: set[asyncio.Task[AttemptRecord]] = set()
        finished: list[AttemptRecord] = []
        flushing: list[AttemptRecord] = []
        flush: asyncio.Task[None] | None = None
        pruned_at = 0.0
        failed_stops = 0  # store errors since stop() while nothing is being sent
        more = True
        while True:
            try:
                if flush is None and finished:
                    flushing, finished = finished, []
                    flush = asyncio.create_task(self._record(flushing, counts))
                room = self.concurrency - len(sends)
                if more and not self._stopped() and (not sends or room * 2 >= self.concurrency):
                    now = time.time()
                    batch = await self.store.claim(
                        self.owner,
                        now,
                        now if due_before is None else due_before,
                        room,
                        self.lease_grace_seconds,
                    )
                    more = len(batch) == room
                    sends.update(asyncio.create_task(self._attempt(http, c)) for c in batch)
                waiting: set[asyncio.Task[Any]] = set(sends)
                if flush is not None:
                    waiting.add(flush)
                if waiting:
                    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        if task is flush:
                            flush = None
                            more = True  # a finished change may have let the next one go
                            if task.exception() is not None:
                                finished[:0] = flushing  # to be written again
                                task.result()
                        else:
                            sends.discard(task)
                            finished.append(task.result())
                    continue
                if self._stopped() or (until_idle and not more):
                    return counts
                if not more:
                    if self.retention is not None and time.time() - pruned_at > 3600:
                        pruned_at = time.time()
                        await self.store.prune(time.time() - self.retention.total_seconds())
                    await self.store.wait_for_work(await self._sleep_for())
                more = True
            except Exception as error:
                if until_idle:
                    raise
                if self._stopped() and not sends:
                    failed_stops += 1
                    if failed_stops >= _TRIES_WHEN_STOPPING:
                        logger.error(
                            "sender worker %s: stopping with %d attempt(s) unrecorded (%s); "
                            "their deliveries are sent again once their leases lapse",
                            self.owner,
                            len(finished),
                            error,
                        )
                        return counts
                # The database is out of reach: keep what is to be recorded and try again.
                logger.warning("sender worker %s: store error (%s)", self.owner, error)
                await asyncio.sleep(self.poll_interval)

    async def _sleep_for(self) -> float:
        due = await self.store.next_due()
        if due is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.0, due - time.time()))

    async def _attempt(
        self, http: HttpSender, claimed: ClaimedDelivery, retry: bool = True
    ) -> AttemptRecord:
        body = wire_body(claimed.event, claimed.webhook_id)
        headers = signed_headers(
            body, claimed.secret, claimed.event.id, claimed.attempt, claimed.headers
        )
        started = time.time()
        result = await http.post(claimed.url, body, headers, claimed.timeout_seconds)
        decision = self.policy.decide(claimed, result, retry)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "delivery %s to webhook %s attempt %d: %s (%s); now %s",
                claimed.delivery_id,
                claimed.webhook_id,
                claimed.attempt,
                result.status,
                result.error or "ok",
                decision.status,
                extra=_context(claimed, status=decision.status),
            )
        record = AttemptRecord(
            delivery_id=claimed.delivery_id,
            webhook_id=claimed.webhook_id,
            owner=self.owner,
            attempt=claimed.attempt,
            result=result,
            started_at=started,
            decision=decision,
        )
        for observer in self._observers:
            try:
                observer(claimed, record)
            except Exception:
                logger.exception("an attempt observer failed", extra=_context(claimed))
        return record

    async def _record(self, records: list[AttemptRecord], counts: DeliveryCounts) -> None:
        await self.store.record_attempts(records)
        succeeded = retrying = 0
        for record in records:
            status = record.decision.status
            if status == "success":
                succeeded += 1
            elif status == "retrying":
                retrying += 1
            if record.decision.disable_reason:
                logger.warning(
                    "webhook %s disabled: %s",
                    record.webhook_id,
                    record.decision.disable_reason,
                    extra={
                        "fluxbase_webhook_id": record.webhook_id,
                        "fluxbase_delivery_id": record.delivery_id,
                        "fluxbase_reason": record.decision.disable_reason,
                    },
                )
        for tally in (counts, self.totals):  # pydantic models: written once per batch
            tally.attempted += len(records)
            tally.succeeded += succeeded
            tally.retrying += retrying
            tally.failed += len(records) - succeeded - retrying

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(self.progress_interval)
            try:
                backlog = await self.store.backlog()
            except Exception as error:  # the progress line must not stop the worker
                logger.info(
                    "sender worker %s: %s; backlog unknown (%s)",
                    self.owner,
                    _describe(self.totals),
                    type(error).__name__,
                )
                continue
            logger.info(
                "sender worker %s: %s, backlog %d", self.owner, _describe(self.totals), backlog
            )


def _context(claimed: ClaimedDelivery, **more: object) -> dict[str, Any]:
    """The ``extra`` of a record about one delivery attempt (ids only, never the secret)."""
    event = claimed.event
    return {
        "fluxbase_delivery_id": claimed.delivery_id,
        "fluxbase_webhook_id": claimed.webhook_id,
        "fluxbase_attempt": claimed.attempt,
        "fluxbase_event_id": event.id,
        "fluxbase_table": event.table,
        "fluxbase_schema": event.schema,
        "fluxbase_operation": event.event,
        **{f"fluxbase_{name}": value for name, value in more.items()},
    }


def _describe(counts: DeliveryCounts) -> str:
    return f"delivered {counts.succeeded}, retrying {counts.retrying}, failed {counts.failed}"
