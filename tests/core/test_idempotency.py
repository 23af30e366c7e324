"""One contract, run against every idempotency store."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fluxbase_receiver import (
    ClaimState,
    MemoryIdempotencyStore,
    SQLiteIdempotencyStore,
    content_key,
    parse_event,
)


class Clock:
    """A hand-moved clock for the stores that take one; real sleeps for the others."""

    def __init__(self, scale: float = 0.0) -> None:
        self.now = 1_000.0
        self.scale = scale

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if self.scale:
            time.sleep(seconds * self.scale)
        else:
            self.now += seconds


class Facade:
    """One store seen through the blocking contract: TTLs scaled for real-time stores,
    async stores driven on a private event loop, keys made unique to the test."""

    def __init__(self, store: Any, scale: float = 1.0) -> None:
        self.store = store
        self.scale = scale
        self.prefix = uuid.uuid4().hex + ":"
        self.loop: asyncio.AbstractEventLoop | None = None
        if inspect.iscoroutinefunction(store.claim):
            self.loop = asyncio.new_event_loop()
            threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def _call(self, result: Any) -> Any:
        if self.loop is None:
            return result
        return asyncio.run_coroutine_threadsafe(result, self.loop).result(30)

    def claim(self, key: str, owner: str, lease: float) -> ClaimState:
        state: ClaimState = self._call(
            self.store.claim(self.prefix + key, owner, lease * self.scale)
        )
        return state

    def renew(self, key: str, owner: str, lease: float) -> bool:
        held: bool = self._call(self.store.renew(self.prefix + key, owner, lease * self.scale))
        return held

    def complete(self, key: str, owner: str, ttl: float) -> bool:
        done: bool = self._call(self.store.complete(self.prefix + key, owner, ttl * self.scale))
        return done

    def release(self, key: str, owner: str) -> None:
        self._call(self.store.release(self.prefix + key, owner))


StoreFactory = Callable[[], tuple[Facade, Clock]]
STORES = ["memory", "sqlite", "postgres", "postgres-async", "redis", "redis-async"]


@pytest.fixture(params=STORES)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    kind = request.param

    def make() -> tuple[Facade, Clock]:
        clock = Clock()
        if kind == "memory":
            return Facade(MemoryIdempotencyStore(clock=clock)), clock
        if kind == "sqlite":
            return Facade(SQLiteIdempotencyStore(tmp_path / "idem.db", clock=clock)), clock
        if kind.startswith("postgres"):
            from fluxbase_receiver.idempotency.postgres import (
                AsyncPostgresIdempotencyStore,
                PostgresIdempotencyStore,
            )

            url = request.getfixturevalue("postgres_url")
            cls = (
                AsyncPostgresIdempotencyStore
                if kind.endswith("async")
                else PostgresIdempotencyStore
            )
            return Facade(cls(url, clock=clock)), clock
        from fluxbase_receiver.idempotency.redis import (
            AsyncRedisIdempotencyStore,
            RedisIdempotencyStore,
        )

        url = request.getfixturevalue("redis_url")
        real_time = Clock(scale=0.01)  # Redis expires keys on its own clock
        cls = AsyncRedisIdempotencyStore if kind.endswith("async") else RedisIdempotencyStore
        return Facade(cls(url), scale=0.01), real_time

    return make


def test_claim_complete_and_duplicate(make_store: StoreFactory) -> None:
    store, _ = make_store()
    assert store.claim("a", "me", 60) is ClaimState.NEW
    assert store.claim("a", "other", 60) is ClaimState.IN_PROGRESS
    assert store.claim("a", "me", 60) is ClaimState.IN_PROGRESS  # a claim is not re-entrant
    assert store.complete("a", "me", 3600) is True
    assert store.claim("a", "other", 60) is ClaimState.DONE
    assert store.claim("b", "other", 60) is ClaimState.NEW


def test_release_lets_the_next_delivery_run_again(make_store: StoreFactory) -> None:
    store, _ = make_store()
    assert store.claim("a", "me", 60) is ClaimState.NEW
    store.release("a", "me")
    assert store.claim("a", "next", 60) is ClaimState.NEW


def test_release_never_forgets_a_completed_key(make_store: StoreFactory) -> None:
    store, _ = make_store()
    store.claim("a", "me", 60)
    store.complete("a", "me", 3600)
    store.release("a", "me")
    assert store.claim("a", "other", 60) is ClaimState.DONE


def test_only_the_owner_settles_or_renews_a_claim(make_store: StoreFactory) -> None:
    store, _ = make_store()
    assert store.claim("a", "me", 60) is ClaimState.NEW
    store.release("a", "intruder")
    assert store.renew("a", "intruder", 60) is False
    assert store.complete("a", "intruder", 3600) is False
    assert store.claim("a", "other", 60) is ClaimState.IN_PROGRESS
    assert store.complete("a", "me", 3600) is True
    assert store.renew("a", "me", 60) is False  # done, no longer a claim
    assert store.claim("a", "other", 60) is ClaimState.DONE


def test_claims_and_completions_expire(make_store: StoreFactory) -> None:
    store, clock = make_store()
    assert store.claim("crashed", "dead", 60) is ClaimState.NEW
    clock.advance(30)
    assert store.claim("crashed", "next", 60) is ClaimState.IN_PROGRESS
    clock.advance(50)
    assert store.claim("crashed", "next", 60) is ClaimState.NEW  # the lapsed claim is taken over
    assert store.complete("crashed", "next", 100) is True
    clock.advance(50)
    assert store.claim("crashed", "later", 60) is ClaimState.DONE
    clock.advance(80)
    assert store.claim("crashed", "later", 60) is ClaimState.NEW


def test_renewal_keeps_a_claim_alive(make_store: StoreFactory) -> None:
    store, clock = make_store()
    assert store.claim("slow", "me", 60) is ClaimState.NEW
    for _ in range(3):
        clock.advance(35)
        assert store.renew("slow", "me", 60) is True
    assert store.claim("slow", "other", 60) is ClaimState.IN_PROGRESS
    assert store.complete("slow", "me", 3600) is True


def test_a_claimant_that_outlived_its_lease_cannot_touch_the_next_claim(
    make_store: StoreFactory,
) -> None:
    store, clock = make_store()
    assert store.claim("k", "stale", 60) is ClaimState.NEW
    clock.advance(80)
    assert store.renew("k", "stale", 60) is False
    assert store.claim("k", "fresh", 60) is ClaimState.NEW
    assert store.complete("k", "stale", 3600) is False
    store.release("k", "stale")
    assert store.claim("k", "third", 60) is ClaimState.IN_PROGRESS  # fresh still holds it
    assert store.complete("k", "fresh", 3600) is True


def test_concurrent_claims_give_exactly_one_new(make_store: StoreFactory) -> None:
    store, _ = make_store()
    results: list[ClaimState] = []
    barrier = threading.Barrier(8)

    def claim(owner: str) -> None:
        barrier.wait()
        results.append(store.claim("contended", owner, 60))

    threads = [threading.Thread(target=claim, args=(f"owner-{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(ClaimState.NEW) == 1
    assert results.count(ClaimState.IN_PROGRESS) == 7


def test_memory_store_is_bounded_and_evicts_the_oldest() -> None:
    store = MemoryIdempotencyStore(max_entries=3)
    for key in "abcd":
        store.claim(key, "me", 60)
    assert len(store) == 3
    assert store.claim("a", "me", 60) is ClaimState.NEW  # evicted
    assert store.claim("d", "other", 60) is ClaimState.IN_PROGRESS
    with pytest.raises(ValueError):
        MemoryIdempotencyStore(max_entries=0)


CLAIMER = """
import sys
from fluxbase_receiver import SQLiteIdempotencyStore
store = SQLiteIdempotencyStore(sys.argv[1])
print(store.claim("shared-key", sys.argv[2], 60).value)
"""


def test_sqlite_store_is_shared_by_several_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    SQLiteIdempotencyStore(path)  # create the table before the race
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, path, f"owner-{n}"], stdout=subprocess.PIPE, text=True
        )
        for n in range(6)
    ]
    states = sorted(p.communicate(timeout=60)[0].strip() for p in processes)
    assert states == ["in_progress"] * 5 + ["new"]
    assert SQLiteIdempotencyStore(path).claim("shared-key", "me", 60) is ClaimState.IN_PROGRESS


def test_sqlite_store_upgrades_a_table_made_without_owners(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE fluxbase_idempotency "
            "(key TEXT PRIMARY KEY, state TEXT NOT NULL, expires_at REAL NOT NULL)"
        )
        db.execute("INSERT INTO fluxbase_idempotency VALUES ('old', 'done', 1e12)")
    store = SQLiteIdempotencyStore(path)
    assert store.claim("old", "me", 60) is ClaimState.DONE
    assert store.claim("new", "me", 60) is ClaimState.NEW
    assert store.complete("new", "me", 60) is True


def test_sqlite_store_refuses_unsafe_table_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SQLiteIdempotencyStore(tmp_path / "x.db", table="t; DROP TABLE users")


def _event(**fields: Any) -> Any:
    payload = {"event": "UPDATE", "table": "orders", "schema": "public", "record": {"id": 1}}
    payload.update(fields)
    return parse_event(payload)


def test_content_key_ignores_the_per_retry_timestamp() -> None:
    first = _event(timestamp="2025-11-02T10:30:00Z")
    retry = _event(timestamp="2025-11-02T10:31:00.5Z")
    assert content_key(first) == content_key(retry)


def test_content_key_distinguishes_content() -> None:
    keys = {
        content_key(e)
        for e in (
            _event(),
            _event(record={"id": 2}),
            _event(event="INSERT"),
            _event(table="other"),
            _event(schema="auth"),
            _event(webhook_id="w2"),
            _event(old_record={"id": 1}),
        )
    }
    assert len(keys) == 7


@pytest.mark.parametrize(
    "module, blocked, extra",
    [("redis", "redis", "redis"), ("postgres", "psycopg", "postgres")],
)
def test_shared_stores_name_their_extra_when_the_client_is_missing(
    module: str, blocked: str, extra: str
) -> None:
    code = (
        f"import sys; sys.modules[{blocked!r}] = None; "
        f"import fluxbase_receiver.idempotency.{module}"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert f"pip install 'fluxbase-receiver[{extra}]'" in last_line
