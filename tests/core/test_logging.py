"""Log records: one logger per module, ``fluxbase_*`` context in ``extra``, no secret or body;
and the receiver's observer hooks."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from fluxbase_receiver import Outcome, Receiver, WebhookEvent
from fluxbase_receiver.adapters.aws_lambda import lambda_handler
from fluxbase_receiver.signature import fluxbase_headers
from fluxbase_receiver.testing import lambda_event

SECRET = "secret-marker-6f1c"
BODY_MARKER = "body-marker-93ad"


def body(event_id: str | None = "evt-42", **fields: Any) -> bytes:
    payload: dict[str, Any] = {
        "event": "UPDATE",
        "table": "orders",
        "schema": "shop",
        "record": {"id": 1, "note": BODY_MARKER},
        "old_record": {"id": 1, "note": "before"},
        "webhook_id": "hook-9",
        **fields,
    }
    if event_id:
        payload["id"] = event_id
    return json.dumps(payload).encode()


def records_of(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno == level]


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record's message, arguments, context fields and traceback, as text."""
    formatter = logging.Formatter()
    return "\n".join(formatter.format(record) + repr(vars(record)) for record in caplog.records)


def test_an_accepted_event_is_logged_at_debug_with_its_context(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = Receiver(SECRET)
    receiver.on("orders")(lambda event: None)
    raw = body()

    with caplog.at_level(logging.DEBUG, logger="fluxbase_receiver"):
        assert receiver.handle(raw, fluxbase_headers(raw, SECRET)).status == 200

    (record,) = records_of(caplog, logging.DEBUG)
    assert record.name == "fluxbase_receiver.receiver"
    assert "accepted" in record.getMessage()
    assert record.fluxbase_operation == "UPDATE"  # type: ignore[attr-defined]
    assert record.fluxbase_table == "orders"  # type: ignore[attr-defined]
    assert record.fluxbase_schema == "shop"  # type: ignore[attr-defined]
    assert record.fluxbase_event_id == "evt-42"  # type: ignore[attr-defined]
    assert record.fluxbase_webhook_id == "hook-9"  # type: ignore[attr-defined]
    assert record.fluxbase_key == "id:evt-42"  # type: ignore[attr-defined]
    assert record.fluxbase_status == 200  # type: ignore[attr-defined]


def test_nothing_is_logged_for_an_accepted_event_above_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = Receiver(SECRET)
    raw = body()
    with caplog.at_level(logging.INFO, logger="fluxbase_receiver"):
        receiver.handle(raw, fluxbase_headers(raw, SECRET))
    assert caplog.records == []


@pytest.mark.parametrize(
    ("make_request", "status", "reason"),
    [
        (
            lambda raw: (raw, fluxbase_headers(raw, "not the secret"), "POST"),
            401,
            "invalid_signature",
        ),
        (lambda raw: (raw, {}, "POST"), 401, "missing_signature"),
        (
            lambda raw: (b"{" + raw, fluxbase_headers(b"{" + raw, SECRET), "POST"),
            400,
            "invalid_payload",
        ),
        (lambda raw: (raw, fluxbase_headers(raw, SECRET), "GET"), 405, "method_not_allowed"),
    ],
)
def test_refusals_are_warnings_with_the_path_and_the_reason(
    caplog: pytest.LogCaptureFixture, make_request: Any, status: int, reason: str
) -> None:
    receiver = Receiver(SECRET)
    raw, headers, method = make_request(body())
    handler = lambda_handler(receiver)

    with caplog.at_level(logging.DEBUG, logger="fluxbase_receiver"):
        answer = handler(lambda_event(raw, headers, path="/hooks/shop", method=method), None)

    assert answer["statusCode"] == status
    refusals = [r for r in caplog.records if getattr(r, "fluxbase_reason", None) is not None]
    (record,) = refusals
    assert record.levelno == logging.WARNING
    assert record.name == "fluxbase_receiver.receiver"
    assert record.fluxbase_reason == reason  # type: ignore[attr-defined]
    assert record.fluxbase_status == status  # type: ignore[attr-defined]
    assert record.fluxbase_path == "/hooks/shop"  # type: ignore[attr-defined]
    assert "/hooks/shop" in record.getMessage() and reason in record.getMessage()
    assert SECRET not in everything_logged(caplog)
    assert BODY_MARKER not in everything_logged(caplog)


def test_a_refusal_after_parsing_names_the_event(caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver(SECRET)
    receiver.on("orders")(lambda event: None)
    raw = body(None)
    answers: list[Outcome] = []
    receiver.observe(
        lambda handler, event: answers.append(receiver.handle(raw, fluxbase_headers(raw, SECRET)))
    )

    with caplog.at_level(logging.WARNING, logger="fluxbase_receiver"):
        receiver.handle(raw, fluxbase_headers(raw, SECRET))  # its handler sees it in progress

    assert [answer.status for answer in answers] == [409]
    (record,) = caplog.records
    assert record.fluxbase_reason == "event_in_progress"  # type: ignore[attr-defined]
    assert record.fluxbase_status == 409  # type: ignore[attr-defined]
    assert record.fluxbase_table == "orders"  # type: ignore[attr-defined]
    assert record.fluxbase_path is None  # type: ignore[attr-defined]


def test_no_record_carries_a_secret_or_a_body(caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver([SECRET, "second-" + SECRET])

    @receiver.on("orders")
    def fail(event: WebhookEvent) -> None:
        raise ValueError("the handler failed")

    raw = body()
    with caplog.at_level(logging.DEBUG, logger="fluxbase_receiver"):
        receiver.handle(raw, fluxbase_headers(raw, SECRET))  # handler fails: ERROR
        receiver.handle(raw, fluxbase_headers(raw, "wrong"))  # mismatch: WARNING with a hint
        broken = raw[:-1]
        receiver.handle(broken, fluxbase_headers(broken, SECRET))  # not JSON
        receiver.handle(raw, fluxbase_headers(raw, SECRET, timestamp=1))  # stale

    (failed,) = records_of(caplog, logging.ERROR)
    assert failed.name == "fluxbase_receiver.receiver"
    assert failed.fluxbase_event_id == "evt-42"  # type: ignore[attr-defined]
    assert failed.fluxbase_status == 500  # type: ignore[attr-defined]
    text = everything_logged(caplog)
    assert len(records_of(caplog, logging.WARNING)) >= 3
    assert SECRET not in text
    assert BODY_MARKER not in text
    assert fluxbase_headers(raw, SECRET)["X-Fluxbase-Signature"].split("v1=")[1] not in text


def test_after_observers_see_each_handler_with_its_duration_and_error() -> None:
    receiver = Receiver(SECRET)
    seen: list[tuple[str, str, float, str | None]] = []

    @receiver.on("orders")
    def works(event: WebhookEvent) -> None:
        pass

    @receiver.on("orders")
    def breaks(event: WebhookEvent) -> None:
        raise KeyError("missing")

    stop = receiver.observe(
        after=lambda handler, event, duration, error: seen.append(
            (handler.__name__, event.event, duration, type(error).__name__ if error else None)
        )
    )
    raw = body()
    outcome = receiver.handle(raw, fluxbase_headers(raw, SECRET))

    assert outcome.status == 500
    assert [(name, op, error) for name, op, _, error in seen] == [
        ("works", "UPDATE", None),
        ("breaks", "UPDATE", "KeyError"),
    ]
    assert all(duration >= 0 for _, _, duration, _ in seen)
    stop()
    again = body("evt-43")
    receiver.handle(again, fluxbase_headers(again, SECRET))
    assert len(seen) == 2


def test_outcome_observers_see_one_answer_per_request() -> None:
    receiver = Receiver(SECRET)
    receiver.on("orders")(lambda event: None)
    answers: list[Outcome] = []
    stop = receiver.observe(outcome=lambda outcome, duration: answers.append(outcome))

    raw = body()
    receiver.handle(raw, fluxbase_headers(raw, SECRET))
    receiver.handle(raw, fluxbase_headers(raw, SECRET))
    receiver.handle(raw, fluxbase_headers(raw, "wrong"))
    receiver.precheck("PUT", {})

    assert [
        (answer.status, answer.body.get("duplicate"), answer.body.get("error"))
        for answer in answers
    ] == [
        (200, None, None),
        (200, True, None),
        (401, None, "invalid_signature"),
        (405, None, "method_not_allowed"),
    ]
    stop()
    receiver.handle(raw, fluxbase_headers(raw, SECRET))
    assert len(answers) == 4


def test_a_failing_observer_is_logged_and_the_answer_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = Receiver(SECRET)
    receiver.on("orders")(lambda event: None)

    def broken(*_: object) -> None:
        raise RuntimeError("observer bug")

    receiver.observe(after=broken, outcome=broken)
    raw = body()
    with caplog.at_level(logging.ERROR, logger="fluxbase_receiver"):
        assert receiver.handle(raw, fluxbase_headers(raw, SECRET)).status == 200
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["an after-handler observer failed", "an outcome observer failed"]


def _flask_poster(receiver: Receiver) -> Any:
    from flask import Flask

    from fluxbase_receiver.adapters.flask import FluxbaseWebhooks

    app = Flask(__name__)
    FluxbaseWebhooks(app, receiver, url="/hooks/shop")
    client = app.test_client()
    return lambda raw, headers: client.post("/hooks/shop", data=raw, headers=headers).status_code


def _wsgi_poster(receiver: Receiver) -> Any:
    from werkzeug.test import Client

    from fluxbase_receiver.adapters.wsgi import FluxbaseWSGIMiddleware

    def other(environ: Any, start_response: Any) -> list[bytes]:
        start_response("404 Not Found", [])
        return []

    client = Client(FluxbaseWSGIMiddleware(other, receiver, path="/hooks/shop"))
    return lambda raw, headers: client.post("/hooks/shop", data=raw, headers=headers).status_code


def _starlette_poster(receiver: Receiver) -> Any:
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from fluxbase_receiver.adapters.starlette import webhook_routes

    client = TestClient(Starlette(routes=webhook_routes("/hooks/shop", receiver)))
    return lambda raw, headers: client.post("/hooks/shop", content=raw, headers=headers).status_code


@pytest.mark.parametrize("poster", [_flask_poster, _wsgi_poster, _starlette_poster])
def test_adapters_name_the_path_of_a_refused_request_and_only_while_answering(
    caplog: pytest.LogCaptureFixture, poster: Any
) -> None:
    receiver = Receiver(SECRET)
    post = poster(receiver)
    raw = body()

    with caplog.at_level(logging.WARNING, logger="fluxbase_receiver"):
        status = post(raw, fluxbase_headers(raw, "wrong"))
        receiver.handle(raw, fluxbase_headers(raw, "wrong"))  # not through the adapter

    assert status == 401
    paths = [r.fluxbase_path for r in caplog.records if hasattr(r, "fluxbase_reason")]
    assert paths == ["/hooks/shop", None]
