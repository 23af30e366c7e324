"""Posting a signed request to an app under test, whatever it is built with.

Standard library and the core only; a framework's test client is used only when a target
of that framework is passed in.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import inspect
import io
import json
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from fluxbase_receiver.testing.lambda_events import (
    DEFAULT_PATH,
    LambdaContext,
    LambdaFormat,
    lambda_event,
)
from fluxbase_receiver.testing.signing import Signer

__all__ = ["Poster", "WebhookResponse", "post_event"]


@dataclasses.dataclass(frozen=True)
class WebhookResponse:
    """What the app answered, the same shape whatever the framework."""

    status: int
    body: bytes
    headers: dict[str, str]
    """Response headers; a header sent several times has its values joined with ``", "``."""
    json: Any
    """The decoded JSON body, or ``None`` when the body is not JSON."""

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return 200 <= self.status < 300

    @classmethod
    def build(
        cls, status: int, body: bytes, headers: Mapping[str, str] | Iterable[tuple[str, str]]
    ) -> WebhookResponse:
        """A response from its parts, decoding the body as JSON when it is JSON."""
        try:
            decoded = json.loads(body) if body else None
        except ValueError:
            decoded = None
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        joined: dict[str, str] = {}
        for name, value in pairs:
            joined[name] = f"{joined[name]}, {value}" if name in joined else str(value)
        return cls(status, body, joined, decoded)


def post_event(
    target: Any,
    body: bytes,
    headers: Mapping[str, str],
    *,
    path: str = DEFAULT_PATH,
    lambda_format: LambdaFormat = "v2",
) -> WebhookResponse:
    """POST ``body`` with ``headers`` to ``target`` and return the uniform response.

    ``target``: any ASGI application (Starlette, FastAPI, ``FluxbaseASGIMiddleware``, ...),
    any WSGI application (a callable taking ``environ, start_response``:
    ``FluxbaseWSGIMiddleware``, ...), a Flask app or its test client (any werkzeug test
    client), a Starlette ``TestClient`` (any ``httpx.Client``), Django's WSGI or ASGI
    application (posted through a ``django.test.Client``, which serves the project's
    ``ROOT_URLCONF`` as host ``testserver``: use Django's test environment, e.g.
    pytest-django) or a test ``Client``, or an AWS Lambda handler
    ``handler(event, context)``, called with an API Gateway, Function URL or ALB event in
    ``lambda_format``.
    """
    if callable(getattr(target, "test_client", None)):
        target = target.test_client()
    werkzeug_client = _loaded_type("werkzeug.test", "Client")
    if werkzeug_client is not None and isinstance(target, werkzeug_client):
        answer = target.post(path, data=body, headers=dict(headers))
        return WebhookResponse.build(answer.status_code, answer.get_data(), answer.headers)
    httpx_client = _loaded_type("httpx", "Client")
    if httpx_client is not None and isinstance(target, httpx_client):
        answer = target.post(path, content=body, headers=dict(headers))
        return WebhookResponse.build(answer.status_code, answer.content, answer.headers.items())
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
    if _is_asgi(target):
        return _run(_post_asgi(target, body, headers, path))
    if _is_wsgi(target):
        return _post_wsgi(target, body, headers, path)
    if callable(target):
        return _post_lambda(target, body, headers, path, lambda_format)
    raise TypeError(
        f"cannot post to {type(target).__name__}: pass an ASGI or WSGI application, a Flask "
        "app or test client, a Starlette TestClient, a Django application or test Client, "
        "or a Lambda handler"
    )


def _loaded_type(module: str, name: str) -> type[Any] | None:
    """A class from ``module`` if that module is already imported (else no target is one)."""
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) else None


def _is_asgi(target: Any) -> bool:
    """An ``async`` callable (function or object): an ASGI 3 application."""
    call = target if inspect.isroutine(target) else getattr(target, "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(call)


def _is_wsgi(target: Any) -> bool:
    """A callable with PEP 3333's ``start_response`` parameter."""
    try:
        return "start_response" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def _run(coroutine: Coroutine[Any, Any, WebhookResponse]) -> WebhookResponse:
    """Run ``coroutine`` to the end, on a fresh thread when this one runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _header_pairs(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The request headers, lower-cased, with a ``host`` and without a ``content-length``."""
    pairs = [(name.lower(), value) for name, value in headers.items()]
    if not any(name == "host" for name, _ in pairs):
        pairs.append(("host", "testserver"))
    return [(name, value) for name, value in pairs if name != "content-length"]


async def _post_asgi(
    app: Callable[..., Any], body: bytes, headers: Mapping[str, str], path: str
) -> WebhookResponse:
    """One HTTP request through an ASGI 3 application."""
    sent = [*_header_pairs(headers), ("content-length", str(len(body)))]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8"),
        "query_string": b"",
        "root_path": "",
        "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in sent],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    done = asyncio.Event()
    requested = False
    status = 500
    answer_headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Mapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            answer_headers.extend(
                (bytes(n).decode("latin-1"), bytes(v).decode("latin-1"))
                for n, v in message.get("headers", ())
            )
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                done.set()

    await app(scope, receive, send)
    done.set()
    return WebhookResponse.build(status, b"".join(chunks), answer_headers)


def _post_wsgi(
    app: Callable[..., Iterable[bytes]], body: bytes, headers: Mapping[str, str], path: str
) -> WebhookResponse:
    """One HTTP request through a WSGI application (PEP 3333)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in _header_pairs(headers):
        key = name.upper().replace("-", "_")
        environ[key if key == "CONTENT_TYPE" else f"HTTP_{key}"] = value
    started: list[Any] = []
    chunks: list[bytes] = []

    def start_response(
        status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, response_headers]
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise TypeError("the WSGI application returned without calling start_response")
    return WebhookResponse.build(int(started[0].split()[0]), b"".join(chunks), started[1])


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
    # API Gateway merges both; a header in multiValueHeaders takes its values from there.
    multi: Mapping[str, Any] = result.get("multiValueHeaders") or {}
    listed = {str(name).lower() for name in multi}
    single: Mapping[str, Any] = result.get("headers") or {}
    pairs = [(str(k), str(v)) for k, v in single.items() if str(k).lower() not in listed]
    pairs += [(str(k), str(v)) for k, values in multi.items() for v in values]
    return WebhookResponse.build(int(result["statusCode"]), data, pairs)


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
