"""The contract every sender store keeps, run against each store.

Deliveries are driven by hand here (claim, then record a decided result) so that each
rule is seen on its own; end-to-end delivery over HTTP is tested elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

import pytest

from fluxbase_receiver.sender.backend import SenderStore
from fluxbase_receiver.sender.delivery import MAX_STORED_BODY
from fluxbase_receiver.sender.policy import Decision, RetryPolicy
from fluxbase_receiver.sender.worker import Worker
from tests.sender.stores import (
    answer,
    change,
    claim_all,
    make_hook,
    postgres_store,
    recorded,
    respec,
    sqlite_store,
)
from tests.servers import run_asgi

pytestmark = pytest.mark.anyio

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest) -> Any:
    """``open_store(**options)``: an async context manager giving an opened store."""
    if request.param == "sqlite":
        tmp_path = request.getfixturevalue("tmp_path")

        def on_file(**options: Any) -> AbstractAsyncContextManager[SenderStore]:
            return sqlite_store(tmp_path, **options)

        return on_file
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")

        def factory(**options: Any) -> AbstractAsyncContextManager[SenderStore]:
            return postgres_store(url, **options)

        return factory
    raise AssertionError(request.param)


@pytest.fixture
async def store(open_store: Any) -> AsyncIterator[SenderStore]:
    async with open_store() as opened:
        yield opened


# -- webhooks ---------------------------------------------------------------------------


async def test_webhooks_round_trip(store: SenderStore) -> None:
    created = await make_hook(
        store,
        name="orders",
        description="to the shop",
        events=[{"table": "public.orders", "operations": ["INSERT"]}],
        headers={"X-Tenant": "acme"},
        max_retries=5,
        timeout_seconds=2.5,
        scope="global",
    )
    fetched = await store.get_webhook(created.id)
    assert fetched == created
    assert created.secret.get_secret_value() == "s3cret"
    assert (created.max_retries, created.timeout_seconds, created.scope) == (5, 2.5, "global")
    assert created.headers == {"X-Tenant": "acme"}
    assert [f.table for f in created.events] == ["public.orders"]

    second = await make_hook(store, name="second")
    assert [w.id for w in await store.list_webhooks()] == [created.id, second.id]

    spec = respec(created, name="renamed", enabled=False)
    updated = await store.update_webhook(created.id, spec, time.time())
    assert updated is not None and updated.name == "renamed" and not updated.enabled
    assert updated.created_at == created.created_at and updated.updated_at >= created.updated_at

    assert await store.update_webhook("missing", spec, time.time()) is None
    assert await store.get_webhook("missing") is None
    assert await store.delete_webhook(created.id)
    assert not await store.delete_webhook(created.id)
    assert [w.id for w in await store.list_webhooks()] == [second.id]


# -- fan-out ----------------------------------------------------------------------------


async def test_fan_out_matches_tables_schemas_and_operations(store: SenderStore) -> None:
    every = await make_hook(store, name="every")
    orders = await make_hook(store, name="orders", events=[{"table": "orders"}])
    public_orders = await make_hook(store, name="public", events=[{"table": "public.orders"}])
    auth_any = await make_hook(store, name="auth", events=[{"table": "auth.*"}])
    deletes = await make_hook(
        store, name="deletes", events=[{"table": "*", "operations": ["DELETE"]}]
    )
    off = await make_hook(store, name="off", enabled=False)

    async def hooks_for(*args: Any, **kwargs: Any) -> set[str]:
        ids = await store.add_event(change(*args, **kwargs))
        return {(await store.get_delivery(i)).webhook_id for i in ids}  # type: ignore[union-attr]

    assert await hooks_for("INSERT", "orders") == {every.id, orders.id, public_orders.id}
    assert await hooks_for("INSERT", "orders", schema="shop") == {every.id, orders.id}
    assert await hooks_for("UPDATE", "users", schema="auth") == {every.id, auth_any.id}
    assert await hooks_for("DELETE", "items") == {every.id, deletes.id}
    assert off.id not in await hooks_for("INSERT", "anything")

    await store.delete_webhook(every.id)
    assert await store.add_event(change("INSERT", "nothing_matches")) == []


async def test_deliveries_carry_their_event(store: SenderStore) -> None:
    hook = await make_hook(store)
    event = change("UPDATE", record={"id": 7, "qty": 2}, old_record={"id": 7, "qty": 1})
    (delivery_id,) = await store.add_event(event)
    delivery = await store.get_delivery(delivery_id)
    assert delivery is not None
    assert (delivery.event_id, delivery.event, delivery.table, delivery.schema_name) == (
        event.id,
        "UPDATE",
        "orders",
        "public",
    )
    assert (delivery.status, delivery.attempts, delivery.webhook_id) == ("pending", 0, hook.id)
    assert delivery.payload is not None
    assert delivery.payload["record"] == {"id": 7, "qty": 2}
    assert delivery.payload["old_record"] == {"id": 7, "qty": 1}
    assert delivery.payload["id"] == event.id and delivery.payload["webhook_id"] == hook.id
    assert abs(delivery.created_at.timestamp() - event.occurred_at) < 1e-3


# -- claims and leases ------------------------------------------------------------------


async def test_a_claim_is_a_lease(store: SenderStore) -> None:
    hook = await make_hook(store, timeout_seconds=2)
    (delivery_id,) = await store.add_event(change())
    now = time.time()
    (claimed,) = await store.claim("w1", now, now, 10, 5.0)
    assert (claimed.delivery_id, claimed.attempt, claimed.max_attempts) == (delivery_id, 1, 4)
    assert (claimed.url, claimed.secret, claimed.webhook_id) == (
        "http://127.0.0.1:9/hook",
        "s3cret",
        hook.id,
    )
    assert claimed.event.record == '{"id": 1}' or claimed.event.record == '{"id":1}'
    assert await store.claim("w2", now, now, 10, 5.0) == [], "leased"
    assert await store.next_due() == pytest.approx(now + 2 + 5.0, abs=0.01)

    later = now + 7.5
    (taken_over,) = await store.claim("w2", later, later, 10, 5.0)
    assert taken_over.delivery_id == delivery_id and taken_over.attempt == 2
    (lost,) = await store.list_attempts(delivery_id)
    assert (lost.attempt, lost.outcome, lost.response_status) == (1, "failed", None)
    assert lost.error is not None and lost.error.startswith("worker lost: w1")
    delivery = await store.get_delivery(delivery_id)
    assert delivery is not None and (delivery.status, delivery.attempts) == ("pending", 2)


async def test_a_crash_loop_is_bounded_by_max_retries(store: SenderStore) -> None:
    """Each worker takes the lease and dies before recording anything."""
    await make_hook(store, timeout_seconds=1, max_retries=2)
    (delivery_id,) = await store.add_event(change())
    now = time.time()
    taken = 0
    while await store.claim(f"doomed-{taken}", now, now, 10, 0.0):
        taken += 1
        now += 2  # past the lease: the next worker finds it expired
        assert taken <= 10, "the delivery is leased again and again"
    assert taken == 3
    delivery = await store.get_delivery(delivery_id)
    assert delivery is not None
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 3, None)
    assert delivery.error is not None and delivery.error.startswith("worker lost")
    attempts = await store.list_attempts(delivery_id)
    assert [(a.attempt, a.outcome) for a in attempts] == [(n, "failed") for n in (1, 2, 3)]
    assert await store.backlog() == 0


async def test_claims_take_the_earliest_due_first_up_to_the_limit(store: SenderStore) -> None:
    await make_hook(store)
    ids = [(await store.add_event(change(record={"id": i})))[0] for i in range(5)]
    now = time.time()
    first = await store.claim("w1", now, now, 2, 5.0)
    rest = await store.claim("w2", now, now, 10, 5.0)
    assert [c.delivery_id for c in first] == ids[:2]
    assert [c.delivery_id for c in rest] == ids[2:]
    assert await store.claim("w3", now, now - 3600, 10, 5.0) == [], "nothing due that early"


async def test_a_success_is_recorded_once(store: SenderStore) -> None:
    await make_hook(store, timeout_seconds=1)
    (delivery_id,) = await store.add_event(change())
    now = time.time()
    (first,) = await store.claim("w1", now, now, 10, 0.0)
    (second,) = await store.claim("w2", now + 2, now + 2, 10, 0.0)

    assert await store.record_attempts([recorded(second, answer(200), "w2")]) == ["success"]
    assert await store.record_attempts([recorded(first, answer(200), "w1")]) == ["superseded"]
    assert await store.record_attempts([recorded(first, answer(500), "w1")]) == ["failed"]

    delivery = await store.get_delivery(delivery_id)
    assert delivery is not None
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("success", 2, 200)
    assert delivery.next_attempt_at is None and delivery.delivered_at is not None
    outcomes = [(a.attempt, a.outcome) for a in await store.list_attempts(delivery_id)]
    assert outcomes == [(1, "failed"), (2, "success"), (1, "superseded"), (1, "failed")]
    assert await store.next_due() is None and await store.backlog() == 0


async def test_a_failure_after_the_lease_moved_on_changes_nothing(store: SenderStore) -> None:
    await make_hook(store, timeout_seconds=1)
    (delivery_id,) = await store.add_event(change())
    now = time.time()
    (stale,) = await store.claim("w1", now, now, 10, 0.0)
    await store.claim("w2", now + 2, now + 2, 10, 0.0)
    await store.record_attempts([recorded(stale, answer(500), "w1")])
    delivery = await store.get_delivery(delivery_id)
    assert delivery is not None and (delivery.status, delivery.attempts) == ("pending", 2)
    assert delivery.error is not None and delivery.error.startswith("worker lost")


async def test_a_retry_waits_until_it_is_due(store: SenderStore) -> None:
    await make_hook(store)
    (delivery_id,) = await store.add_event(change())
    (claimed,) = await claim_all(store)
    retry_at = time.time() + 600
    decision = Decision("retrying", retry_at, time.time())
    await store.record_attempts([recorded(claimed, answer(503, "busy"), decision=decision)])

    delivery = await store.get_delivery(delivery_id)
    assert delivery is not None
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("retrying", 1, 503)
    assert delivery.response_body == "busy" and delivery.error == "receiver answered 503"
    assert delivery.next_attempt_at is not None
    assert delivery.next_attempt_at.timestamp() == pytest.approx(retry_at, abs=0.01)
    assert await claim_all(store) == []
    assert await store.next_due() == pytest.approx(retry_at, abs=0.01)
    (again,) = await claim_all(store, now=retry_at)
    assert again.attempt == 2 and again.in_progress_answers == 0


async def test_in_progress_answers_are_kept_apart(store: SenderStore) -> None:
    await make_hook(store)
    await store.add_event(change())
    policy = RetryPolicy(clock=time.time)
    (claimed,) = await claim_all(store)
    await store.record_attempts([recorded(claimed, answer(409), policy=policy)])
    (again,) = await claim_all(store, now=time.time() + 3600)
    assert (again.attempt, again.in_progress_answers) == (2, 1)


async def test_a_final_failure(store: SenderStore) -> None:
    await make_hook(store, max_retries=0)
    (delivery_id,) = await store.add_event(change())
    (claimed,) = await claim_all(store)
    assert claimed.max_attempts == 1
    await store.record_attempts([recorded(claimed, answer(500, "x" * (3 * MAX_STORED_BODY)))])
    delivery = await store.get_delivery(delivery_id)
    assert delivery is not None and delivery.status == "failed"
    assert delivery.response_body == "x" * MAX_STORED_BODY
    assert delivery.next_attempt_at is None
    (attempt,) = await store.list_attempts(delivery_id)
    assert (attempt.attempt, attempt.outcome, attempt.response_status) == (1, "failed", 500)
    assert attempt.response_body == "x" * MAX_STORED_BODY and attempt.duration_ms == 1.5


async def test_a_batch_is_recorded_together(store: SenderStore) -> None:
    await make_hook(store)
    ids = [(await store.add_event(change(record={"id": i})))[0] for i in range(6)]
    claimed = await claim_all(store)
    results = [answer(200), answer(500), answer(200), answer(410), answer(200), answer(None)]
    outcomes = await store.record_attempts(
        [recorded(c, r) for c, r in zip(claimed, results, strict=True)]
    )
    assert outcomes == ["success", "failed", "success", "failed", "success", "failed"]
    statuses = [(await store.get_delivery(i)).status for i in ids]  # type: ignore[union-attr]
    assert statuses == ["success", "retrying", "success", "failed", "success", "retrying"]


# -- webhooks failing and disabled ------------------------------------------------------


async def test_disabling_pauses_the_webhooks_work(store: SenderStore) -> None:
    hook = await make_hook(store)
    first, second = [(await store.add_event(change(record={"id": i})))[0] for i in (1, 2)]
    (claimed, _) = await claim_all(store)
    await store.record_attempts([recorded(claimed, answer(410))])

    webhook = await store.get_webhook(hook.id)
    assert webhook is not None and not webhook.enabled
    assert webhook.disabled_reason == "the receiver answered 410 Gone"
    delivery = await store.get_delivery(first)
    assert delivery is not None and delivery.status == "failed"
    assert await store.add_event(change()) == [], "no fan-out to a disabled webhook"
    later = time.time() + 3600
    assert await store.claim("w2", later, later, 10, 5.0) == [], "paused"
    assert await store.next_due() is None
    assert await store.backlog() == 1

    spec = respec(webhook, enabled=True)
    enabled = await store.update_webhook(hook.id, spec, time.time())
    assert enabled is not None and enabled.enabled and enabled.disabled_reason is None
    (resumed,) = await store.claim("w2", later, later, 10, 5.0)
    assert resumed.delivery_id == second


async def test_a_run_of_failures_is_tracked_and_a_success_ends_it(store: SenderStore) -> None:
    await make_hook(store)
    first_id, second_id, third_id = [
        (await store.add_event(change(record={"id": i})))[0] for i in range(3)
    ]
    now = time.time()
    (first,) = await store.claim("w1", now, now, 1, 5.0)
    await store.record_attempts([recorded(first, answer(500))])
    (second,) = await store.claim("w1", now, now, 1, 5.0)
    assert second.delivery_id == second_id
    assert second.failing_since is not None and second.failing_since >= now - 1
    await store.record_attempts([recorded(second, answer(200))])
    (third,) = await store.claim("w1", now, now, 1, 5.0)
    assert third.delivery_id == third_id and third.failing_since is None
    assert first.delivery_id == first_id


async def test_failing_for_the_whole_period_disables(store: SenderStore) -> None:
    hook = await make_hook(store)
    await store.add_event(change())
    (claimed,) = await claim_all(store)
    policy = RetryPolicy(disable_after=timedelta(0))
    await store.record_attempts([recorded(claimed, answer(500), policy=policy)])
    webhook = await store.get_webhook(hook.id)
    assert webhook is not None and not webhook.enabled
    assert webhook.disabled_reason == "every attempt failed for 0:00:00"


# -- ordering per row -------------------------------------------------------------------


async def test_a_later_change_waits_while_an_earlier_one_retries(store: SenderStore) -> None:
    await make_hook(store)
    insert = (await store.add_event(change("INSERT", record={"id": 1})))[0]
    update = (await store.add_event(change("UPDATE", record={"id": 1, "v": 2})))[0]
    delete = (await store.add_event(change("DELETE", record={"id": 1})))[0]
    other = (await store.add_event(change("INSERT", record={"id": 2})))[0]

    first = await claim_all(store)
    assert [c.delivery_id for c in first] == [insert, other]
    soon = time.time() + 0.5
    decision = Decision("retrying", soon, time.time())
    await store.record_attempts([recorded(first[0], answer(500), decision=decision)])
    await store.record_attempts([recorded(first[1], answer(200))])
    (retry,) = await claim_all(store, now=soon + 1)
    assert retry.delivery_id == insert, "the update still waits"
    await store.record_attempts([recorded(retry, answer(200))])

    (next_one,) = await claim_all(store, now=soon + 1)
    assert next_one.delivery_id == update
    await store.record_attempts(
        [recorded(next_one, answer(500), decision=Decision("failed", None, time.time()))]
    )
    (last,) = await claim_all(store, now=soon + 1)
    assert last.delivery_id == delete, "a final failure lets the next change go"


async def test_rows_without_an_id_are_ordered_by_table(store: SenderStore) -> None:
    await make_hook(store)
    first = (await store.add_event(change("INSERT", "log", record={"line": "a"})))[0]
    await store.add_event(change("INSERT", "log", record={"line": "b"}))
    assert [c.delivery_id for c in await claim_all(store)] == [first]


async def test_ordering_none_sends_as_soon_as_due(open_store: Any) -> None:
    async with open_store(ordering="none") as store:
        await make_hook(store)
        ids = [
            (await store.add_event(change(op, record={"id": 1})))[0] for op in ("INSERT", "UPDATE")
        ]
        assert [c.delivery_id for c in await claim_all(store)] == ids


async def test_each_webhook_has_its_own_order(store: SenderStore) -> None:
    await make_hook(store, name="a")
    await make_hook(store, name="b")
    first = await store.add_event(change("INSERT"))
    await store.add_event(change("UPDATE"))
    assert {c.delivery_id for c in await claim_all(store)} == set(first)


# -- history and operators --------------------------------------------------------------


async def test_history_newest_first_per_webhook_and_paged(store: SenderStore) -> None:
    a = await make_hook(store, name="a", events=[{"table": "a"}])
    b = await make_hook(store, name="b", events=[{"table": "b"}])
    a_ids = [(await store.add_event(change(table="a", record={"id": i})))[0] for i in range(3)]
    b_ids = await store.add_event(change(table="b"))
    assert [d.id for d in await store.list_deliveries(a.id, 10, 0)] == a_ids[::-1]
    assert [d.id for d in await store.list_deliveries(a.id, 1, 1)] == [a_ids[1]]
    assert [d.id for d in await store.list_deliveries(b.id, 10, 0)] == b_ids
    assert [d.id for d in await store.list_deliveries(None, 2, 0)] == [b_ids[0], a_ids[2]]
    assert await store.get_delivery("missing") is None
    assert await store.list_attempts("missing") == []


async def test_redeliver_queues_the_same_event_again(store: SenderStore) -> None:
    await make_hook(store)
    (original,) = await store.add_event(change())
    (claimed,) = await claim_all(store)
    await store.record_attempts([recorded(claimed, answer(200))])

    again = await store.redeliver(original, time.time())
    assert again is not None and again != original
    delivery = await store.get_delivery(again)
    first = await store.get_delivery(original)
    assert delivery is not None and first is not None
    assert (delivery.status, delivery.event_id) == ("pending", first.event_id)
    (reclaimed,) = await claim_all(store)
    assert reclaimed.delivery_id == again and reclaimed.attempt == 1
    assert await store.redeliver("missing", time.time()) is None


async def test_recover_requeues_failed_deliveries_since(store: SenderStore) -> None:
    await make_hook(store, max_retries=0)
    ids = [(await store.add_event(change(record={"id": i})))[0] for i in range(2)]
    for claimed in await claim_all(store):
        await store.record_attempts([recorded(claimed, answer(500))])
    assert await store.recover(time.time() + 60, time.time()) == 0
    assert await store.recover(time.time() - 60, time.time()) == 2
    claimed = await claim_all(store)
    assert sorted(c.delivery_id for c in claimed) == sorted(ids)
    assert {c.attempt for c in claimed} == {1}


async def test_prune_removes_finished_history_only(store: SenderStore) -> None:
    await make_hook(store)
    done, waiting = [(await store.add_event(change(record={"id": i})))[0] for i in range(2)]
    first, second = await claim_all(store)
    await store.record_attempts([recorded(first, answer(200))])
    decision = Decision("retrying", time.time() + 3600, time.time())
    await store.record_attempts([recorded(second, answer(429), decision=decision)])

    assert await store.prune(time.time() - 3600) == 0
    assert await store.prune(time.time() + 1) == 1
    assert await store.get_delivery(done) is None and await store.list_attempts(done) == []
    left = await store.get_delivery(waiting)
    assert left is not None and left.status == "retrying"
    assert len(await store.list_attempts(waiting)) == 1


async def test_deleting_a_webhook_deletes_its_history(store: SenderStore) -> None:
    hook = await make_hook(store)
    (delivery_id,) = await store.add_event(change())
    (claimed,) = await claim_all(store)
    await store.record_attempts([recorded(claimed, answer(200))])
    assert await store.delete_webhook(hook.id)
    assert await store.get_delivery(delivery_id) is None
    assert await store.list_attempts(delivery_id) == []


async def test_a_test_send_reaches_a_disabled_or_unsubscribed_webhook(store: SenderStore) -> None:
    hook = await make_hook(store, enabled=False, events=[{"table": "orders"}], timeout_seconds=1)
    now = time.time()
    claimed = await store.add_test_delivery(change("INSERT", "test"), hook.id, "w1", now, 0.0)
    assert claimed is not None
    assert (claimed.attempt, claimed.max_attempts, claimed.webhook_id) == (1, 1, hook.id)
    assert claimed.event.table == "test"
    assert await claim_all(store) == [], "leased, and not in the due path"
    await store.record_attempts(
        [recorded(claimed, answer(500), decision=Decision("failed", None, now))]
    )
    delivery = await store.get_delivery(claimed.delivery_id)
    assert delivery is not None and (delivery.status, delivery.attempts) == ("failed", 1)
    assert await store.add_test_delivery(change(), "missing", "w1", now, 0.0) is None
    assert len(await store.list_deliveries(None, 10, 0)) == 1


async def test_an_abandoned_test_send_fails_when_its_lease_expires(store: SenderStore) -> None:
    hook = await make_hook(store, timeout_seconds=1)
    now = time.time()
    claimed = await store.add_test_delivery(change(), hook.id, "w1", now, 0.0)
    assert claimed is not None
    assert await store.claim("w2", now + 2, now + 2, 10, 0.0) == []
    delivery = await store.get_delivery(claimed.delivery_id)
    assert delivery is not None and delivery.status == "failed"


async def test_wake_ends_a_wait(store: SenderStore) -> None:
    store.wake()
    await store.wait_for_work(timeout=60)


# -- end to end: a worker over HTTP -----------------------------------------------------


class FirstInsertFails:
    """A receiver that answers 500 to the first attempt of each row's INSERT."""

    def __init__(self) -> None:
        self.failed: set[Any] = set()
        self.accepted: list[tuple[Any, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        event = json.loads(body)
        row = (event["record"] or event["old_record"])["id"]
        status = 200
        if event["event"] == "INSERT" and row not in self.failed:
            self.failed.add(row)
            status = 500
        else:
            self.accepted.append((row, event["event"]))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def test_row_order_holds_under_retries(store: SenderStore) -> None:
    receiver = FirstInsertFails()
    rows = range(12)
    with run_asgi(receiver) as base:
        await make_hook(store, url=f"{base}/hook", retry_backoff_seconds=0.01, timeout_seconds=5)
        for operation in ("INSERT", "UPDATE", "DELETE"):
            for row in rows:
                await store.add_event(change(operation, record={"id": row, "op": operation}))
        worker = Worker(store, concurrency=8, allow_private_networks=True, retention=None)
        deadline = time.monotonic() + 60
        while await store.backlog():
            assert time.monotonic() < deadline, "deliveries still pending"
            await worker.deliver_due()
            await asyncio.sleep(0.02)

    assert receiver.failed == set(rows), "every row's first change failed once"
    for row in rows:
        seen = [event for r, event in receiver.accepted if r == row]
        assert seen == ["INSERT", "UPDATE", "DELETE"], (row, seen)
    assert worker.totals.succeeded == 3 * len(rows) and worker.totals.retrying == len(rows)
