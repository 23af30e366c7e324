"""Claims under contention, on every store: concurrent duplicates, interrupted handlers,
and many processes creating a store's table at the same moment."""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxbase_receiver import (
    MemoryIdempotencyStore,
    Outcome,
    Receiver,
    SQLiteIdempotencyStore,
    sign_payload,
)

SECRET = "claims-test-secret"
STORES = ["memory", "sqlite", "postgres", "postgres-async", "redis", "redis-async"]
DUPLICATES = 16


def event(event_id: str | None = None, row: int = 1) -> tuple[bytes, dict[str, str]]:
    """A signed UPDATE (with ``id`` when given; without, as a Fluxbase server sends it)."""
    document: dict[str, Any] = {"event": "UPDATE", "table": "orders", "record": {"id": row}}
    if event_id is not None:
        document["id"] = event_id
    body = json.dumps(document).encode()
    return body, {
        "Content-Type": "application/json",
        "X-Fluxbase-Signature": sign_payload(body, SECRET),
    }


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh store of each kind (its own table or key prefix)."""
    kind: str = request.param
    name = f"claims_{uuid.uuid4().hex[:12]}"
    if kind == "memory":
        yield MemoryIdempotencyStore()
    elif kind == "sqlite":
        yield SQLiteIdempotencyStore(tmp_path / "claims.db", table=name)
    elif kind.startswith("postgres"):
        import psycopg

        from fluxbase_receiver.idempotency.postgres import (
            AsyncPostgresIdempotencyStore,
            PostgresIdempotencyStore,
        )

        url = request.getfixturevalue("postgres_url")
        async_store = kind.endswith("async")
        yield (AsyncPostgresIdempotencyStore if async_store else PostgresIdempotencyStore)(
            url, table=name
        )
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {name}")
    else:
        from fluxbase_receiver.idempotency.redis import (
            AsyncRedisIdempotencyStore,
            RedisIdempotencyStore,
        )

        url = request.getfixturevalue("redis_url")
        cls = AsyncRedisIdempotencyStore if kind.endswith("async") else RedisIdempotencyStore
        yield cls(url, prefix=name + ":")


def is_async(store: Any) -> bool:
    return inspect.iscoroutinefunction(store.claim)


def test_concurrent_duplicates_run_the_handler_once(store: Any) -> None:
    """16 deliveries of one event id at once: one runs, the others are told to retry (409)."""
    receiver = Receiver(SECRET, idempotency=store)
    runs: list[int] = []
    body, headers = event(f"evt-{uuid.uuid4().hex}")
    deliver = _async_duplicates if is_async(store) else _threaded_duplicates
    statuses, again = deliver(receiver, runs, body, headers)
    assert runs == [1]
    assert Counter(statuses) == {200: 1, 409: DUPLICATES - 1}
    assert again.body == {"ok": True, "duplicate": True}  # afterwards the event is done


Deliveries = tuple[list[int], Outcome]
"""The statuses of the simultaneous deliveries, and the answer to one more afterwards."""


def _threaded_duplicates(
    receiver: Receiver, runs: list[int], body: bytes, headers: dict[str, str]
) -> Deliveries:
    refused = threading.Semaphore(0)

    @receiver.on("orders")
    def handler(event: Any) -> None:
        runs.append(1)
        if len(runs) == 1:  # hold the claim until every other delivery has its answer
            for _ in range(DUPLICATES - 1):
                assert refused.acquire(timeout=30)

    barrier = threading.Barrier(DUPLICATES)
    statuses: list[int] = []

    def deliver() -> None:
        barrier.wait()
        outcome = receiver.handle(body, headers)
        statuses.append(outcome.status)
        if outcome.status != 200:
            refused.release()

    threads = [threading.Thread(target=deliver) for _ in range(DUPLICATES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses, receiver.handle(body, headers)


def _async_duplicates(
    receiver: Receiver, runs: list[int], body: bytes, headers: dict[str, str]
) -> Deliveries:
    """The same on one event loop (an async store's client belongs to one loop)."""
    return asyncio.run(_gathered(receiver, runs, body, headers))


async def _gathered(
    receiver: Receiver, runs: list[int], body: bytes, headers: dict[str, str]
) -> Deliveries:
    answered = 0
    others_answered = asyncio.Event()

    @receiver.on("orders")
    async def handler(event: Any) -> None:
        runs.append(1)
        await asyncio.wait_for(others_answered.wait(), 30)

    async def deliver() -> int:
        nonlocal answered
        outcome = await receiver.handle_async(body, headers)
        if outcome.status != 200:
            answered += 1
            if answered == DUPLICATES - 1:
                others_answered.set()
        return outcome.status

    statuses = list(await asyncio.gather(*(deliver() for _ in range(DUPLICATES))))
    return statuses, await receiver.handle_async(body, headers)


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit, asyncio.CancelledError])
def test_an_interrupted_handler_releases_its_claim(
    store: Any, interrupt: type[BaseException]
) -> None:
    """The interrupt propagates, and the claim is gone at once: the retry runs the handler."""
    receiver = Receiver(SECRET, idempotency=store)
    calls: list[str] = []

    def body_of_handler() -> None:
        calls.append("ran")
        if len(calls) == 1:
            raise interrupt

    body, headers = event(f"evt-{uuid.uuid4().hex}")
    if is_async(store):

        @receiver.on("orders")
        async def async_handler(event: Any) -> None:
            body_of_handler()

        async def main() -> tuple[bool, Outcome]:
            try:
                await receiver.handle_async(body, headers)
            except interrupt:
                raised = True
            else:
                raised = False
            return raised, await receiver.handle_async(body, headers)

        raised, retry = asyncio.run(main())
        assert raised
    else:
        receiver.on("orders")(lambda event: body_of_handler())
        with pytest.raises(interrupt):
            receiver.handle(body, headers)
        retry = receiver.handle(body, headers)
    assert retry.body == {"ok": True}
    assert calls == ["ran", "ran"]


CONSTRUCTOR = """
import sys, time
kind, target, table, start_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
if kind == "sqlite":
    from fluxbase_receiver import SQLiteIdempotencyStore as Store
else:
    from fluxbase_receiver.idempotency.postgres import PostgresIdempotencyStore as Store
time.sleep(max(0.0, start_at - time.time()))  # every process constructs at the same moment
store = Store(target, table=table)
print(store.claim("k", sys.argv[5], 60).value)
"""


def construct_at_once(kind: str, target: str, table: str, processes: int = 16) -> list[str]:
    """Start ``processes`` processes that all construct the store at one instant; their output."""
    start_at = time.time() + 4
    running = [
        subprocess.Popen(
            [sys.executable, "-c", CONSTRUCTOR, kind, target, table, str(start_at), f"o{n}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    results = [process.communicate(timeout=120) for process in running]
    errors = [err for (_, err), p in zip(results, running, strict=True) if p.returncode != 0]
    assert errors == []
    return sorted(out.strip() for out, _ in results)


def test_sixteen_processes_create_a_postgres_store_at_once(postgres_url: str) -> None:
    import psycopg

    table = f"claims_start_{uuid.uuid4().hex[:12]}"
    try:
        states = construct_at_once("postgres", postgres_url, table)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    assert states == ["in_progress"] * 15 + ["new"]


def test_sixteen_processes_create_a_sqlite_store_at_once(tmp_path: Path) -> None:
    states = construct_at_once("sqlite", str(tmp_path / "fresh.db"), "claims")
    assert states == ["in_progress"] * 15 + ["new"]


def test_id_less_duplicates_never_lose_a_change(store: Any) -> None:
    """Identical content from a Fluxbase server while the first is handled: 409, never a
    completed duplicate; once it is done, the same content runs again."""
    receiver = Receiver(SECRET, idempotency=store)
    runs: list[int] = []
    body, headers = event()  # no id: a Fluxbase server's event
    deliver = _async_duplicates if is_async(store) else _threaded_duplicates
    statuses, later = deliver(receiver, runs, body, headers)
    assert Counter(statuses) == {200: 1, 409: DUPLICATES - 1}
    assert later.body == {"ok": True}
    assert runs == [1, 1]
