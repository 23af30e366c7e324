"""One contract, run against every idempotency store."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxbase_receiver import (
    ClaimState,
    IdempotencyStore,
    MemoryIdempotencyStore,
    SQLiteIdempotencyStore,
    default_idempotency_key,
    parse_event,
)


class Clock:
    """A hand-moved clock shared by a store under test."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


StoreFactory = Callable[[Clock], IdempotencyStore]


def memory_store(clock: Clock) -> IdempotencyStore:
    return MemoryIdempotencyStore(clock=clock)


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    if request.param == "memory":
        yield memory_store
    else:
        yield lambda clock: SQLiteIdempotencyStore(tmp_path / "idem.db", clock=clock)


def test_claim_complete_and_duplicate(make_store: StoreFactory) -> None:
    store = make_store(Clock())
    assert store.claim("a", 60) is ClaimState.NEW
    assert store.claim("a", 60) is ClaimState.IN_PROGRESS
    store.complete("a", 3600)
    assert store.claim("a", 60) is ClaimState.DONE
    assert store.claim("b", 60) is ClaimState.NEW


def test_release_lets_the_next_delivery_run_again(make_store: StoreFactory) -> None:
    store = make_store(Clock())
    assert store.claim("a", 60) is ClaimState.NEW
    store.release("a")
    assert store.claim("a", 60) is ClaimState.NEW


def test_release_never_forgets_a_completed_key(make_store: StoreFactory) -> None:
    store = make_store(Clock())
    store.claim("a", 60)
    store.complete("a", 3600)
    store.release("a")
    assert store.claim("a", 60) is ClaimState.DONE


def test_claims_and_completions_expire(make_store: StoreFactory) -> None:
    clock = Clock()
    store = make_store(clock)
    assert store.claim("crashed", 60) is ClaimState.NEW
    clock.now += 59
    assert store.claim("crashed", 60) is ClaimState.IN_PROGRESS
    clock.now += 2
    assert store.claim("crashed", 60) is ClaimState.NEW  # the stale claim is taken over
    store.complete("crashed", 100)
    clock.now += 99
    assert store.claim("crashed", 60) is ClaimState.DONE
    clock.now += 2
    assert store.claim("crashed", 60) is ClaimState.NEW


def test_concurrent_claims_give_exactly_one_new(make_store: StoreFactory) -> None:
    store = make_store(Clock())
    results: list[ClaimState] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        results.append(store.claim("contended", 60))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(ClaimState.NEW) == 1
    assert results.count(ClaimState.IN_PROGRESS) == 7


def test_memory_store_is_bounded_and_evicts_the_oldest() -> None:
    store = MemoryIdempotencyStore(max_entries=3)
    for key in "abcd":
        store.claim(key, 60)
    assert len(store) == 3
    assert store.claim("a", 60) is ClaimState.NEW  # evicted
    assert store.claim("d", 60) is ClaimState.IN_PROGRESS
    with pytest.raises(ValueError):
        MemoryIdempotencyStore(max_entries=0)


CLAIMER = """
import sys
from fluxbase_receiver import SQLiteIdempotencyStore
store = SQLiteIdempotencyStore(sys.argv[1])
print(store.claim("shared-key", 60).value)
"""


def test_sqlite_store_is_shared_by_several_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    SQLiteIdempotencyStore(path)  # create the table before the race
    processes = [
        subprocess.Popen([sys.executable, "-c", CLAIMER, path], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    states = sorted(p.communicate(timeout=60)[0].strip() for p in processes)
    assert states == ["in_progress"] * 5 + ["new"]
    assert SQLiteIdempotencyStore(path).claim("shared-key", 60) is ClaimState.IN_PROGRESS


def test_sqlite_store_refuses_unsafe_table_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SQLiteIdempotencyStore(tmp_path / "x.db", table="t; DROP TABLE users")


def _event(**fields: Any) -> Any:
    payload = {"event": "UPDATE", "table": "orders", "schema": "public", "record": {"id": 1}}
    payload.update(fields)
    return parse_event(payload)


def test_default_key_ignores_the_per_retry_timestamp() -> None:
    first = _event(timestamp="2025-11-02T10:30:00Z")
    retry = _event(timestamp="2025-11-02T10:31:00.5Z")
    assert default_idempotency_key(first) == default_idempotency_key(retry)


def test_default_key_prefers_the_event_id_and_distinguishes_content() -> None:
    assert default_idempotency_key(_event(id="evt_1")) == "id:evt_1"
    keys = {
        default_idempotency_key(e)
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


def test_test_events_are_never_deduplicated() -> None:
    assert (
        default_idempotency_key(
            parse_event(b'{"event":"TEST","table":"test","record":{"test":true}}')
        )
        is None
    )
