"""The Lambda handler with full event documents from each source, and the Lambda example."""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxbase_receiver import Receiver, sign_payload
from fluxbase_receiver.adapters.aws_lambda import lambda_handler, read_event
from tests.adapters.conftest import SECRET, event_body, load_example, with_event_id
from tests.servers import ROOT

EVENTS = Path(__file__).parent / "lambda_events"
SOURCES = ["api_gateway_rest", "http_api_v2", "function_url", "alb", "alb_multi_value"]
TEMPLATES = {name: json.loads((EVENTS / f"{name}.json").read_text()) for name in SOURCES}


def lambda_event(
    source: str,
    body: bytes,
    *,
    signature: str | None = None,
    base64_body: bool | None = None,
    method: str = "POST",
    extra_headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``source``'s event document carrying ``body``, signed unless ``signature`` is given."""
    event: dict[str, Any] = copy.deepcopy(TEMPLATES[source])
    encode = event["isBase64Encoded"] if base64_body is None else base64_body
    event["body"] = base64.b64encode(body).decode() if encode else body.decode()
    event["isBase64Encoded"] = encode
    values = {
        "x-fluxbase-signature": sign_payload(body, SECRET) if signature is None else signature,
        "content-length": str(len(body)),
        **{name.lower(): value for name, value in (extra_headers or {}).items()},
    }
    for key in ("headers", "multiValueHeaders"):
        headers = event.get(key)
        if not headers:
            continue
        for name in list(headers):
            if name.lower() in values:
                value = values[name.lower()]
                headers[name] = [value] if key == "multiValueHeaders" else value
    if "http" in event["requestContext"]:
        event["requestContext"]["http"]["method"] = method
    else:
        event["httpMethod"] = method
    return event


def body_of(response: dict[str, Any]) -> dict[str, Any]:
    assert response["isBase64Encoded"] is False
    document: dict[str, Any] = json.loads(response["body"])
    return document


@pytest.fixture
def receiver() -> Receiver:
    return Receiver(SECRET)


@pytest.mark.parametrize("source", SOURCES)
def test_each_source_is_answered_in_its_own_shape(source: str, receiver: Receiver) -> None:
    seen: list[Any] = []
    receiver.on("orders")(seen.append)
    handler = lambda_handler(receiver)
    body = with_event_id(event_body("INSERT", "orders", id=1, note="Grüße ✓"), "evt-1")
    response = handler(lambda_event(source, body), None)
    assert response["statusCode"] == 200
    assert body_of(response) == {"ok": True}
    assert [e.row["note"] for e in seen] == ["Grüße ✓"]
    if source == "alb_multi_value":
        assert response["multiValueHeaders"] == {"Content-Type": ["application/json"]}
        assert "headers" not in response
    elif source == "api_gateway_rest":  # REST events always carry multiValueHeaders too
        assert response["multiValueHeaders"] == {"Content-Type": ["application/json"]}
    else:
        assert response["headers"] == {"Content-Type": "application/json"}
    if source.startswith("alb"):
        assert response["statusDescription"] == "200 OK"
    else:
        assert "statusDescription" not in response
    duplicate = handler(lambda_event(source, body), None)
    assert body_of(duplicate) == {"ok": True, "duplicate": True}


@pytest.mark.parametrize("source", SOURCES)
def test_each_source_refuses_with_the_core_statuses(source: str, receiver: Receiver) -> None:
    handler = lambda_handler(receiver)
    body = event_body()
    cases = [
        (lambda_event(source, body, method="GET"), 405, "405 Method Not Allowed"),
        (lambda_event(source, body, signature="t=1,v1=00"), 401, "401 Unauthorized"),
        (lambda_event(source, b"[1, 2]"), 400, "400 Bad Request"),
        (lambda_event(source, b"x" * 1_048_577), 413, "413 Request Entity Too Large"),
        (
            lambda_event(source, body, extra_headers={"Content-Type": "text/plain"}),
            415,
            "415 Unsupported Media Type",
        ),
    ]
    for event, status, description in cases:
        response = handler(event, None)
        assert response["statusCode"] == status
        assert set(body_of(response)) == {"error", "message"}
        assert response.get("statusDescription", description) == description


def test_missing_is_base64_encoded_means_plain_text(receiver: Receiver) -> None:
    event = lambda_event("alb", event_body(), base64_body=False)
    del event["isBase64Encoded"]
    assert lambda_handler(receiver)(event, None)["statusCode"] == 200


def test_null_headers_and_body_are_refused_not_crashed(receiver: Receiver) -> None:
    event = lambda_event("api_gateway_rest", b"")
    event.update(headers=None, multiValueHeaders=None, body=None)
    response = lambda_handler(receiver)(event, None)
    assert response["statusCode"] == 401
    assert body_of(response)["error"] == "missing_signature"


def test_body_marked_base64_that_is_not_is_400(receiver: Receiver) -> None:
    event = lambda_event("function_url", event_body())
    event["body"] = "not base64 at all!"
    response = lambda_handler(receiver)(event, None)
    assert response["statusCode"] == 400
    assert body_of(response)["message"] == "body is marked base64 but is not valid base64"


def test_an_event_that_is_not_http_is_a_wiring_error(receiver: Receiver) -> None:
    with pytest.raises(ValueError, match="not an API Gateway"):
        lambda_handler(receiver)({"Records": [{"eventSource": "aws:sqs"}]}, None)


@given(
    body=st.binary(max_size=512),
    source=st.sampled_from(SOURCES),
    encode=st.booleans(),
    header_case=st.sampled_from([str.lower, str.upper, str.title]),
)
def test_the_signed_bytes_reach_the_receiver_exactly(
    body: bytes, source: str, encode: bool, header_case: Any
) -> None:
    if not encode:  # a text body is whatever the source decoded: valid UTF-8 only
        body = body.decode("utf-8", "replace").encode("utf-8")
    event = lambda_event(source, body, base64_body=encode)
    for key in ("headers", "multiValueHeaders"):
        if event.get(key):
            event[key] = {header_case(name): value for name, value in event[key].items()}
    request = read_event(event)
    assert request.body == body
    Receiver(SECRET).verify(body, request.headers)  # raises if a byte or a header was lost


def test_the_example_handles_an_event(caplog: pytest.LogCaptureFixture) -> None:
    example = load_example("lambda_function")
    body = event_body("DELETE", "orders", id=77)
    with caplog.at_level("DEBUG"):  # the example logs each event at DEBUG
        response = example.handler(lambda_event("function_url", body), None)
    assert response["statusCode"] == 200
    assert any("Record deleted from orders" in r.getMessage() for r in caplog.records)


def test_the_example_runs_as_its_docstring_says(tmp_path: Path) -> None:
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(lambda_event("http_api_v2", event_body(id=78))))
    env = {**os.environ, "FLUXBASE_WEBHOOK_SECRET": SECRET}
    with event_file.open() as stdin:
        result = subprocess.run(
            [sys.executable, "-m", "examples.lambda_function"],
            stdin=stdin,
            capture_output=True,
            cwd=ROOT,
            env=env,
            timeout=60,
            check=True,
        )
    response = json.loads(result.stdout)
    assert response["statusCode"] == 200
    assert b"New record in orders" in result.stderr
