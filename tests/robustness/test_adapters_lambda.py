"""Generated API Gateway (1.0 and 2.0), Function URL and ALB events against the Lambda handler.

Every event has its source's shape, with any method, headers (single or multi-value,
garbage ``Content-Length``, non-ASCII), and bodies that are plain or base64 (valid or
not), missing, random, unsigned, deeply nested or over the limit. The handler always
answers in the source's shape, below 500, with a JSON ``error``/``message`` for each 4xx.
"""

from __future__ import annotations

import gc
import json
import logging
import time
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxbase_receiver import Receiver, sign_payload
from fluxbase_receiver.adapters.aws_lambda import lambda_handler
from fluxbase_receiver.testing.strategies import events
from tests.adapters.conftest import SECRET
from tests.adapters.test_aws_lambda import SOURCES, lambda_event
from tests.robustness.raw_http import GARBAGE_LENGTHS, LATIN1, MAX_BODY, METHODS, TOKEN, deep

EXAMPLES = 200
HANDLER = lambda_handler(Receiver(SECRET, max_body_bytes=MAX_BODY))


@st.composite
def lambda_events(draw: st.DrawFn) -> dict[str, Any]:
    """A source's event document with a bad (or, rarely, good) request in it."""
    body = draw(
        st.one_of(
            st.binary(max_size=1_000),
            events(as_bytes=True),
            st.integers(1_000, 50_000).map(deep),
            st.just(b"x" * (MAX_BODY + 1)),
        )
    )
    signature = draw(
        st.one_of(
            st.just(sign_payload(body, SECRET)),
            st.just(sign_payload(body, SECRET, int(time.time()) - 3_600)),
            st.just(sign_payload(body, "not-" + SECRET)),
            st.text(max_size=80),
        )
    )
    try:
        body.decode("utf-8")
        plain = draw(st.booleans())
    except UnicodeDecodeError:
        plain = False
    event = lambda_event(
        draw(st.sampled_from(SOURCES)),
        body,
        signature=signature,
        base64_body=not plain,
        method=draw(st.one_of(st.just("POST"), st.sampled_from(METHODS), TOKEN)),
    )
    extra = draw(
        st.dictionaries(
            st.one_of(
                TOKEN, st.sampled_from(["Content-Type", "content-length", "X-Webhook-Signature"])
            ),
            st.one_of(LATIN1, st.text(max_size=40), st.sampled_from(GARBAGE_LENGTHS)),
            max_size=4,
        )
    )
    if event.get("multiValueHeaders"):
        event["multiValueHeaders"].update({name: [value] for name, value in extra.items()})
    else:
        event["headers"].update(extra)
    mangle = draw(
        st.sampled_from(["none", "none", "bad-base64", "no-body", "no-headers", "no-flag"])
    )
    if mangle == "bad-base64":
        event["body"], event["isBase64Encoded"] = draw(st.text(max_size=40)) + "%", True
    elif mangle == "no-body":
        event["body"] = None
    elif mangle == "no-headers":
        event["headers"] = event["multiValueHeaders"] = None
    elif mangle == "no-flag":
        event.pop("isBase64Encoded")
        event["body"] = body.decode("utf-8", "replace")
    return event


def check(event: dict[str, Any], response: dict[str, Any]) -> None:
    status = response["statusCode"]
    assert status < 500, (status, response["body"])
    assert "Traceback" not in response["body"]
    if "elb" in event["requestContext"]:
        assert response["statusDescription"].startswith(str(status))
    assert ("multiValueHeaders" in response) is bool(event.get("multiValueHeaders"))
    if status >= 400:
        document = json.loads(response["body"])
        assert isinstance(document["error"], str)
        assert isinstance(document["message"], str)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=lambda_events())
def test_no_event_is_a_server_error(event: dict[str, Any]) -> None:
    check(event, HANDLER(event, None))


def test_memory_stays_flat_while_bad_events_repeat(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="fluxbase_receiver")  # no record kept per request
    corpus = [
        lambda_event(source, body, signature=signature, base64_body=True)
        for source in SOURCES
        for body, signature in [
            (b"\x00\xff" * 100, "t=1,v1=00"),
            (deep(20_000), None),
            (b"x" * (MAX_BODY + 1), None),
            (b'{"event": "INSERT"}', "garbage"),
        ]
    ]
    corpus.append({**corpus[0], "body": "%%%", "isBase64Encoded": True})

    def replay() -> int:
        for event in corpus:
            check(event, HANDLER(event, None))
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    try:
        before = replay()
        for _ in range(20):
            after = replay()
    finally:
        tracemalloc.stop()
    assert after - before < 256 * 1024
