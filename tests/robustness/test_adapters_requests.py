"""Generated bad requests against every web adapter under a real server (waitress, uvicorn).

Each adapter is served once for the module. Every request must get an answer below 500
(or none, when the request never finished), a JSON ``error``/``message`` body for each 4xx
the adapter gives, no traceback; the server stays up, logs no error, and its memory stays
flat while a fixed mix of bad requests is replayed.
"""

from __future__ import annotations

import gc
import io
import logging
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask
from hypothesis import HealthCheck, assume, given, settings
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from werkzeug.test import EnvironBuilder

from fluxbase_receiver import Receiver
from fluxbase_receiver.adapters.fastapi import FluxbaseWebhook, install_exception_handler
from fluxbase_receiver.adapters.flask import METHODS as FLASK_METHODS
from fluxbase_receiver.adapters.flask import FluxbaseWebhooks
from fluxbase_receiver.adapters.starlette import FluxbaseASGIMiddleware, webhook_endpoint
from fluxbase_receiver.adapters.wsgi import FluxbaseWSGIMiddleware
from tests.adapters.conftest import PATH, SECRET, event_body, signed_headers
from tests.robustness.raw_http import (
    CORPUS,
    MAX_BODY,
    ErrorRecords,
    RawRequest,
    bad_requests,
    check,
    send,
    still_up,
)
from tests.servers import run_asgi, run_wsgi

EXAMPLES = 120
"""Generated requests per adapter."""
REPLAYS = 10
"""Rounds of :data:`CORPUS` replayed while memory is measured."""
MEMORY_BOUND = 512 * 1024


def receiver() -> Receiver:
    return Receiver(SECRET, max_body_bytes=MAX_BODY)


def not_found(environ: Any, start_response: Any) -> list[bytes]:
    start_response("404 Not Found", [("Content-Type", "application/json")])
    return [b'{"error": "not_found"}']


async def asgi_not_found(request: Any) -> JSONResponse:
    return JSONResponse({"error": "not_found"}, 404)


def flask_app() -> Any:
    app = Flask(__name__)
    FluxbaseWebhooks(app, receiver(), url=PATH)
    return app


async def accepted() -> dict[str, bool]:
    return {"ok": True}


def fastapi_app() -> Any:
    app = FastAPI()
    install_exception_handler(app)
    webhook = FluxbaseWebhook(receiver())
    app.add_api_route(PATH, accepted, methods=["POST"], dependencies=[webhook.depends])
    return app


@dataclass(frozen=True)
class Adapter:
    """An app factory, the server to run it under, and which 4xx answers are the adapter's."""

    build: Callable[[], Any]
    serve: Callable[[Any], AbstractContextManager[str]]
    ours: Callable[[RawRequest], bool] = lambda request: True


ADAPTERS = {
    # Flask routes the methods FluxbaseWebhooks lists; others get Flask's own 404 page.
    "flask": Adapter(flask_app, run_wsgi, lambda request: request.method in FLASK_METHODS),
    "wsgi-middleware": Adapter(lambda: FluxbaseWSGIMiddleware(not_found, receiver()), run_wsgi),
    "starlette-endpoint": Adapter(
        lambda: Starlette(routes=[Route(PATH, webhook_endpoint(receiver()))]), run_asgi
    ),
    "asgi-middleware": Adapter(
        lambda: FluxbaseASGIMiddleware(
            Starlette(routes=[Route("/", asgi_not_found)]), receiver(), path=PATH
        ),
        run_asgi,
    ),
    # FastAPI answers methods the route does not list itself ({"detail": ...}).
    "fastapi": Adapter(fastapi_app, run_asgi, lambda request: request.method == "POST"),
}


@dataclass
class Served:
    url: str
    adapter: Adapter
    errors: ErrorRecords


@pytest.fixture(scope="module", params=list(ADAPTERS))
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    adapter = ADAPTERS[request.param]
    errors = ErrorRecords()
    logging.getLogger().addHandler(errors)
    try:
        with adapter.serve(adapter.build()) as url:
            yield Served(url, adapter, errors)
    finally:
        logging.getLogger().removeHandler(errors)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(request=bad_requests(SECRET))
def test_no_request_is_a_server_error(served: Served, request: RawRequest) -> None:
    # waitress itself drops the connection (and logs an error) on such a Content-Length
    assume(not (request.length_beyond_int and served.adapter.serve is run_wsgi))
    check(send(served.url, request), request, ours=served.adapter.ours(request))


def test_the_server_is_up_and_logged_no_error(served: Served) -> None:
    if served.adapter.ours(RawRequest("GET", (), b"", "none")):
        still_up(served.url)
    assert served.errors.messages() == []


def test_memory_stays_flat_while_bad_requests_repeat(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="fluxbase_receiver")  # no record kept per request

    def replay() -> int:
        for request in CORPUS:
            check(send(served.url, request), request, ours=served.adapter.ours(request))
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    try:
        before = replay()
        for _ in range(REPLAYS - 1):
            after = replay()
    finally:
        tracemalloc.stop()
    assert after - before < MEMORY_BOUND


# -- a body shorter than its Content-Length ----------------------------------------------


@pytest.mark.parametrize("name", ["flask", "wsgi-middleware"])
def test_a_body_cut_short_is_400_not_a_signature_failure(name: str) -> None:
    """A server that ends the input stream itself (``wsgi.input_terminated``, as gunicorn
    does) hands over the bytes that arrived; fewer than ``Content-Length`` is a bad body,
    refused before the signature is checked."""
    body = event_body()
    environ = EnvironBuilder(
        path=PATH, method="POST", headers=list(signed_headers(body).items()), data=body
    ).get_environ()
    environ["wsgi.input"] = io.BytesIO(body[:-10])
    environ["wsgi.input_terminated"] = True
    statuses: list[str] = []
    answer = b"".join(ADAPTERS[name].build()(environ, lambda status, *_: statuses.append(status)))
    assert statuses[0].startswith("400 ")
    assert b'"error":"invalid_payload"' in answer
