"""Webhook subscriptions: validation with clear errors, the management API, test sends."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxbase_receiver import TestEvent, UpdateEvent
from fluxbase_receiver.sender import NotFound, Sender, WebhookSpec, WebhookValidationError
from tests.sender.conftest import deliver_all, make_webhook
from tests.sender.receivers import SECRET, Answer, ScriptedReceiver

VALID = {"name": "hook", "url": "https://example.com/hook", "secret": "s3cret"}


def refusal(**changes: Any) -> WebhookValidationError:
    with pytest.raises(WebhookValidationError) as caught:
        WebhookSpec.parse({**VALID, **changes})
    return caught.value


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"url": "ftp://example.com/x"}, "url", "must start with http:// or https://"),
        ({"url": "https:///path"}, "url", "must have a host"),
        ({"url": "https://example.com:99999/"}, "url", "not a valid URL"),
        ({"url": "https://user:pw@example.com/"}, "url", "must not carry credentials"),
        ({"url": "https://example.com/a b"}, "url", "must not contain whitespace"),
        (
            {"events": [{"table": "orders", "operations": ["TRUNCATE"]}]},
            "events.0.operations",
            "INSERT, UPDATE, DELETE or '*'",
        ),
        ({"events": [{"table": "orders", "operations": []}]}, "events.0.operations", "at least 1"),
        ({"events": []}, "events", "at least 1"),
        ({"events": [{"table": "a.b.c"}]}, "events.0.table", "'schema.name'"),
        ({"events": [{"table": "orders;drop"}]}, "events.0.table", "'schema.name'"),
        ({"events": [{"table": "*.orders"}]}, "events.0.table", "schema part"),
        ({"headers": {"Bad Name": "x"}}, "headers", "not a valid HTTP token"),
        ({"headers": {"X-Evil": "a\r\nHost: evil"}}, "headers", "control character"),
        ({"headers": {"Host": "evil.example"}}, "headers", "cannot be set"),
        ({"headers": {"Transfer-Encoding": "chunked"}}, "headers", "cannot be set"),
        ({"headers": {"Connection": "close"}}, "headers", "cannot be set"),
        ({"headers": {"X-Fluxbase-Signature": "t=1,v1=00"}}, "headers", "cannot be set"),
        ({"max_retries": 21}, "max_retries", "less than or equal to 20"),
        ({"max_retries": -1}, "max_retries", "greater than or equal to 0"),
        ({"timeout_seconds": 0}, "timeout_seconds", "greater than or equal to 1"),
        ({"timeout_seconds": 301}, "timeout_seconds", "less than or equal to 300"),
        ({"retry_backoff_seconds": 0}, "retry_backoff_seconds", "greater than 0"),
        ({"secret": ""}, "secret", "must not be empty"),
        ({"name": ""}, "name", "at least 1 character"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_invalid_subscriptions_are_refused_with_field_messages(
    changes: dict[str, Any], field: str, message: str
) -> None:
    error = refusal(**changes)
    assert [e["field"] for e in error.errors] == [field]
    assert message in error.errors[0]["message"]
    assert f"{field}: " in str(error)
    assert error.code == "invalid_webhook"


def test_defaults_follow_fluxbase() -> None:
    spec = WebhookSpec.parse({"name": "hook", "url": "http://example.com"})
    assert (spec.max_retries, spec.timeout_seconds, spec.retry_backoff_seconds) == (3, 30, 5)
    assert spec.enabled and spec.headers == {}
    assert [(e.table, e.operations) for e in spec.events] == [("*", ["*"])]
    assert len(spec.secret.get_secret_value()) >= 32, "a secret is generated when omitted"


@given(st.text(min_size=1, max_size=20), st.sampled_from(["\r", "\n", "\x00"]))
def test_header_values_with_line_breaks_are_always_refused(value: str, bad: str) -> None:
    with pytest.raises(WebhookValidationError):
        WebhookSpec.parse({**VALID, "headers": {"X-Custom": value + bad + value}})


@given(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True),
    st.lists(st.sampled_from(["INSERT", "update", "Delete", "*"]), min_size=1),
)
def test_valid_filters_are_accepted_and_normalised(table: str, operations: list[str]) -> None:
    spec = WebhookSpec.parse({**VALID, "events": [{"table": table, "operations": operations}]})
    (event_filter,) = spec.events
    assert set(event_filter.operations) == {op.upper() for op in operations}
    assert set(event_filter.expanded_operations()) <= {"INSERT", "UPDATE", "DELETE"}


def test_secrets_stay_out_of_reprs_dumps_errors_and_logs(
    sender: Sender, target: ScriptedReceiver, hook_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fluxbase_receiver")
    webhook = make_webhook(sender, hook_url)
    target.fail_next = 1
    sender.emit("INSERT", "orders", {"id": 1})
    deliver_all(sender)
    error = refusal(secret="", max_retries=99)
    exposed = [
        repr(webhook),
        str(webhook),
        webhook.model_dump_json(),
        str(webhook.model_dump()),
        repr(sender),
        str(error),
        caplog.text,
    ]
    assert caplog.records, "attempts were logged"
    assert not [text for text in exposed if SECRET in text]
    assert webhook.secret.get_secret_value() == SECRET


def test_create_list_get_update_delete(sender: Sender) -> None:
    first = sender.webhooks.create(VALID)
    second = sender.webhooks.create(
        name="second", url="http://example.org/in", events=[{"table": "orders"}]
    )
    assert [w.id for w in sender.webhooks.list()] == [first.id, second.id]
    assert sender.webhooks.get(first.id) == first

    updated = sender.webhooks.update(first.id, max_retries=5, headers={"X-Tenant": "a"})
    assert (updated.max_retries, updated.headers, updated.url) == (
        5,
        {"X-Tenant": "a"},
        VALID["url"],
    )
    assert updated.secret.get_secret_value() == "s3cret"
    assert updated.updated_at >= first.updated_at and updated.created_at == first.created_at
    with pytest.raises(WebhookValidationError, match="max_retries"):
        sender.webhooks.update(first.id, max_retries=100)

    sender.webhooks.delete(first.id)
    assert [w.id for w in sender.webhooks.list()] == [second.id]
    for call in (
        lambda: sender.webhooks.get(first.id),
        lambda: sender.webhooks.update(first.id, name="x"),
        lambda: sender.webhooks.delete(first.id),
        lambda: sender.webhooks.get_deliveries(first.id),
        lambda: sender.get_delivery("missing"),
        lambda: sender.redeliver("missing"),
    ):
        with pytest.raises(NotFound):
            call()


def test_webhooks_are_stored_durably(database: str) -> None:
    with Sender(database) as sender:
        created = sender.webhooks.create(VALID)
    with Sender(database) as reopened:
        assert reopened.webhooks.get(created.id) == created


def test_get_deliveries_pages_newest_first(
    sender: Sender, target: ScriptedReceiver, webhook: Any
) -> None:
    for i in range(5):
        sender.emit("INSERT", "orders", {"id": i})
    sender.deliver_pending()
    everything = sender.webhooks.get_deliveries(webhook.id)
    assert len(everything) == 5
    page = sender.webhooks.get_deliveries(webhook.id, limit=2, offset=1)
    assert [d.id for d in page] == [d.id for d in everything[1:3]]
    assert everything[0].created_at >= everything[-1].created_at


def test_test_sends_fluxbase_test_event(
    sender: Sender, target: ScriptedReceiver, webhook: Any
) -> None:
    result = sender.webhooks.test(webhook.id)
    assert result.success and result.status_code == 200 and result.error is None
    assert result.response_body == '{"ok":true}'
    (event,) = target.events
    assert isinstance(event, TestEvent)
    assert (event.table, event.schema_name, event.record) == ("test", "public", {"test": True})
    (delivery,) = sender.webhooks.get_deliveries(webhook.id)
    assert (delivery.id, delivery.event, delivery.status) == (result.delivery_id, "TEST", "success")


def test_test_async_works_inside_a_running_event_loop(
    sender: Sender, target: ScriptedReceiver, webhook: Any
) -> None:
    async def from_async_code() -> Any:
        return await sender.webhooks.test_async(
            webhook.id, event="INSERT", table="orders", record={"id": 3}
        )

    result = asyncio.run(from_async_code())
    assert result.success
    (event,) = target.events
    assert (event.event, event.table, event.record) == ("INSERT", "orders", {"id": 3})


def test_test_sends_a_given_event_even_to_a_disabled_webhook(
    sender: Sender, target: ScriptedReceiver, hook_url: str
) -> None:
    webhook = make_webhook(sender, hook_url, enabled=False, events=[{"table": "other"}])
    result = sender.webhooks.test(
        webhook.id,
        event="UPDATE",
        table="orders",
        record={"id": 1, "qty": 2},
        old_record={"id": 1, "qty": 1},
    )
    assert result.success
    (event,) = target.events
    assert isinstance(event, UpdateEvent) and event.changes == {"qty": (1, 2)}


def test_a_failed_test_send_reports_the_answer_and_is_not_retried(
    sender: Sender, target: ScriptedReceiver, webhook: Any
) -> None:
    target.script = [Answer(503, body=b"maintenance")]
    result = sender.webhooks.test(webhook.id)
    assert not result.success
    assert (result.status_code, result.response_body) == (503, "maintenance")
    assert result.error == "receiver answered 503"
    assert sender.get_delivery(result.delivery_id).status == "failed"
    assert sender.deliver_pending().attempted == 0


def test_the_signature_uses_the_configured_secret(
    sender: Sender, hook_url: str, target: ScriptedReceiver
) -> None:
    webhook = make_webhook(sender, hook_url, secret="another-secret")
    result = sender.webhooks.test(webhook.id)
    assert result.status_code == 401 and not result.success
    sender.webhooks.update(webhook.id, secret=SECRET)
    assert sender.webhooks.test(webhook.id).success


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite:///", "mysql://x/y", "app.db"])
def test_database_urls_name_a_shared_sqlite_file_or_postgresql(url: str) -> None:
    with pytest.raises(ValueError, match=r"sqlite:///|not :memory:"):
        Sender(url)


CONTROL_CHARACTERS = [chr(c) for c in (*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F)]


@given(
    st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=10),
    st.sampled_from(CONTROL_CHARACTERS),
)
def test_header_values_with_any_control_character_are_refused(value: str, bad: str) -> None:
    error = refusal(headers={"X-Custom": value + bad + value})
    assert [e["field"] for e in error.errors] == ["headers"]
    assert "control character" in error.errors[0]["message"]


@pytest.mark.parametrize("bad", ["\v", "\f", "\x1b", "\x7f", "\x01"])
def test_vertical_tab_form_feed_escape_and_delete_are_refused(sender: Sender, bad: str) -> None:
    with pytest.raises(WebhookValidationError, match="control character"):
        sender.webhooks.create({**VALID, "headers": {"X-Custom": f"a{bad}b"}})


def test_a_tab_inside_a_header_value_is_allowed() -> None:
    spec = WebhookSpec.parse({**VALID, "headers": {"X-Custom": "a\tb"}})
    assert spec.headers == {"X-Custom": "a\tb"}


def test_custom_header_values_are_write_only(
    sender: Sender, target: ScriptedReceiver, hook_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fluxbase_receiver")
    token = "Bearer tok-5f1e2d"
    webhook = make_webhook(sender, hook_url, headers={"Authorization": token, "X-Tenant": "a"})
    target.fail_next = 1
    sender.emit("INSERT", "orders", {"id": 1})
    deliver_all(sender)
    exposed = [
        repr(webhook),
        str(webhook),
        webhook.model_dump_json(),
        str(webhook.model_dump()),
        str(webhook.model_dump(mode="json", by_alias=True, exclude={"secret"})),
        repr(sender.webhooks.list()),
        caplog.text,
    ]
    assert not [text for text in exposed if "tok-5f1e2d" in text]
    assert webhook.model_dump(mode="json")["headers"] == {
        "Authorization": "**********",
        "X-Tenant": "**********",
    }
    assert webhook.headers["Authorization"] == token, "the value itself stays readable"
    assert {r.headers["authorization"] for r in target.requests} == {token}
    updated = sender.webhooks.update(webhook.id, name="renamed")
    assert updated.headers == {"Authorization": token, "X-Tenant": "a"}
    shown = updated.model_dump(mode="json")
    written_back = sender.webhooks.update(webhook.id, headers=shown["headers"] | {"X-New": "n"})
    assert written_back.headers == {"Authorization": token, "X-Tenant": "a", "X-New": "n"}


def test_test_sends_never_race_a_running_worker(
    sender: Sender, target: ScriptedReceiver, webhook: Any
) -> None:
    worker = Sender(sender.database_url, allow_private_networks=True, poll_interval=0.001)
    thread = threading.Thread(target=lambda: asyncio.run(worker.serve()))
    thread.start()
    sends = 200
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: sender.webhooks.test(webhook.id), range(sends)))
    finally:
        worker.stop()
        thread.join(10)
        worker.close()

    assert all(r.success for r in results)
    assert len({r.delivery_id for r in results}) == sends
    assert len(target.requests) == sends and set(target.handled.values()) == {1}
    for result in results:
        (attempt,) = sender.get_attempts(result.delivery_id)
        assert (attempt.attempt, attempt.outcome) == (1, "success")
