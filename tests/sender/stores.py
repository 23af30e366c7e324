"""Sender stores for the contract suite and the PostgreSQL tests, each in a throwaway place.

PostgreSQL stores get a schema of their own (``fbs_test_<random>``), dropped afterwards,
so runs in parallel on one server do not collide.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fluxbase_receiver.sender.backend import AttemptRecord, ClaimedDelivery, SenderStore
from fluxbase_receiver.sender.capture import CapturedEvent, new_event
from fluxbase_receiver.sender.delivery import AttemptResult
from fluxbase_receiver.sender.models import Webhook, WebhookSpec
from fluxbase_receiver.sender.policy import Decision, RetryPolicy


def unique_schema() -> str:
    return f"fbs_test_{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def postgres_store(url: str, **options: Any) -> AsyncIterator[Any]:
    """An opened :class:`PostgresStore` in a fresh schema, dropped on the way out."""
    from fluxbase_receiver.sender.postgres import PostgresStore

    options.setdefault("schema", unique_schema())
    store = PostgresStore(url, **options)
    await store.open()
    try:
        yield store
    finally:
        await store.drop()
        await store.close()


@asynccontextmanager
async def sqlite_store(path: Path, **options: Any) -> AsyncIterator[Any]:
    """An opened :class:`SQLiteStore` on a new file."""
    from fluxbase_receiver.sender.sqlite import SQLiteStore

    store = SQLiteStore(path / f"sender-{uuid.uuid4().hex[:8]}.db", **options)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def make_hook(store: SenderStore, **fields: Any) -> Webhook:
    spec = {"name": "hook", "url": "http://127.0.0.1:9/hook", "secret": "s3cret"}
    spec.update(fields)
    return await store.create_webhook(WebhookSpec.parse(spec), time.time())


def respec(webhook: Webhook, **changes: Any) -> WebhookSpec:
    """The webhook's spec with some fields changed (what ``webhooks.update`` stores)."""
    fields = webhook.fields()
    return WebhookSpec.parse({key: fields[key] for key in WebhookSpec.model_fields} | changes)


def change(
    operation: str = "INSERT",
    table: str = "orders",
    record: Any = None,
    old_record: Any = None,
    schema: str = "public",
) -> CapturedEvent:
    record = {"id": 1} if record is None else record
    return new_event(operation, table, record, old_record, schema, time.time())


def answer(status: int | None, body: str = "") -> AttemptResult:
    ok = status is not None and 200 <= status < 300
    return AttemptResult(status, body, None if ok else f"receiver answered {status}", 1.5)


def recorded(
    claimed: ClaimedDelivery,
    result: AttemptResult,
    owner: str = "w1",
    policy: RetryPolicy | None = None,
    decision: Decision | None = None,
) -> AttemptRecord:
    """The record a worker would write for ``result``, decided by ``policy``."""
    chosen = decision or (policy or RetryPolicy()).decide(claimed, result)
    return AttemptRecord(
        delivery_id=claimed.delivery_id,
        webhook_id=claimed.webhook_id,
        owner=owner,
        attempt=claimed.attempt,
        result=result,
        started_at=time.time(),
        decision=chosen,
    )


async def claim_all(
    store: SenderStore, owner: str = "w1", now: float | None = None
) -> list[ClaimedDelivery]:
    at = time.time() if now is None else now
    return await store.claim(owner, at, at, 100, 5.0)
