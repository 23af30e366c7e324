"""The receiving pipeline: every status of the design's table, dispatch and idempotency."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from fluxbase_receiver import (
    Admitted,
    HandlerError,
    InsertEvent,
    Outcome,
    Receiver,
    SQLiteIdempotencyStore,
    TestEvent,
    UpdateEvent,
    sign_legacy,
    sign_payload,
)

SECRET = "whsec-test-secret"
NOW = 1_762_079_400


def payload(
    event: str = "INSERT", table: str = "users", schema: str = "public", **extra: Any
) -> bytes:
    record = extra.pop("record", {"id": 1, "email": "a@example.com"})
    fields = {"event": event, "table": table, "schema": schema, "record": record, **extra}
    return json.dumps(fields).encode()


def signed(body: bytes, secret: str = SECRET, timestamp: int = NOW) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Fluxbase-Signature": sign_payload(body, secret, timestamp=timestamp),
    }


def make_receiver(**options: Any) -> Receiver:
    options.setdefault("clock", lambda: NOW)
    return Receiver(SECRET, **options)


def assert_refused(outcome: Outcome, status: int, code: str) -> None:
    assert outcome.status == status
    assert outcome.body["error"] == code
    assert isinstance(outcome.body["message"], str) and outcome.body["message"]
    assert not outcome.ok
    assert json.loads(outcome.body_bytes()) == outcome.body


def test_accepted_event_runs_the_handler_once_and_answers_200() -> None:
    receiver = make_receiver()
    seen: list[Any] = []
    receiver.on("users", "INSERT")(seen.append)
    body = payload()
    outcome = receiver.handle(body, signed(body))
    assert outcome.status == 200 and outcome.body == {"ok": True}
    assert isinstance(outcome.event, InsertEvent)
    assert [e.record for e in seen] == [{"id": 1, "email": "a@example.com"}]


def test_duplicate_of_a_completed_event_answers_200_without_running_handlers() -> None:
    receiver = make_receiver()
    seen: list[Any] = []
    receiver.on()(seen.append)
    body = payload(id="evt_1", timestamp="2025-11-02T10:30:00Z")
    assert receiver.handle(body, signed(body)).body == {"ok": True}
    # A retry with the same id (new signature, even a new timestamp) is the same event.
    retry = payload(id="evt_1", timestamp="2025-11-02T10:30:05Z")
    outcome = receiver.handle(retry, signed(retry, timestamp=NOW + 5))
    assert outcome.status == 200 and outcome.body == {"ok": True, "duplicate": True}
    assert len(seen) == 1


def test_not_post_is_405() -> None:
    receiver = make_receiver()
    for method in ("GET", "PUT", "delete"):
        assert_refused(receiver.handle(b"", {}, method), 405, "method_not_allowed")
    assert receiver.precheck("GET", {}) is not None
    assert receiver.precheck("post", {"content-type": "application/json"}) is None


def test_body_over_the_limit_is_413_before_and_after_reading() -> None:
    receiver = make_receiver(max_body_bytes=100)
    body = payload(record={"x": "y" * 200})
    assert_refused(receiver.handle(body, signed(body)), 413, "payload_too_large")
    precheck = receiver.precheck("POST", {"Content-Length": "101"})
    assert precheck is not None
    assert_refused(precheck, 413, "payload_too_large")
    assert receiver.precheck("POST", {"Content-Length": "100"}) is None
    assert receiver.precheck("POST", {}, content_length=5000) is not None


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_content_type_present_and_not_json_is_415(content_type: str) -> None:
    receiver = make_receiver()
    body = payload()
    headers = {**signed(body), "Content-Type": content_type}
    assert_refused(receiver.handle(body, headers), 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/vnd.fluxbase+json",
    ],
)
def test_json_or_absent_content_type_is_accepted(content_type: str | None) -> None:
    receiver = make_receiver()
    body = payload()
    headers = signed(body)
    del headers["Content-Type"]
    if content_type is not None:
        headers["content-type"] = content_type
    assert receiver.handle(body, headers).status == 200


@pytest.mark.parametrize(
    "headers, code",
    [
        ({}, "missing_signature"),
        ({"X-Fluxbase-Signature": ""}, "missing_signature"),
        ({"X-Fluxbase-Signature": "v1=abc"}, "malformed_signature"),
        ({"X-Fluxbase-Signature": f"t={NOW}"}, "malformed_signature"),
        ({"X-Fluxbase-Signature": f"t={NOW},v1={'0' * 64}"}, "invalid_signature"),
    ],
)
def test_signature_problems_are_401(headers: dict[str, str], code: str) -> None:
    assert_refused(make_receiver().handle(payload(), headers), 401, code)


def test_stale_and_future_signatures_are_401() -> None:
    receiver = make_receiver()
    body = payload()
    assert_refused(
        receiver.handle(body, signed(body, timestamp=NOW - 301)), 401, "timestamp_outside_tolerance"
    )
    assert_refused(
        receiver.handle(body, signed(body, timestamp=NOW + 301)), 401, "timestamp_outside_tolerance"
    )
    assert make_receiver(tolerance=1000).handle(body, signed(body, timestamp=NOW - 900)).ok


def test_wrong_secret_and_tampered_body_are_401() -> None:
    receiver = make_receiver()
    body = payload()
    assert_refused(receiver.handle(body, signed(body, secret="other")), 401, "invalid_signature")
    assert_refused(receiver.handle(body + b" ", signed(body)), 401, "invalid_signature")


def test_rotation_accepts_old_and_new_secrets() -> None:
    receiver = Receiver(["new-secret", SECRET], clock=lambda: NOW, idempotency=False)
    body = payload()
    assert receiver.handle(body, signed(body)).ok
    assert receiver.handle(body, signed(body, secret="new-secret")).ok


def test_legacy_signature_only_when_opted_in() -> None:
    body = payload()
    legacy = {"X-Webhook-Signature": sign_legacy(body, SECRET)}
    assert_refused(make_receiver().handle(body, legacy), 401, "missing_signature")
    assert make_receiver(allow_legacy_signature=True).handle(body, legacy).ok
    forged = {"X-Webhook-Signature": "0" * 64}
    assert_refused(
        make_receiver(allow_legacy_signature=True).handle(body, forged), 401, "invalid_signature"
    )


def test_timestamped_signature_wins_over_legacy_when_both_are_sent() -> None:
    receiver = make_receiver(allow_legacy_signature=True)
    body = payload()
    headers = {
        "X-Webhook-Signature": sign_legacy(body, SECRET),
        **signed(body, timestamp=NOW - 1000),
    }
    assert_refused(receiver.handle(body, headers), 401, "timestamp_outside_tolerance")


@pytest.mark.parametrize(
    "body, code",
    [
        (b"not json", "invalid_payload"),
        (b'{"event":"TRUNCATE","table":"t","record":{}}', "invalid_payload"),
        (b'{"event":"INSERT","table":"t"}', "invalid_payload"),
        (b"", "invalid_payload"),
    ],
)
def test_bad_bodies_are_400(body: bytes, code: str) -> None:
    assert_refused(make_receiver().handle(body, signed(body)), 400, code)


def test_same_event_while_it_is_being_handled_is_409() -> None:
    receiver = make_receiver()
    started, finish = threading.Event(), threading.Event()

    @receiver.on()
    def slow(event: Any) -> None:
        started.set()
        finish.wait(10)

    body = payload()
    results: list[Outcome] = []
    worker = threading.Thread(target=lambda: results.append(receiver.handle(body, signed(body))))
    worker.start()
    assert started.wait(10)
    assert_refused(receiver.handle(body, signed(body)), 409, "event_in_progress")
    finish.set()
    worker.join()
    assert results[0].status == 200
    # Without an id, the same content afterwards may be a new change: it runs again.
    assert receiver.handle(body, signed(body)).body == {"ok": True}


def test_failing_handlers_are_aggregated_into_one_500_and_release_the_claim(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = make_receiver()
    calls: list[str] = []

    @receiver.on()
    def first(event: Any) -> None:
        calls.append("first")
        raise RuntimeError("database password is hunter2")

    @receiver.on()
    def second(event: Any) -> None:
        calls.append("second")

    @receiver.on()
    def third(event: Any) -> None:
        calls.append("third")
        raise KeyError("boom")

    body = payload()
    with caplog.at_level(logging.ERROR, logger="fluxbase_receiver"):
        outcome = receiver.handle(body, signed(body))
    assert_refused(outcome, 500, "handler_failed")
    assert "hunter2" not in outcome.body["message"]
    assert outcome.body["message"] == "2 of 3 handler(s) failed"
    assert isinstance(outcome.error, HandlerError)
    assert [type(e) for e in outcome.error.exceptions] == [RuntimeError, KeyError]
    assert calls == ["first", "second", "third"]
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2
    # The claim was released: the sender's retry runs every handler again.
    receiver.handle(body, signed(body))
    assert calls.count("second") == 2


def test_dispatch_by_table_schema_and_operation() -> None:
    receiver = make_receiver(idempotency=False)
    hits: dict[str, list[str]] = {}

    def track(name: str, *args: Any, **kwargs: Any) -> None:
        receiver.on(*args, **kwargs)(
            lambda e, name=name: hits.setdefault(name, []).append(f"{e.qualified_table}:{e.event}")
        )

    track("any")  # "*" with the default operations
    track("users", "users")
    track("users-update", "users", "update")
    track("auth.users", "auth.users")
    track("auth.*", "auth.*")
    track("tests", "*", "TEST")

    for event, table, schema in [
        ("INSERT", "users", "public"),
        ("UPDATE", "users", "auth"),
        ("DELETE", "orders", "auth"),
        ("TEST", "test", "public"),
    ]:
        body = payload(event, table, schema)
        assert receiver.handle(body, signed(body)).ok
    assert hits == {
        "any": ["public.users:INSERT", "auth.users:UPDATE", "auth.orders:DELETE"],
        "users": ["public.users:INSERT", "auth.users:UPDATE"],
        "users-update": ["auth.users:UPDATE"],
        "auth.users": ["auth.users:UPDATE"],
        "auth.*": ["auth.users:UPDATE", "auth.orders:DELETE"],
        "tests": ["public.test:TEST"],
    }


def test_events_with_no_matching_handler_are_acknowledged() -> None:
    body = payload("TEST", "test")
    assert make_receiver().handle(body, signed(body)).status == 200


def test_registration_refuses_unknown_operations_and_bad_tables() -> None:
    receiver = make_receiver()
    with pytest.raises(ValueError, match="TRUNCATE"):
        receiver.on("users", "TRUNCATE")
    for table in ("", "a.b.c"):
        with pytest.raises(ValueError):
            receiver.on(table)


class User(BaseModel):
    id: int
    email: str


def test_typed_handlers_get_events_of_their_model() -> None:
    receiver = make_receiver()
    typed: list[Any] = []
    plain: list[Any] = []
    receiver.on("users", model=User)(typed.append)
    receiver.on("users")(plain.append)
    body = payload("UPDATE", old_record={"id": 1, "email": "old@example.com"})
    assert receiver.handle(body, signed(body)).ok
    assert isinstance(typed[0], UpdateEvent) and typed[0].record == User(
        id=1, email="a@example.com"
    )
    assert typed[0].changes == {"email": ("old@example.com", "a@example.com")}
    assert plain[0].record == {"id": 1, "email": "a@example.com"}


def test_record_not_matching_a_handlers_model_is_400_and_runs_nothing() -> None:
    receiver = make_receiver()
    seen: list[Any] = []
    receiver.on("users", model=User)(seen.append)
    receiver.on("users")(seen.append)
    body = payload(record={"id": "x"})
    outcome = receiver.handle(body, signed(body))
    assert_refused(outcome, 400, "invalid_payload")
    assert "User" in outcome.body["message"]
    assert seen == []
    # Nothing was claimed: a corrected model handles the next delivery.


def test_headers_match_case_insensitively_in_any_container() -> None:
    receiver = make_receiver(idempotency=False)
    body = payload()
    header = sign_payload(body, SECRET, timestamp=NOW)
    for headers in (
        {"x-fluxbase-signature": header},
        {"X-FLUXBASE-SIGNATURE": header, "CONTENT-TYPE": "application/json"},
        [("X-Fluxbase-Signature", header), ("content-type", "application/json")],
    ):
        assert receiver.handle(body, headers).ok


def test_repeated_signature_headers_are_combined() -> None:
    receiver = make_receiver(idempotency=False)
    body = payload()
    real = sign_payload(body, SECRET, timestamp=NOW)
    headers = [("X-Fluxbase-Signature", f"t={NOW},v1={'0' * 64}"), ("x-fluxbase-signature", real)]
    assert receiver.handle(body, headers).ok


def test_async_handlers_run_from_the_sync_pipeline() -> None:
    receiver = make_receiver()
    seen: list[Any] = []

    @receiver.on()
    async def handler(event: Any) -> None:
        await asyncio.sleep(0)
        seen.append(event)

    body = payload()
    assert receiver.handle(body, signed(body)).ok
    assert len(seen) == 1


def test_handle_async_awaits_async_handlers_and_threads_sync_ones() -> None:
    receiver = make_receiver()
    threads: dict[str, int] = {}

    @receiver.on()
    async def async_handler(event: Any) -> None:
        threads["async"] = threading.get_ident()

    @receiver.on()
    def sync_handler(event: Any) -> None:
        threads["sync"] = threading.get_ident()

    @receiver.on(threaded=False)
    def inline_handler(event: Any) -> None:
        threads["inline"] = threading.get_ident()

    async def main() -> Outcome:
        threads["loop"] = threading.get_ident()
        body = payload()
        return await receiver.handle_async(body, signed(body))

    assert asyncio.run(main()).ok
    assert threads["async"] == threads["loop"] == threads["inline"]
    assert threads["sync"] != threads["loop"]


def test_handle_async_with_a_deadline_answers_202_and_finishes_in_the_background() -> None:
    receiver = make_receiver()
    done = asyncio.Event()
    runs: list[str] = []

    @receiver.on()
    async def slow(event: Any) -> None:
        await asyncio.sleep(0.2)
        runs.append("slow")
        done.set()

    async def main() -> tuple[Outcome, Outcome, Outcome]:
        body = payload(id="evt_1")
        first = await receiver.handle_async(body, signed(body), deadline=0.01)
        during = await receiver.handle_async(body, signed(body))
        await asyncio.wait_for(done.wait(), 10)
        await asyncio.sleep(0.01)
        after = await receiver.handle_async(body, signed(body))
        return first, during, after

    first, during, after = asyncio.run(main())
    assert first.status == 202 and first.body == {"ok": True, "accepted": True}
    assert during.status == 409
    assert after.body == {"ok": True, "duplicate": True}
    assert runs == ["slow"]


def test_fast_handlers_answer_200_within_the_deadline() -> None:
    receiver = make_receiver()
    receiver.on()(lambda event: None)

    async def main() -> Outcome:
        body = payload()
        return await receiver.handle_async(body, signed(body), deadline=5)

    assert asyncio.run(main()).status == 200


class AsyncMemoryStore:
    """An async store over the in-memory one, to exercise the async store path."""

    def __init__(self) -> None:
        from fluxbase_receiver import MemoryIdempotencyStore

        self.inner = MemoryIdempotencyStore()
        self.calls: list[str] = []

    async def claim(self, key: str, owner: str, lease: float) -> Any:
        self.calls.append("claim")
        return self.inner.claim(key, owner, lease)

    async def renew(self, key: str, owner: str, lease: float) -> bool:
        self.calls.append("renew")
        return self.inner.renew(key, owner, lease)

    async def complete(self, key: str, owner: str, ttl: float) -> bool:
        self.calls.append("complete")
        return self.inner.complete(key, owner, ttl)

    async def release(self, key: str, owner: str) -> None:
        self.calls.append("release")
        self.inner.release(key, owner)


def test_async_idempotency_stores_are_awaited() -> None:
    store = AsyncMemoryStore()
    receiver = make_receiver(idempotency=store)
    receiver.on()(lambda event: None)

    async def main() -> list[Outcome]:
        body = payload(id="evt_1")
        return [await receiver.handle_async(body, signed(body)) for _ in range(2)]

    first, second = asyncio.run(main())
    assert first.body == {"ok": True} and second.body["duplicate"] is True
    assert store.calls == ["claim", "complete", "claim"]


def test_an_explicit_empty_store_is_used() -> None:
    from fluxbase_receiver import MemoryIdempotencyStore

    store = MemoryIdempotencyStore()
    receiver = make_receiver(idempotency=store)
    assert receiver.store is store
    body = payload(id="evt_1")
    receiver.handle(body, signed(body))
    assert len(store) == 1
    assert receiver.handle(body, signed(body)).body["duplicate"] is True


def test_sqlite_store_dedupes_across_receivers(tmp_path: Any) -> None:
    path = tmp_path / "idem.db"
    first = make_receiver(idempotency=SQLiteIdempotencyStore(path))
    second = make_receiver(idempotency=SQLiteIdempotencyStore(path))
    body = payload(id="evt_1")
    assert first.handle(body, signed(body)).body == {"ok": True}
    assert second.handle(body, signed(body)).body == {"ok": True, "duplicate": True}


def test_custom_key_and_opting_out() -> None:
    seen: list[Any] = []
    by_email = make_receiver(key=lambda e: e.record.get("email"))
    by_email.on()(seen.append)
    for record in ({"id": 1, "email": "a"}, {"id": 2, "email": "a"}):
        body = payload(record=record)
        by_email.handle(body, signed(body))
    assert len(seen) == 1
    no_dedupe = make_receiver(idempotency=False)
    no_dedupe.on()(seen.append)
    body = payload()
    no_dedupe.handle(body, signed(body))
    no_dedupe.handle(body, signed(body))
    assert len(seen) == 3


def test_test_events_reach_handlers_every_time() -> None:
    receiver = make_receiver()
    seen: list[Any] = []
    receiver.on("*", "TEST")(seen.append)
    body = payload("TEST", "test", record={"test": True})
    receiver.handle(body, signed(body))
    receiver.handle(body, signed(body))
    assert len(seen) == 2 and isinstance(seen[0], TestEvent)


def test_the_clock_is_injectable_for_replays() -> None:
    body = payload()
    headers = signed(body, timestamp=1_000)
    assert Receiver(SECRET, clock=lambda: 1_100).handle(body, headers).ok
    assert Receiver(SECRET, clock=lambda: 5_000).handle(body, headers).status == 401


def test_refusals_never_log_or_return_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    receiver = make_receiver()
    body = payload()
    expected = sign_payload(body, SECRET, timestamp=NOW)
    with caplog.at_level(logging.DEBUG, logger="fluxbase_receiver"):
        outcome = receiver.handle(body, {"X-Fluxbase-Signature": f"t={NOW},v1={'1' * 64}"})
    text = caplog.text + json.dumps(outcome.body) + repr(receiver)
    assert SECRET not in text
    assert expected.split("v1=")[1] not in text


def test_configuration_errors_are_raised_at_construction() -> None:
    with pytest.raises(ValueError):
        Receiver("")
    with pytest.raises(ValueError):
        Receiver(SECRET, max_body_bytes=0)


def test_observers_see_each_handler_call_until_stopped() -> None:
    receiver = make_receiver(idempotency=False)
    seen: list[tuple[str, str]] = []

    @receiver.on("users")
    def first(event: Any) -> None: ...

    @receiver.on("*")
    async def second(event: Any) -> None: ...

    stop = receiver.observe(lambda handler, event: seen.append((handler.__name__, event.event)))
    body = payload()
    receiver.handle(body, signed(body))
    asyncio.run(receiver.handle_async(body, signed(body)))
    stop()
    stop()  # stopping twice is harmless
    receiver.handle(body, signed(body))
    assert seen == [("first", "INSERT"), ("second", "INSERT")] * 2


def test_process_refuses_an_async_store_before_running_any_handler() -> None:
    receiver = make_receiver(idempotency=AsyncMemoryStore())
    seen: list[Any] = []
    receiver.on()(seen.append)
    body = payload()
    admitted = asyncio.run(receiver.admit_async(body, signed(body)))
    assert not isinstance(admitted, Outcome)
    with pytest.raises(TypeError, match="process_async"):
        receiver.process(admitted)
    with pytest.raises(TypeError, match="settle_async"):
        receiver.settle(admitted, ok=True)
    assert seen == []


# -- at-least-once: events without an id are never answered as duplicates ---------------


def fluxbase_delivery(receiver: Receiver, body: bytes, attempt: int = 0) -> Outcome:
    """One POST as a Fluxbase server makes it: no id, a fresh signature per attempt."""
    return receiver.handle(body, signed(body, timestamp=NOW + attempt))


def test_a_flag_toggled_three_times_reaches_the_handler_three_times() -> None:
    receiver = make_receiver()
    seen: list[Any] = []
    receiver.on("users", "UPDATE")(seen.append)
    on = {"id": 1, "active": True}
    off = {"id": 1, "active": False}
    for n, (old, new) in enumerate([(on, off), (off, on), (on, off)]):
        body = payload("UPDATE", record=new, old_record=old)
        assert fluxbase_delivery(receiver, body, n).body == {"ok": True}
    assert [e.record["active"] for e in seen] == [False, True, False]


def test_insert_delete_and_re_insert_of_one_row_all_reach_the_handler() -> None:
    receiver = make_receiver()
    seen: list[str] = []
    receiver.on("users")(lambda event: seen.append(event.event))
    row = {"id": 7, "email": "a@example.com"}
    for n, body in enumerate(
        [
            payload("INSERT", record=row),
            payload("DELETE", record=row),
            payload("INSERT", record=row),
        ]
    ):
        assert fluxbase_delivery(receiver, body, n).body == {"ok": True}
    assert seen == ["INSERT", "DELETE", "INSERT"]


def test_an_event_id_in_the_header_deduplicates_when_the_body_has_none() -> None:
    receiver = make_receiver()
    seen: list[Any] = []
    receiver.on()(seen.append)
    body = payload()
    headers = {**signed(body), "X-Fluxbase-Event-Id": "evt_9"}
    assert receiver.handle(body, headers).body == {"ok": True}
    assert receiver.handle(body, headers).body == {"ok": True, "duplicate": True}
    other = {**signed(body), "x-fluxbase-event-id": "evt_10"}
    assert receiver.handle(body, other).body == {"ok": True}
    assert len(seen) == 2


def test_the_body_id_wins_over_the_header() -> None:
    receiver = make_receiver()
    body = payload(id="evt_1")
    assert receiver.handle(body, {**signed(body), "X-Fluxbase-Event-Id": "a"}).ok
    again = receiver.handle(body, {**signed(body), "X-Fluxbase-Event-Id": "b"})
    assert again.body == {"ok": True, "duplicate": True}


def test_very_long_ids_are_hashed_into_a_bounded_key() -> None:
    receiver = make_receiver()
    body = payload(id="x" * 10_000)
    admitted = receiver.admit(body, signed(body))
    assert not isinstance(admitted, Outcome) and admitted.key is not None
    assert len(admitted.key) < 100
    receiver.settle(admitted, ok=True)
    assert receiver.handle(body, signed(body)).body["duplicate"] is True


def test_content_dedupe_within_a_window_is_opt_in() -> None:
    from fluxbase_receiver import MemoryIdempotencyStore

    now = [0.0]
    store = MemoryIdempotencyStore(clock=lambda: now[0])
    receiver = make_receiver(idempotency=store, dedupe="content", window=60)
    seen: list[Any] = []
    receiver.on()(seen.append)
    body = payload()
    assert fluxbase_delivery(receiver, body, 0).body == {"ok": True}
    now[0] = 59.0  # a retry within the window is a duplicate ...
    assert fluxbase_delivery(receiver, body, 1).body == {"ok": True, "duplicate": True}
    now[0] = 61.0  # ... and the same content after it runs again
    assert fluxbase_delivery(receiver, body, 2).body == {"ok": True}
    assert len(seen) == 2


def test_content_dedupe_drops_a_real_change_that_repeats_within_the_window() -> None:
    """The documented hazard of dedupe="content": on -> off -> on -> off loses the last."""
    receiver = make_receiver(dedupe="content", window=3600)
    seen: list[Any] = []
    receiver.on()(seen.append)
    on, off = {"id": 1, "active": True}, {"id": 1, "active": False}
    answers = [
        fluxbase_delivery(receiver, payload("UPDATE", record=new, old_record=old), n).body
        for n, (old, new) in enumerate([(on, off), (off, on), (on, off)])
    ]
    assert answers[2] == {"ok": True, "duplicate": True}
    assert len(seen) == 2


def test_a_key_function_deduplicates_by_what_it_returns() -> None:
    receiver = make_receiver(
        key=lambda e: (
            f"{e.qualified_table}:{e.row['id']}:{e.row.get('updated_at')}"
            if e.row.get("updated_at")
            else None
        )
    )
    seen: list[Any] = []
    receiver.on()(seen.append)
    first = payload("UPDATE", record={"id": 1, "updated_at": "2025-11-02T10:30:00Z"})
    retry = payload("UPDATE", record={"id": 1, "updated_at": "2025-11-02T10:30:00Z"}, x=1)
    later = payload("UPDATE", record={"id": 1, "updated_at": "2025-11-02T10:31:00Z"})
    unkeyed = payload("UPDATE", record={"id": 1})
    answers = [fluxbase_delivery(receiver, b).body for b in (first, retry, later, unkeyed, unkeyed)]
    assert answers == [{"ok": True}, {"ok": True, "duplicate": True}] + [{"ok": True}] * 3
    assert len(seen) == 4


def test_a_failing_key_function_falls_back_to_the_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = make_receiver(key=lambda e: e.record["missing"])
    seen: list[Any] = []
    receiver.on()(seen.append)
    body = payload()
    with caplog.at_level(logging.ERROR, logger="fluxbase_receiver"):
        assert receiver.handle(body, signed(body)).body == {"ok": True}
        assert receiver.handle(body, signed(body)).body == {"ok": True}
    assert len(seen) == 2
    assert "key function failed" in caplog.text


@pytest.mark.parametrize(
    "options",
    [
        {"dedupe": "content"},
        {"dedupe": "content", "window": 0},
        {"window": 10},
        {"dedupe": "everything", "window": 10},
        {"processing_ttl": 0},
        {"done_ttl": -1},
    ],
)
def test_dedupe_options_are_checked_at_construction(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_receiver(**options)


id_less_events = st.lists(
    st.tuples(st.sampled_from(["INSERT", "UPDATE", "DELETE"]), st.integers(1, 3), st.booleans()),
    min_size=1,
    max_size=12,
)


@settings(max_examples=50, deadline=None)
@given(id_less_events)
def test_every_id_less_event_reaches_the_handler_however_often_its_content_repeats(
    changes: list[tuple[str, int, bool]],
) -> None:
    receiver = make_receiver()
    seen: list[tuple[str, Any]] = []
    receiver.on("users")(lambda e: seen.append((e.event, e.row)))
    for n, (operation, row_id, active) in enumerate(changes):
        body = payload(operation, record={"id": row_id, "active": active})
        assert fluxbase_delivery(receiver, body, n % 100).body == {"ok": True}
    assert seen == [(op, {"id": row_id, "active": active}) for op, row_id, active in changes]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["evt_a", "evt_b", "evt_c", "evt_d"]), min_size=1, max_size=16))
def test_each_event_id_runs_once_however_often_it_is_delivered(ids: list[str]) -> None:
    receiver = make_receiver()
    seen: list[str] = []
    receiver.on()(lambda e: seen.append(e.id))
    for event_id in ids:
        body = payload(id=event_id, timestamp="2025-11-02T10:30:00Z")
        receiver.handle(body, signed(body))
    assert sorted(seen) == sorted(set(ids))
    assert seen == list(dict.fromkeys(ids))


# -- settling a claim -------------------------------------------------------------------


def test_settle_completes_or_releases_once() -> None:
    receiver = make_receiver()
    body = payload(id="evt_1")
    admitted = receiver.admit(body, signed(body))
    assert not isinstance(admitted, Outcome) and admitted.owner is not None
    assert receiver.process(admitted, settle=False).ok
    assert_refused(receiver.handle(body, signed(body)), 409, "event_in_progress")
    receiver.settle(admitted, ok=False)
    receiver.settle(admitted, ok=True)  # already settled: nothing happens
    again = receiver.admit(body, signed(body))
    assert not isinstance(again, Outcome)
    receiver.settle(again, ok=True)
    assert receiver.handle(body, signed(body)).body["duplicate"] is True


def test_settle_async_awaits_an_async_store() -> None:
    store = AsyncMemoryStore()
    receiver = make_receiver(idempotency=store)

    async def main() -> Outcome:
        body = payload(id="evt_1")
        admitted = await receiver.admit_async(body, signed(body))
        assert not isinstance(admitted, Outcome)
        await receiver.process_async(admitted, settle=False)
        await receiver.settle_async(admitted, ok=True)
        await receiver.settle_async(admitted, ok=True)
        return await receiver.handle_async(body, signed(body))

    assert asyncio.run(main()).body["duplicate"] is True
    assert store.calls == ["claim", "complete", "claim"]


def test_admit_types_the_event_as_a_model_before_claiming() -> None:
    receiver = make_receiver()
    body = payload(id="evt_1")
    admitted = receiver.admit(body, signed(body), model=User)
    assert not isinstance(admitted, Outcome)
    assert admitted.event.record == User(id=1, email="a@example.com")
    receiver.settle(admitted, ok=False)
    bad = payload(id="evt_2", record={"id": "x"})
    refused = receiver.admit(bad, signed(bad), model=User)
    assert isinstance(refused, Outcome)
    assert_refused(refused, 400, "invalid_payload")
    assert refused.body["message"].startswith("record does not match User: ")
    assert isinstance(receiver.admit(bad, signed(bad)), Outcome) is False  # nothing was claimed


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit, asyncio.CancelledError])
def test_an_interrupted_handler_releases_its_claim_and_the_interrupt_propagates(
    interrupt: type[BaseException],
) -> None:
    receiver = make_receiver()
    calls: list[str] = []

    @receiver.on()
    def handler(event: Any) -> None:
        calls.append("ran")
        if len(calls) == 1:
            raise interrupt

    body = payload(id="evt_1")
    with pytest.raises(interrupt):
        receiver.handle(body, signed(body))
    assert receiver.handle(body, signed(body)).body == {"ok": True}
    assert calls == ["ran", "ran"]


def test_an_interrupted_async_handler_releases_its_claim() -> None:
    store = AsyncMemoryStore()
    receiver = make_receiver(idempotency=store)

    @receiver.on()
    async def handler(event: Any) -> None:
        raise asyncio.CancelledError

    async def main() -> None:
        body = payload(id="evt_1")
        with pytest.raises(asyncio.CancelledError):
            await receiver.handle_async(body, signed(body))

    asyncio.run(main())
    assert store.calls == ["claim", "release"]


def test_a_handler_outliving_the_lease_keeps_its_claim() -> None:
    receiver = make_receiver(processing_ttl=1.5)
    release = threading.Event()
    runs: list[int] = []

    @receiver.on()
    def slow(event: Any) -> None:
        runs.append(1)
        release.wait(30)

    body = payload()
    worker = threading.Thread(target=receiver.handle, args=(body, signed(body)))
    worker.start()
    try:
        # Three leases later the heartbeat has kept renewing: the claim is still held.
        threading.Event().wait(4.5)
        assert_refused(receiver.handle(body, signed(body)), 409, "event_in_progress")
    finally:
        release.set()
        worker.join()
    assert runs == [1]


def test_a_claimant_that_outlived_its_lease_leaves_the_next_claim_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fluxbase_receiver import MemoryIdempotencyStore

    now = [0.0]
    receiver = make_receiver(idempotency=MemoryIdempotencyStore(clock=lambda: now[0]))
    body = payload(id="evt_1")
    stale = receiver.admit(body, signed(body))
    now[0] = 11.0  # the lease ran out (a paused process): the next delivery takes the event
    fresh = receiver.admit(body, signed(body))
    assert isinstance(stale, Admitted) and isinstance(fresh, Admitted)
    with caplog.at_level(logging.WARNING, logger="fluxbase_receiver"):
        receiver.settle(stale, ok=True)
    assert "lapsed" in caplog.text
    assert_refused(receiver.handle(body, signed(body)), 409, "event_in_progress")
    receiver.settle(fresh, ok=True)
    assert receiver.handle(body, signed(body)).body["duplicate"] is True


# -- fail fast on setup -------------------------------------------------------------------


def test_a_missing_secret_is_refused_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLUXBASE_WEBHOOK_SECRET", raising=False)
    for secret in (None, "", []):
        with pytest.raises(ValueError, match=r"secret=.*FLUXBASE_WEBHOOK_SECRET"):
            Receiver(secret)
    with pytest.raises(ValueError, match="FLUXBASE_WEBHOOK_SECRET"):
        Receiver()
    monkeypatch.setenv("FLUXBASE_WEBHOOK_SECRET", SECRET)
    body = payload()
    assert Receiver(clock=lambda: NOW).handle(body, signed(body)).ok


class Pending(BaseModel):
    child: Later  # noqa: F821 - never defined: the model is incomplete


@pytest.mark.parametrize("model", [int, User(id=1, email="x"), "User", dict, Pending])
def test_unusable_models_are_refused_at_registration(model: Any) -> None:
    with pytest.raises(TypeError) as error:
        make_receiver().on("users", model=model)
    assert "\n" not in str(error.value)


def test_operations_must_be_names() -> None:
    with pytest.raises(TypeError, match="INSERT"):
        make_receiver().on("users", User)  # type: ignore[arg-type]


def test_stores_without_the_owner_contract_are_refused() -> None:
    class OldStore:
        def claim(self, key: str, ttl: float) -> Any: ...

        def complete(self, key: str, ttl: float) -> None: ...

        def release(self, key: str) -> None: ...

    with pytest.raises(TypeError, match="renew"):
        make_receiver(idempotency=OldStore())


def test_an_async_store_on_a_sync_path_fails_before_anything_runs() -> None:
    receiver = make_receiver(idempotency=AsyncMemoryStore())
    seen: list[Any] = []
    receiver.on()(seen.append)
    with pytest.raises(TypeError, match="handle_async") as error:
        receiver.handle(b"not even a signed body", {})
    assert "\n" not in str(error.value)
    assert seen == []


def test_a_signature_mismatch_is_logged_with_a_hint_and_secret_positions(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = Receiver(["first-secret", "second-secret"], clock=lambda: NOW)
    body = payload()
    with caplog.at_level(logging.WARNING, logger="fluxbase_receiver"):
        outcome = receiver.handle(body, signed(body, secret="wrong"))
    assert_refused(outcome, 401, "invalid_signature")
    assert "re-serialised" not in outcome.body["message"]  # the hint is logged, never answered
    assert "re-serialised" in caplog.text and "#1, #2 of 2" in caplog.text
    assert "first-secret" not in caplog.text and "second-secret" not in caplog.text


# -- precheck never raises ----------------------------------------------------------------


def test_huge_and_malformed_content_lengths_are_clean_refusals() -> None:
    receiver = make_receiver()
    huge = receiver.precheck("POST", {"Content-Length": "9" * 5000})
    assert huge is not None
    assert_refused(huge, 413, "payload_too_large")
    for malformed in ("²", "-1", "1e3", "12 34", "0x10", ""):
        refused = receiver.precheck("POST", {"Content-Length": malformed})
        assert refused is not None, malformed
        assert_refused(refused, 400, "invalid_payload")
    assert receiver.precheck("POST", {"Content-Length": "0" * 5000 + "12"}) is None


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text(max_size=30))
def test_precheck_answers_any_header_values_without_raising(length: str, kind: str) -> None:
    receiver = make_receiver(max_body_bytes=1000)
    refused = receiver.precheck("POST", {"Content-Length": length, "Content-Type": kind})
    assert refused is None or refused.status in (400, 413, 415)


def test_use_secret_swaps_the_verifying_secrets_and_puts_them_back() -> None:
    receiver = make_receiver(idempotency=False)
    body = payload()
    restore = receiver.use_secret(["rotated-secret", "other-secret"])
    assert receiver.handle(body, signed(body, "other-secret")).status == 200
    assert_refused(receiver.handle(body, signed(body)), 401, "invalid_signature")
    restore()
    assert receiver.handle(body, signed(body)).status == 200
    assert_refused(receiver.handle(body, signed(body, "other-secret")), 401, "invalid_signature")
    with pytest.raises(ValueError, match="non-empty"):
        receiver.use_secret("")
