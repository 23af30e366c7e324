"""``fluxbase_post`` / ``post_event`` against every kind of target, and ``fluxbase_use_secret``."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from fluxbase_receiver import Receiver
from fluxbase_receiver.adapters.starlette import FluxbaseASGIMiddleware
from fluxbase_receiver.adapters.wsgi import FluxbaseWSGIMiddleware
from fluxbase_receiver.testing import lambda_event, make_event, sign_event
from fluxbase_receiver.testing.posting import post_event
from fluxbase_receiver.testing.signing import use_secret

SECRET = "posting-secret"


def recording_receiver() -> tuple[Receiver, list[str]]:
    receiver = Receiver(SECRET)
    seen: list[str] = []

    @receiver.on("orders")
    def handled(event: Any) -> None:
        seen.append(event.event)

    return receiver, seen


async def plain_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 418, "headers": [(b"x-app", b"asgi")]})
    await send({"type": "http.response.body", "body": b"teapot"})


def plain_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("418 I'm a teapot", [("x-app", "wsgi")])
    return [b"tea", b"pot"]


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_our_middlewares_receive_webhooks_and_pass_other_paths_on(kind: str) -> None:
    receiver, seen = recording_receiver()
    app: Any = (
        FluxbaseASGIMiddleware(plain_asgi, receiver)
        if kind == "asgi"
        else FluxbaseWSGIMiddleware(plain_wsgi, receiver)
    )
    body, headers = sign_event(make_event("UPDATE", table="orders"), SECRET)

    answer = post_event(app, body, headers)
    assert answer.status == 200 and answer.json is not None and answer.ok
    assert seen == ["UPDATE"]
    refused = post_event(app, *sign_event(make_event(table="orders"), "not-the-secret"))
    assert refused.status == 401 and seen == ["UPDATE"]

    other = post_event(app, body, headers, path="/elsewhere")
    assert (other.status, other.body, other.headers["x-app"]) == (418, b"teapot", kind)


def test_a_plain_asgi_app_is_driven_from_inside_a_running_event_loop() -> None:
    async def inside() -> Any:
        return post_event(plain_asgi, b"{}", {"Content-Type": "application/json"})

    answer = asyncio.run(inside())
    assert (answer.status, answer.body, answer.json) == (418, b"teapot", None)


def test_a_plain_wsgi_app_gets_the_body_and_headers() -> None:
    received: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ["CONTENT_LENGTH"])
        received.update(
            body=environ["wsgi.input"].read(length),
            content_type=environ["CONTENT_TYPE"],
            signature=environ["HTTP_X_FLUXBASE_SIGNATURE"],
            path=environ["PATH_INFO"],
        )
        start_response("202 Accepted", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
        return [b'{"ok": true}']

    body, headers = sign_event(make_event(), SECRET)
    answer = post_event(app, body, headers, path="/hook")
    assert (answer.status, answer.json) == (202, {"ok": True})
    assert answer.headers["Set-Cookie"] == "a=1, b=2"
    assert received == {
        "body": body,
        "content_type": "application/json",
        "signature": headers["X-Fluxbase-Signature"],
        "path": "/hook",
    }


def test_lambda_v1_answers_are_read_with_their_multi_value_headers() -> None:
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "application/json", "Set-Cookie": "ignored"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "X-Seen": [event["httpMethod"]]},
            "body": json.dumps({"received": True}),
        }

    answer = post_event(handler, b"{}", {}, lambda_format="v1")
    assert answer.json == {"received": True}
    assert answer.headers == {
        "Content-Type": "application/json",
        "Set-Cookie": "a=1, b=2",
        "X-Seen": "POST",
    }


def test_lambda_event_is_public_and_carries_the_signed_request() -> None:
    body, headers = sign_event(make_event(), SECRET)
    event = lambda_event(body, headers, format="v1")
    assert event["body"] == body.decode() and not event["isBase64Encoded"]
    assert event["headers"]["X-Fluxbase-Signature"] == headers["X-Fluxbase-Signature"]


def test_use_secret_points_a_receiver_at_another_secret_and_back() -> None:
    receiver, seen = recording_receiver()
    request = sign_event(make_event(table="orders"), "the-tests-secret")
    restore = use_secret(receiver, "the-tests-secret")
    assert receiver.handle(*request).status == 200
    restore()
    assert (
        receiver.handle(*sign_event(make_event(table="orders"), "the-tests-secret")).status == 401
    )
    assert receiver.handle(*sign_event(make_event(table="orders"), SECRET)).status == 200
    assert seen == ["INSERT", "INSERT"]


def test_the_use_secret_fixture_needs_no_reimport_of_the_app(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        app_module=textwrap.dedent(
            """
            from fluxbase_receiver import Receiver
            from fluxbase_receiver.adapters.starlette import FluxbaseASGIMiddleware

            async def site(scope, receive, send):
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b""})

            receiver = Receiver("the-production-secret")
            app = FluxbaseASGIMiddleware(site, receiver)
            """
        ),
        test_user=textwrap.dedent(
            """
            import app_module

            def test_posts_with_the_test_secret(fluxbase_use_secret, fluxbase_post):
                fluxbase_use_secret(app_module.receiver)
                assert fluxbase_post(app_module.app).status == 200

            def test_the_receivers_own_secret_is_back(fluxbase_post):
                assert fluxbase_post(app_module.app).status == 401
                secret = "the-production-secret"
                assert fluxbase_post(app_module.app, secret=secret).status == 200
            """
        ),
    )
    pytester.runpytest("-q", "-p", "no:randomly").assert_outcomes(passed=2)
