"""The sender's log records carry the delivery's context and never its secret or body."""

from __future__ import annotations

import logging

import pytest

from fluxbase_receiver.sender import Sender
from tests.sender.conftest import deliver_all, make_webhook
from tests.sender.receivers import SECRET, Answer, ScriptedReceiver

BODY_MARKER = "body-marker-5e0b"


def test_each_attempt_is_logged_at_debug_with_the_delivery_context(
    sender: Sender, target: ScriptedReceiver, hook_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    webhook = make_webhook(sender, hook_url)
    target.script.append(Answer(500, body=BODY_MARKER.encode()))
    sender.emit("DELETE", "orders", {"id": 3, "note": BODY_MARKER})

    with caplog.at_level(logging.DEBUG, logger="fluxbase_receiver.sender"):
        deliver_all(sender)

    attempts = [r for r in caplog.records if getattr(r, "fluxbase_delivery_id", None)]
    assert [record.name for record in attempts] == ["fluxbase_receiver.sender.worker"] * 2
    (delivery,) = sender.webhooks.get_deliveries(webhook.id)
    for number, record in enumerate(attempts, start=1):
        assert record.levelno == logging.DEBUG
        assert record.fluxbase_delivery_id == delivery.id  # type: ignore[attr-defined]
        assert record.fluxbase_webhook_id == webhook.id  # type: ignore[attr-defined]
        assert record.fluxbase_event_id == delivery.event_id  # type: ignore[attr-defined]
        assert record.fluxbase_attempt == number  # type: ignore[attr-defined]
        assert record.fluxbase_operation == "DELETE"  # type: ignore[attr-defined]
        assert record.fluxbase_table == "orders"  # type: ignore[attr-defined]
    assert [r.fluxbase_status for r in attempts] == ["retrying", "success"]  # type: ignore[attr-defined]
    logged = "\n".join(logging.Formatter().format(r) + repr(vars(r)) for r in caplog.records)
    assert SECRET not in logged
    assert BODY_MARKER not in logged
