"""pytest fixtures for testing Fluxbase webhook handlers without a Fluxbase server.

Installed with the package (``pytest11`` entry point ``fluxbase_receiver``): the fixtures
below are available in every test with no import.

``fluxbase_secret``
    A fresh random webhook secret.
``fluxbase_event``
    The event factory :func:`~fluxbase_receiver.testing.make_event`.
``fluxbase_signer``
    ``fluxbase_signer(event) -> (body, headers)`` exactly as a Fluxbase server sends them.
``fluxbase_post``
    ``fluxbase_post(target, event) -> WebhookResponse``: signs and posts to a Flask app or
    test client, a Starlette/FastAPI app or ``TestClient``, a Django application or test
    ``Client``, or an AWS Lambda handler.
``fluxbase_recorder``
    Records which handlers of a :class:`~fluxbase_receiver.Receiver` ran with which events.

This module imports only pytest, the standard library and the core; web frameworks are
used only when a target of theirs is passed in.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import pytest

from fluxbase_receiver.events import WebhookEvent
from fluxbase_receiver.receiver import Receiver
from fluxbase_receiver.testing import make_event, random_secret, sign_event

__all__ = [
    "HandlerCall",
    "LambdaContext",
    "LambdaFormat",
    "Poster",
    "Recorder",
    "Signer",
    "WebhookResponse",
    "lambda_event",
    "post_event",
]

LambdaFormat = Literal["v2", "v1", "url", "alb"]
"""API Gateway HTTP API (payload 2.0), API Gateway REST API (1.0), a Function URL, or an
Application Load Balancer."""

DEFAULT_PATH = "/webhooks/fluxbase"


# -- signing --------------------------------------------------------------------------


class Signer:
    """Signs events with a secret: ``signer(event, **options) -> (body, headers)``.

    ``event`` is a payload dict (default: a fresh ``make_event()``), or body bytes/text
    to sign as they are. Options are those of :func:`~fluxbase_receiver.testing.sign_event`:
    ``timestamp``, ``skew``, ``wrong_secret``, ``legacy_only``, ``headers``; ``secret``
    overrides the fixture's secret (a list signs with each: several ``v1`` entries).
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def __repr__(self) -> str:
        return "<Signer secret=***>"

    def __call__(
        self,
        event: Mapping[str, Any] | bytes | str | None = None,
        *,
        secret: str | Sequence[str] | None = None,
        timestamp: int | None = None,
        skew: float = 0,
        wrong_secret: bool = False,
        legacy_only: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        return sign_event(
            make_event() if event is None else event,
            self.secret if secret is None else secret,
            timestamp=timestamp,
            skew=skew,
            wrong_secret=wrong_secret,
            legacy_only=legacy_only,
            headers=headers,
        )


# -- posting --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WebhookResponse:
    """What the app answered, the same shape whatever the framework."""

    status: int
    body: bytes
    headers: dict[str, str]
    json: Any
    """The decoded JSON body, or ``None`` when the body is not JSON."""

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return 200 <= self.status < 300

    @classmethod
    def build(cls, status: int, body: bytes, headers: Mapping[str, str]) -> WebhookResponse:
        """A response from its parts, decoding the body as JSON when it is JSON."""
        try:
            decoded = json.loads(body) if body else None
        except ValueError:
            decoded = None
        return cls(status, body, dict(headers), decoded)


class LambdaContext:
    """A stand-in for the AWS Lambda context object (30 s of remaining time)."""

    function_name = "fluxbase-webhooks"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:fluxbase-webhooks"
    memory_limit_in_mb = 128
    log_group_name = "/aws/lambda/fluxbase-webhooks"
    log_stream_name = "2025/01/01/[$LATEST]0123456789abcdef"

    def __init__(self, timeout: float = 30.0) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the invocation would time out."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def lambda_event(
    body: bytes,
    headers: Mapping[str, str],
    *,
    path: str = DEFAULT_PATH,
    method: str = "POST",
    format: LambdaFormat = "v2",
) -> dict[str, Any]:
    """The event AWS Lambda receives for this request from API Gateway, a Function URL or an ALB.

    The body is passed as text, or base64 (``isBase64Encoded``) when it is not UTF-8.
    """
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode("ascii"), True
    now = datetime.now(UTC)
    request_id = str(uuid.uuid4())
    user_agent = next((v for k, v in headers.items() if k.lower() == "user-agent"), "")
    if format == "alb":
        return {
            "requestContext": {
                "elb": {
                    "targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:"
                    "targetgroup/fluxbase-webhooks/0123456789abcdef"
                }
            },
            "httpMethod": method,
            "path": path,
            "queryStringParameters": {},
            "headers": {name.lower(): value for name, value in headers.items()},
            "body": text,
            "isBase64Encoded": encoded,
        }
    if format == "v1":
        return {
            "resource": path,
            "path": path,
            "httpMethod": method,
            "headers": dict(headers),
            "multiValueHeaders": {name: [value] for name, value in headers.items()},
            "queryStringParameters": None,
            "multiValueQueryStringParameters": None,
            "pathParameters": None,
            "stageVariables": None,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "abcdef1234",
                "httpMethod": method,
                "path": f"/prod{path}",
                "resourcePath": path,
                "stage": "prod",
                "requestId": request_id,
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "identity": {"sourceIp": "127.0.0.1", "userAgent": user_agent},
            },
            "body": text,
            "isBase64Encoded": encoded,
        }
    route_key = "$default" if format == "url" else f"{method} {path}"
    domain = (
        "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws"
        if format == "url"
        else "abcdef1234.execute-api.us-east-1.amazonaws.com"
    )
    return {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": "",
        "headers": {name.lower(): value for name, value in headers.items()},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": domain.split(".", 1)[0],
            "domainName": domain,
            "domainPrefix": domain.split(".", 1)[0],
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": user_agent,
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


def _loaded_type(module: str, name: str) -> type[Any] | None:
    """A class from ``module`` if that module is already imported (else no target is one)."""
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) else None


def _post_lambda(
    handler: Callable[..., Any], body: bytes, headers: Mapping[str, str], path: str, fmt: str
) -> WebhookResponse:
    if fmt not in ("v2", "v1", "url", "alb"):
        raise ValueError(f"lambda_format must be 'v2', 'v1', 'url' or 'alb', not {fmt!r}")
    event = lambda_event(body, headers, path=path, format=fmt)  # type: ignore[arg-type]
    result = handler(event, LambdaContext())
    if not isinstance(result, Mapping) or "statusCode" not in result:
        raise TypeError("the Lambda handler must return a dict with a statusCode")
    raw = result.get("body") or ""
    data = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode("utf-8")
    return WebhookResponse.build(int(result["statusCode"]), data, result.get("headers") or {})


def post_event(
    target: Any,
    body: bytes,
    headers: Mapping[str, str],
    *,
    path: str = DEFAULT_PATH,
    lambda_format: LambdaFormat = "v2",
) -> WebhookResponse:
    """POST ``body`` with ``headers`` to ``target`` and return the uniform response.

    ``target``: a Flask app or its test client (any werkzeug test client), a
    Starlette/FastAPI app or its ``TestClient`` (any ``httpx.Client``), Django's WSGI or
    ASGI application (posted through a ``django.test.Client``, which serves the project's
    ``ROOT_URLCONF`` as host ``testserver``: use Django's test environment, e.g.
    pytest-django) or a test ``Client``, or an AWS Lambda handler
    ``handler(event, context)``, called with an API Gateway, Function URL or ALB event in
    ``lambda_format``.
    """
    if callable(getattr(target, "test_client", None)):
        target = target.test_client()
    starlette_app = _loaded_type("starlette.applications", "Starlette")
    if starlette_app is not None and isinstance(target, starlette_app):
        from starlette.testclient import TestClient

        target = TestClient(target)
    werkzeug_client = _loaded_type("werkzeug.test", "Client")
    if werkzeug_client is not None and isinstance(target, werkzeug_client):
        answer = target.post(path, data=body, headers=dict(headers))
        return WebhookResponse.build(answer.status_code, answer.get_data(), answer.headers)
    httpx_client = _loaded_type("httpx", "Client")
    if httpx_client is not None and isinstance(target, httpx_client):
        answer = target.post(path, content=body, headers=dict(headers))
        return WebhookResponse.build(answer.status_code, answer.content, answer.headers)
    django_handler = _loaded_type("django.core.handlers.base", "BaseHandler")
    if django_handler is not None and isinstance(target, django_handler):
        from django.test import Client

        target = Client()
    django_client = _loaded_type("django.test.client", "Client")
    if django_client is not None and isinstance(target, django_client):
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        answer = target.generic(
            "POST", path, body, content_type=content_type, headers=dict(headers)
        )
        return WebhookResponse.build(answer.status_code, answer.content, answer.headers)
    if callable(target):
        return _post_lambda(target, body, headers, path, lambda_format)
    raise TypeError(
        f"cannot post to {type(target).__name__}: pass a Flask app or test client, "
        "a Starlette/FastAPI app or TestClient, a Django application or test Client, "
        "or a Lambda handler"
    )


class Poster:
    """Signs an event and posts it: ``post(target, event, **options) -> WebhookResponse``.

    ``event`` defaults to a fresh ``make_event()``; ``request=(body, headers)`` posts an
    already signed (or deliberately broken) request as it is. ``path`` is the webhook
    route (default ``/webhooks/fluxbase``), ``lambda_format`` the Lambda event shape;
    other options go to :class:`Signer`.
    """

    def __init__(self, signer: Signer) -> None:
        self.signer = signer

    def __repr__(self) -> str:
        return "<Poster>"

    def __call__(
        self,
        target: Any,
        event: Mapping[str, Any] | bytes | str | None = None,
        *,
        request: tuple[bytes, Mapping[str, str]] | None = None,
        path: str = DEFAULT_PATH,
        lambda_format: LambdaFormat = "v2",
        **sign_options: Any,
    ) -> WebhookResponse:
        body, headers = self.signer(event, **sign_options) if request is None else request
        return post_event(target, body, headers, path=path, lambda_format=lambda_format)


# -- recording ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HandlerCall:
    """One handler invocation: the handler function, its name, and the event it got."""

    handler: Callable[..., Any]
    name: str
    event: WebhookEvent


def _name(handler: Callable[..., Any]) -> str:
    name = getattr(handler, "__qualname__", None) or getattr(handler, "__name__", None)
    return name if isinstance(name, str) else repr(handler)


class Recorder:
    """Records the handler calls of the receivers it watches.

    ``recorder.watch(receiver)`` observes every handler call of ``receiver`` (through
    :meth:`Receiver.observe`; the handlers run as usual); the fixture stops watching
    after the test. A handler is named by the function itself or its (qualified) name.
    """

    def __init__(self) -> None:
        self.calls: list[HandlerCall] = []
        self._lock = threading.Lock()
        self._stops: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"<Recorder calls={len(self.calls)}>"

    def watch(self, receiver: Receiver) -> Receiver:
        """Record every call of ``receiver``'s handlers from now on; return ``receiver``."""
        self._stops.append(receiver.observe(self._record))
        return receiver

    def restore(self) -> None:
        """Stop watching every receiver."""
        for stop in self._stops:
            stop()
        self._stops.clear()

    def _record(self, func: Callable[..., Any], event: WebhookEvent) -> None:
        with self._lock:
            self.calls.append(HandlerCall(func, _name(func), event))

    def _matches(self, call: HandlerCall, handler: Callable[..., Any] | str) -> bool:
        if isinstance(handler, str):
            return handler in (call.name, call.name.rpartition(".")[2])
        return call.handler is handler or call.handler is getattr(handler, "__wrapped__", None)

    @property
    def ran(self) -> list[str]:
        """The names of the handlers that ran, in call order."""
        return [call.name for call in self.calls]

    def events(self, handler: Callable[..., Any] | str | None = None) -> list[WebhookEvent]:
        """The events passed to ``handler`` (to any handler when ``None``), in order."""
        return [c.event for c in self.calls if handler is None or self._matches(c, handler)]

    def assert_ran(
        self,
        handler: Callable[..., Any] | str,
        *,
        times: int | None = None,
        event: str | None = None,
        table: str | None = None,
    ) -> WebhookEvent:
        """Assert ``handler`` ran (``times`` times, for ``event``/``table``); return its event."""
        seen = [
            e
            for e in self.events(handler)
            if (event is None or e.event == event.upper())
            and (table is None or table in (e.table, e.qualified_table))
        ]
        wanted = " ".join(f"{k}={v}" for k, v in (("event", event), ("table", table)) if v)
        label = f"{handler if isinstance(handler, str) else _name(handler)} {wanted}".strip()
        if not seen:
            raise AssertionError(f"{label} did not run; handlers that ran: {self.ran}")
        if times is not None and len(seen) != times:
            raise AssertionError(f"{label} ran {len(seen)} time(s), expected {times}")
        return seen[-1]

    def assert_not_ran(self, handler: Callable[..., Any] | str) -> None:
        """Assert ``handler`` never ran."""
        count = len(self.events(handler))
        if count:
            label = handler if isinstance(handler, str) else _name(handler)
            raise AssertionError(f"{label} ran {count} time(s), expected none")

    def clear(self) -> None:
        """Forget the calls recorded so far."""
        with self._lock:
            self.calls.clear()


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture
def fluxbase_secret() -> str:
    """A fresh random webhook secret."""
    return random_secret()


@pytest.fixture
def fluxbase_event() -> Callable[..., dict[str, Any]]:
    """The event factory: ``fluxbase_event("UPDATE", table="orders", record={...})``."""
    return make_event


@pytest.fixture
def fluxbase_signer(fluxbase_secret: str) -> Signer:
    """``fluxbase_signer(event, **options) -> (body, headers)``, signed with ``fluxbase_secret``."""
    return Signer(fluxbase_secret)


@pytest.fixture
def fluxbase_post(fluxbase_signer: Signer) -> Poster:
    """``fluxbase_post(target, event, **options) -> WebhookResponse``: sign, post, answer."""
    return Poster(fluxbase_signer)


@pytest.fixture
def fluxbase_recorder() -> Iterator[Recorder]:
    """A :class:`Recorder`; ``fluxbase_recorder.watch(receiver)`` records its handlers."""
    recorder = Recorder()
    yield recorder
    recorder.restore()
