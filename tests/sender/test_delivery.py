"""End-to-end delivery over real HTTP on loopback: wire format, retries, the policy."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from email.utils import formatdate

from fluxbase_receiver import UpdateEvent, verify_legacy_signature, verify_signature
from fluxbase_receiver.sender import Sender, Webhook
from fluxbase_receiver.sender.delivery import MAX_STORED_BODY
from tests.sender.conftest import deliver_all, make_webhook
from tests.sender.receivers import SECRET, Answer, ScriptedReceiver, serving


def only_delivery(sender: Sender, webhook: Webhook):  # type: ignore[no-untyped-def]
    (delivery,) = sender.webhooks.get_deliveries(webhook.id)
    return delivery


def test_wire_format_is_fluxbase_plus_stable_id(
    sender: Sender, target: ScriptedReceiver, hook_url: str
) -> None:
    webhook = make_webhook(sender, hook_url, headers={"X-Tenant": "acme"})
    sender.emit("UPDATE", "orders", {"id": 1, "qty": 2}, old_record={"id": 1, "qty": 1})
    sender.deliver_pending()

    (seen,) = target.requests
    headers = seen.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "Fluxbase-Webhooks/1.0"
    assert headers["x-tenant"] == "acme"
    assert headers["x-fluxbase-delivery-attempt"] == "1"
    verify_signature(seen.body, headers["x-fluxbase-signature"], SECRET)
    verify_legacy_signature(seen.body, headers["x-webhook-signature"], SECRET)
    body = json.loads(seen.body)
    assert set(body) == {
        "event",
        "table",
        "schema",
        "record",
        "old_record",
        "timestamp",
        "webhook_id",
        "id",
    }
    assert body["event"] == "UPDATE" and body["table"] == "orders" and body["schema"] == "public"
    assert body["record"] == {"id": 1, "qty": 2} and body["old_record"] == {"id": 1, "qty": 1}
    assert body["webhook_id"] == webhook.id
    assert headers["x-fluxbase-event-id"] == body["id"]
    assert body["timestamp"].endswith("Z")
    (event,) = target.events
    assert isinstance(event, UpdateEvent) and event.changes == {"qty": (1, 2)}
    delivery = only_delivery(sender, webhook)
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("success", 1, 200)
    assert delivery.delivered_at is not None and delivery.next_attempt_at is None


def test_retries_until_the_receiver_accepts(
    sender: Sender, target: ScriptedReceiver, webhook: Webhook
) -> None:
    target.fail_next = 2  # the handler raises twice: the receiver answers 500
    sender.emit("INSERT", "orders", {"id": 7})
    deliver_all(sender)

    assert [r.headers["x-fluxbase-delivery-attempt"] for r in target.requests] == ["1", "2", "3"]
    bodies = {r.body for r in target.requests}
    assert len(bodies) == 1, "id and timestamp are stable across retries"
    signatures = {r.headers["x-fluxbase-signature"] for r in target.requests}
    assert all(s.startswith("t=") for s in signatures)
    assert target.handled == {json.loads(target.requests[0].body)["id"]: 1}
    delivery = only_delivery(sender, webhook)
    assert (delivery.status, delivery.attempts) == ("success", 3)
    attempts = sender.get_attempts(delivery.id)
    assert [(a.attempt, a.outcome, a.response_status) for a in attempts] == [
        (1, "failed", 500),
        (2, "failed", 500),
        (3, "success", 200),
    ]
    assert "handler_failed" in (attempts[0].response_body or "")
    assert attempts[0].error == "receiver answered 500"


def test_gives_up_after_max_retries(
    sender: Sender, target: ScriptedReceiver, hook_url: str
) -> None:
    webhook = make_webhook(sender, hook_url, max_retries=2)
    target.fail_next = 10
    sender.emit("INSERT", "orders", {"id": 1})
    deliver_all(sender)

    delivery = only_delivery(sender, webhook)
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 3, 500)
    assert delivery.next_attempt_at is None
    assert len(target.requests) == 3
    assert sender.webhooks.get(webhook.id).enabled


def test_a_hanging_receiver_times_out(
    sender: Sender, target: ScriptedReceiver, hook_url: str
) -> None:
    webhook = make_webhook(sender, hook_url, timeout_seconds=1, max_retries=1)
    target.script = [Answer(200, hang=3.0)]
    sender.emit("INSERT", "orders", {"id": 1})
    deliver_all(sender)

    delivery = only_delivery(sender, webhook)
    assert (delivery.status, delivery.attempts) == ("success", 2)
    first, second = sender.get_attempts(delivery.id)
    assert first.outcome == "failed" and first.response_status is None
    assert first.error == "timed out after 1 s"
    assert second.outcome == "success"


def test_redirects_are_not_followed(
    sender: Sender, target: ScriptedReceiver, hook_url: str
) -> None:
    webhook = make_webhook(sender, hook_url, max_retries=0)
    target.script = [Answer(307, {"Location": hook_url})]
    sender.emit("INSERT", "orders", {"id": 1})
    sender.deliver_pending()

    assert len(target.requests) == 1, "the Location was not requested"
    delivery = only_delivery(sender, webhook)
    assert (delivery.status, delivery.response_status) == ("failed", 307)
    assert delivery.error is not None and "redirect 307 not followed" in delivery.error


def test_retry_after_seconds_is_honoured(
    sender: Sender, target: ScriptedReceiver, webhook: Webhook
) -> None:
    target.script = [Answer(429, {"Retry-After": "120"})]
    sender.emit("INSERT", "orders", {"id": 1})
    sender.deliver_pending()

    delivery = only_delivery(sender, webhook)
    assert (delivery.status, delivery.response_status) == ("retrying", 429)
    (attempt,) = sender.get_attempts(delivery.id)
    assert delivery.next_attempt_at is not None
    wait = (delivery.next_attempt_at - attempt.started_at).total_seconds()
    assert 120 <= wait < 130
    assert sender.deliver_pending().attempted == 0, "not due before Retry-After"


def test_retry_after_http_date_is_honoured(
    sender: Sender, target: ScriptedReceiver, webhook: Webhook
) -> None:
    when = time.time() + 600
    target.script = [Answer(503, {"Retry-After": formatdate(when, usegmt=True)})]
    sender.emit("INSERT", "orders", {"id": 1})
    sender.deliver_pending()

    delivery = only_delivery(sender, webhook)
    assert delivery.status == "retrying" and delivery.next_attempt_at is not None
    assert abs(delivery.next_attempt_at.timestamp() - when) < 2


def test_gone_disables_the_webhook(
    sender: Sender, target: ScriptedReceiver, webhook: Webhook
) -> None:
    target.script = [Answer(410)]
    sender.emit("INSERT", "orders", {"id": 1})
    sender.emit("INSERT", "orders", {"id": 2})
    counts = sender.deliver_pending()

    stored = sender.webhooks.get(webhook.id)
    assert not stored.enabled
    assert stored.disabled_reason == "the receiver answered 410 Gone"
    statuses = sorted(d.status for d in sender.webhooks.get_deliveries(webhook.id))
    assert "failed" in statuses
    assert counts.failed >= 1
    sender.emit("INSERT", "orders", {"id": 3})
    assert len(sender.webhooks.get_deliveries(webhook.id)) == 2, "no fan-out to a disabled hook"


def test_a_webhook_failing_for_the_whole_period_is_disabled(
    database: str, target: ScriptedReceiver, hook_url: str
) -> None:
    with Sender(database, allow_private_networks=True, disable_after=timedelta(0)) as sender:
        webhook = make_webhook(sender, hook_url)
        target.fail_next = 1
        sender.emit("INSERT", "orders", {"id": 1})
        sender.deliver_pending()
        stored = sender.webhooks.get(webhook.id)
        assert not stored.enabled
        assert (
            stored.disabled_reason is not None and "every attempt failed" in stored.disabled_reason
        )

        sender.webhooks.update(webhook.id, enabled=True)
        assert sender.webhooks.get(webhook.id).disabled_reason is None
        deliver_all(sender)
        assert only_delivery(sender, webhook).status == "success"


def test_redeliver_is_dropped_as_duplicate_by_the_receiver(
    sender: Sender, target: ScriptedReceiver, webhook: Webhook
) -> None:
    sender.emit("INSERT", "orders", {"id": 1})
    sender.deliver_pending()
    original = only_delivery(sender, webhook)

    again = sender.redeliver(original.id)
    assert again.id != original.id and again.event_id == original.event_id
    assert again.status == "pending"
    sender.deliver_pending()

    assert len(target.requests) == 2 and target.handled == {original.event_id: 1}
    redelivered = sender.get_delivery(again.id)
    assert redelivered.status == "success"
    assert json.loads(redelivered.response_body or "{}") == {"ok": True, "duplicate": True}


def test_recover_requeues_failed_deliveries(
    sender: Sender, target: ScriptedReceiver, hook_url: str
) -> None:
    webhook = make_webhook(sender, hook_url, max_retries=0)
    target.fail_next = 2
    sender.emit("INSERT", "orders", {"id": 1})
    sender.emit("INSERT", "orders", {"id": 2})
    sender.deliver_pending()
    assert {d.status for d in sender.webhooks.get_deliveries(webhook.id)} == {"failed"}

    assert sender.recover(since=time.time() + 60) == 0
    assert sender.recover(since=time.time() - 60) == 2
    sender.deliver_pending()
    assert {d.status for d in sender.webhooks.get_deliveries(webhook.id)} == {"success"}
    assert len(target.handled) == 2


def test_stored_response_bodies_are_capped(
    sender: Sender, target: ScriptedReceiver, webhook: Webhook
) -> None:
    target.script = [Answer(500, body=b"x" * (MAX_STORED_BODY * 4))]
    sender.emit("INSERT", "orders", {"id": 1})
    sender.deliver_pending()
    delivery = only_delivery(sender, webhook)
    assert delivery.response_body == "x" * MAX_STORED_BODY


def test_transport_errors_are_recorded(sender: Sender) -> None:
    from tests.servers import free_port

    webhook = make_webhook(sender, f"http://127.0.0.1:{free_port()}/hook", max_retries=0)
    sender.emit("INSERT", "orders", {"id": 1})
    sender.deliver_pending()
    delivery = only_delivery(sender, webhook)
    assert delivery.status == "failed" and delivery.response_status is None
    assert delivery.error is not None and delivery.error.startswith("connection failed")


def test_prune_removes_finished_history_only(
    sender: Sender, target: ScriptedReceiver, webhook: Webhook
) -> None:
    sender.emit("INSERT", "orders", {"id": 1})
    sender.deliver_pending()
    target.script = [Answer(429, {"Retry-After": "3600"})]
    sender.emit("INSERT", "orders", {"id": 2})
    sender.deliver_pending()
    assert sender.prune(older_than=timedelta(hours=1)) == 0

    assert sender.prune(older_than=timedelta(0)) == 1
    (left,) = sender.webhooks.get_deliveries(webhook.id)
    assert left.status == "retrying"
    assert sender.get_attempts(left.id)


def test_in_progress_answers_do_not_spend_max_retries(sender: Sender) -> None:
    """Two copies of one event go out at once: the receiver answers the second 409."""
    slow = ScriptedReceiver(handler_delay=0.5)
    with serving(slow) as url:
        webhook = make_webhook(sender, url, max_retries=0)
        sender.emit("INSERT", "orders", {"id": 1})
        first = only_delivery(sender, webhook)
        copy = sender.redeliver(first.id)
        deliver_all(sender)

    assert {sender.get_delivery(d).status for d in (first.id, copy.id)} == {"success"}
    outcomes = sorted(
        [(a.outcome, a.response_status) for a in sender.get_attempts(d)]
        for d in (first.id, copy.id)
    )
    assert outcomes == [[("failed", 409), ("success", 200)], [("success", 200)]]
    assert slow.handled == {first.event_id: 1}


def test_in_progress_answers_retry_past_max_retries_until_the_retry_period_ends(
    database: str, target: ScriptedReceiver, hook_url: str
) -> None:
    with Sender(
        database, allow_private_networks=True, disable_after=timedelta(seconds=0.3)
    ) as sender:
        webhook = make_webhook(sender, hook_url, max_retries=1)
        target.script = [Answer(409)] * 1000
        sender.emit("INSERT", "orders", {"id": 1})
        deliver_all(sender)

        delivery = only_delivery(sender, webhook)
        assert (delivery.status, delivery.response_status) == ("failed", 409)
        assert delivery.attempts > 2, "409 answers are not counted against max_retries"
        attempts = sender.get_attempts(delivery.id)
        assert {(a.outcome, a.response_status) for a in attempts} == {("failed", 409)}
        assert attempts[-1].started_at - delivery.created_at >= timedelta(seconds=0.3)
        assert len(target.requests) == delivery.attempts


def test_other_failures_still_count_after_in_progress_answers(
    sender: Sender, target: ScriptedReceiver, hook_url: str
) -> None:
    webhook = make_webhook(sender, hook_url, max_retries=1)
    target.script = [Answer(409), Answer(409), Answer(500), Answer(500), Answer(500)]
    sender.emit("INSERT", "orders", {"id": 1})
    deliver_all(sender)

    delivery = only_delivery(sender, webhook)
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 4, 500)
