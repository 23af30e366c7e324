"""The adapter contract: every row of DESIGN.md's status table, the trailing slash, TEST
events and answering early, against every adapter under a real server over loopback
(waitress, uvicorn, aiohttp) or, for Lambda, by invoking the handler.

Each adapter is one small entry of ``ADAPTERS``: how to serve a receiver with it."""

import json
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import pytest
from aiohttp import web
from django.urls import path
from fastapi import FastAPI
from flask import Flask
from starlette.applications import Starlette

from fluxbase_receiver import Receiver, WebhookEvent
from fluxbase_receiver.adapters import aiohttp as aiohttp_adapter
from fluxbase_receiver.adapters import django as django_adapter
from fluxbase_receiver.adapters._common import Respond
from fluxbase_receiver.adapters.aws_lambda import lambda_handler
from fluxbase_receiver.adapters.fastapi import (
    FluxbaseWebhook,
    add_webhook_route,
    install_exception_handler,
)
from fluxbase_receiver.adapters.flask import FluxbaseWebhooks, webhook_view
from fluxbase_receiver.adapters.starlette import FluxbaseASGIMiddleware, webhook_routes
from fluxbase_receiver.adapters.wsgi import FluxbaseWSGIMiddleware
from fluxbase_receiver.testing import lambda_event
from tests.adapters.conftest import (
    BAD_SIGNATURES,
    PATH,
    SECRET,
    Calls,
    Gate,
    WatchedStore,
    badly_signed_headers,
    event_body,
    run_aiohttp,
    run_django,
    signed_headers,
    with_event_id,
)
from tests.servers import run_asgi, run_wsgi

LIMIT = 65_536
EVERY_OPERATION = ("INSERT", "UPDATE", "DELETE", "TEST")
"""What the single-route adapters (views, FastAPI) are given, so TEST reaches handlers."""

Serve = Callable[[Receiver, Respond], AbstractContextManager[str | httpx.Client]]


@dataclass(frozen=True)
class Adapter:
    serve: Serve
    early: bool = False
    """Answers 202 with ``respond="immediately"``."""
    own_405: bool = True
    """Answers 405 in the webhook's JSON shape (FastAPI answers it itself)."""


def other_wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"another app"]


async def other_asgi(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b"another app"})


def flask(receiver: Receiver, respond: Respond) -> AbstractContextManager[str]:
    app = Flask(__name__)
    FluxbaseWebhooks(app, receiver, respond=respond)
    return run_wsgi(app)


def flask_view(receiver: Receiver, respond: Respond) -> AbstractContextManager[str]:
    app = Flask(__name__)

    @app.route(PATH + "/", methods=["GET", "POST", "PUT", "DELETE"], strict_slashes=False)
    @webhook_view(receiver, "*", *EVERY_OPERATION)
    def hook(event: WebhookEvent) -> None:
        return None

    return run_wsgi(app)


def wsgi(receiver: Receiver, respond: Respond) -> AbstractContextManager[str]:
    return run_wsgi(FluxbaseWSGIMiddleware(other_wsgi, receiver, respond=respond))


def starlette(receiver: Receiver, respond: Respond) -> AbstractContextManager[str]:
    return run_asgi(Starlette(routes=webhook_routes(PATH, receiver, respond=respond)))


def asgi(receiver: Receiver, respond: Respond) -> AbstractContextManager[str]:
    return run_asgi(FluxbaseASGIMiddleware(other_asgi, receiver, respond=respond))


def fastapi(receiver: Receiver, respond: Respond) -> AbstractContextManager[str]:
    app = FastAPI()
    install_exception_handler(app)
    webhook = FluxbaseWebhook(receiver, "*", *EVERY_OPERATION)

    @webhook.post(app, PATH)
    async def hook(event: Annotated[WebhookEvent, webhook.depends]) -> dict[str, bool]:
        return {"ok": True}

    return run_asgi(app)


def fastapi_route(receiver: Receiver, respond: Respond) -> AbstractContextManager[str]:
    app = FastAPI()
    add_webhook_route(app, PATH, receiver, respond=respond)
    return run_asgi(app)


@contextmanager
def aws_lambda(receiver: Receiver, respond: Respond) -> Iterator[httpx.Client]:
    """A client whose requests become API Gateway events, passed to the Lambda handler."""
    handler = lambda_handler(receiver)

    def invoke(request: httpx.Request) -> httpx.Response:
        event = lambda_event(
            request.read(), dict(request.headers), path=request.url.path, method=request.method
        )
        answer = handler(event, None)
        return httpx.Response(
            answer["statusCode"], headers=answer["headers"], content=answer["body"].encode()
        )

    with httpx.Client(transport=httpx.MockTransport(invoke), base_url="http://lambda") as client:
        yield client


def django(receiver: Receiver, respond: Respond) -> AbstractContextManager[str]:
    return run_django(django_adapter.webhook_urls(PATH, receiver), asgi=False)


def django_async(receiver: Receiver, respond: Respond) -> AbstractContextManager[str]:
    urls = django_adapter.webhook_urls(PATH, receiver, asynchronous=True, respond=respond)
    return run_django(urls, asgi=True)


def django_view(receiver: Receiver, respond: Respond) -> AbstractContextManager[str]:
    @django_adapter.webhook_view(receiver, "*", *EVERY_OPERATION)
    def hook(request: Any, event: WebhookEvent) -> None:
        return None

    return run_django([path(PATH[1:], hook), path(PATH[1:] + "/", hook)], asgi=False)


def django_view_async(receiver: Receiver, respond: Respond) -> AbstractContextManager[str]:
    @django_adapter.webhook_view(receiver, "*", *EVERY_OPERATION)
    async def hook(request: Any, event: WebhookEvent) -> None:
        return None

    return run_django([path(PATH[1:], hook), path(PATH[1:] + "/", hook)], asgi=True)


def aiohttp(receiver: Receiver, respond: Respond) -> AbstractContextManager[str]:
    app = web.Application()
    app.add_routes(aiohttp_adapter.webhook_routes(PATH, receiver, respond=respond))
    return run_aiohttp(app)


def aiohttp_middleware(receiver: Receiver, respond: Respond) -> AbstractContextManager[str]:
    middleware = aiohttp_adapter.webhook_middleware(receiver, respond=respond)
    return run_aiohttp(web.Application(middlewares=[middleware]))


ADAPTERS = {
    "flask": Adapter(flask, early=True),
    "flask-view": Adapter(flask_view),
    "wsgi": Adapter(wsgi, early=True),
    "starlette": Adapter(starlette, early=True),
    "asgi": Adapter(asgi, early=True),
    "fastapi": Adapter(fastapi, own_405=False),
    "fastapi-route": Adapter(fastapi_route, early=True),
    "lambda": Adapter(aws_lambda),
    "django": Adapter(django),
    "django-async": Adapter(django_async, early=True),
    "django-view": Adapter(django_view),
    "django-view-async": Adapter(django_view_async),
    "aiohttp": Adapter(aiohttp, early=True),
    "aiohttp-middleware": Adapter(aiohttp_middleware, early=True),
}


@contextmanager
def client_for(name: str, receiver: Receiver, respond: Respond) -> Iterator[httpx.Client]:
    with ADAPTERS[name].serve(receiver, respond) as served:
        if isinstance(served, httpx.Client):
            yield served
            return
        with httpx.Client(base_url=served, timeout=30, follow_redirects=False) as client:
            yield client


@dataclass
class Served:
    name: str
    client: httpx.Client
    handled: Calls
    tested: Calls
    gate: Gate

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.client.post(
            PATH, content=body, headers=signed_headers(body) if headers is None else headers
        )


@pytest.fixture(scope="module", params=sorted(ADAPTERS))
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    """An adapter serving a receiver whose handlers record ``orders`` events (``handled``)
    and TEST events (``tested``), hold ``slow_jobs`` events at a gate and fail for
    ``broken_jobs``."""
    receiver = Receiver(SECRET, max_body_bytes=LIMIT)
    handled, tested, gate = Calls(), Calls(), Gate()
    receiver.on("orders")(handled)
    receiver.on("*", "TEST")(tested)
    receiver.on("slow_jobs")(gate)

    @receiver.on("broken_jobs")
    def broken(event: Any) -> None:
        raise RuntimeError("database password is hunter2")

    with client_for(request.param, receiver, "after_handlers") as client:
        yield Served(request.param, client, handled, tested, gate)


def unique_id() -> str:
    return f"evt-{time.monotonic_ns()}"


def test_accepted_is_200_and_runs_the_handlers_once(served: Served) -> None:
    body = event_body("INSERT", "orders", id=101)
    response = served.post(body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"ok": True}
    assert served.handled.count(101) == 1


def test_redelivery_of_a_completed_event_is_a_duplicate(served: Served) -> None:
    body = with_event_id(event_body("UPDATE", "orders", id=102), unique_id())
    assert served.post(body).json() == {"ok": True}
    again = served.post(body)
    assert again.status_code == 200
    assert again.json() == {"ok": True, "duplicate": True}
    assert served.handled.count(102) == 1


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_are_405(served: Served, method: str) -> None:
    response = served.client.request(method, PATH)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    if ADAPTERS[served.name].own_405:
        assert response.json()["error"] == "method_not_allowed"


def chunks(size: int) -> Iterator[bytes]:
    for _ in range(size // 65_536):
        yield b"x" * 65_536


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_body_over_the_limit_is_413(served: Served, framing: str) -> None:
    if framing == "content-length":
        body = event_body("INSERT", "orders", id=103, blob="x" * LIMIT)
        response = served.post(body)
    else:
        response = served.client.post(
            PATH, content=chunks(2 * 1_048_576), headers=signed_headers(b"")
        )
    assert response.status_code == 413
    assert response.json() == {
        "error": "payload_too_large",
        "message": f"body exceeds {LIMIT} bytes",
    }
    assert served.handled.count(103) == 0


def test_a_content_type_that_is_not_json_is_415(served: Served) -> None:
    body = event_body("INSERT", "orders", id=104)
    response = served.post(body, {**signed_headers(body), "Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert served.handled.count(104) == 0


@pytest.mark.parametrize(("signature", "code"), BAD_SIGNATURES)
def test_bad_signatures_are_401(served: Served, signature: str | None, code: str) -> None:
    body = event_body("INSERT", "orders", id=105)
    response = served.post(body, badly_signed_headers(body, signature))
    assert response.status_code == 401
    assert response.json()["error"] == code
    assert SECRET not in response.text
    assert served.handled.count(105) == 0


@pytest.mark.parametrize("body", [b"{not json", b'{"event": "INSERT"}', b'["INSERT"]'])
def test_a_body_that_is_not_an_event_is_400(served: Served, body: bytes) -> None:
    response = served.post(body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_payload"


def test_the_same_event_while_its_handlers_run_is_409(served: Served) -> None:
    body = with_event_id(event_body("INSERT", "slow_jobs", id=106), unique_id())
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(served.post, body)
        assert served.gate.started.wait(timeout=20)
        try:
            second = served.post(body)
        finally:
            served.gate.release.set()
        assert first.result().status_code == 200
    assert second.status_code == 409
    assert second.json()["error"] == "event_in_progress"
    assert served.post(body).json() == {"ok": True, "duplicate": True}


def test_a_failing_handler_is_500_without_its_text_and_runs_again(served: Served) -> None:
    body = with_event_id(event_body("INSERT", "broken_jobs", id=107), unique_id())
    response = served.post(body)
    assert response.status_code == 500
    assert response.json()["error"] == "handler_failed"
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    assert served.post(body).status_code == 500  # the claim was released: it ran again


@pytest.mark.parametrize("url", [PATH, PATH + "/"])
def test_the_url_with_or_without_a_trailing_slash_reaches_the_handlers(
    served: Served, url: str
) -> None:
    body = event_body("INSERT", "orders")
    response = served.client.post(url, content=body, headers=signed_headers(body))
    assert response.status_code == 200, response.text
    assert served.handled.count(json.loads(body)["record"]["id"]) == 1


def test_test_events_reach_the_test_handlers_every_time(served: Served) -> None:
    body = with_event_id(event_body("TEST", "orders", id=108), unique_id())
    for _ in range(2):  # each click on "test" arrives: never a duplicate
        response = served.post(body)
        assert response.status_code == 200
        assert response.json() == {"ok": True}
    assert served.tested.count(108) == 2
    assert served.handled.count(108) == 0


@pytest.mark.parametrize("name", sorted(name for name, a in ADAPTERS.items() if a.early))
def test_answering_early_is_202_then_the_handlers_run(name: str) -> None:
    store = WatchedStore()
    receiver = Receiver(SECRET, idempotency=store)
    gate = Gate()
    receiver.on("orders")(gate)
    body = with_event_id(event_body("INSERT", "orders", id=109), unique_id())
    with client_for(name, receiver, "immediately") as client:

        def post() -> httpx.Response:
            return client.post(PATH, content=body, headers=signed_headers(body))

        response = post()
        assert response.status_code == 202
        assert response.json() == {"ok": True, "accepted": True}
        assert gate.started.wait(timeout=20)  # the handler runs after the answer
        assert post().status_code == 409
        gate.release.set()
        assert store.settled.acquire(timeout=20)  # the background run completed the claim
        assert post().json() == {"ok": True, "duplicate": True}
