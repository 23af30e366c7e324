"""A webhook URL configured with or without a trailing slash reaches the handler in every
adapter under a real server: no 404, no redirect (a sender counts both as failed)."""

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI
from flask import Blueprint, Flask
from starlette.applications import Starlette

from fluxbase_receiver import Receiver, WebhookEvent
from fluxbase_receiver.adapters.aws_lambda import lambda_handler
from fluxbase_receiver.adapters.fastapi import (
    FluxbaseWebhook,
    add_webhook_route,
    install_exception_handler,
)
from fluxbase_receiver.adapters.flask import FluxbaseWebhooks, webhook_view
from fluxbase_receiver.adapters.starlette import FluxbaseASGIMiddleware, webhook_routes
from fluxbase_receiver.adapters.wsgi import FluxbaseWSGIMiddleware
from tests.adapters.conftest import PATH, SECRET, Calls, event_body, signed_headers
from tests.adapters.test_aws_lambda import SOURCES, lambda_event
from tests.servers import run_asgi, run_wsgi

Served = Callable[[Receiver, str], AbstractContextManager[str]]


def other_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"another app"]


async def other_asgi(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b"another app"})


def flask_registered(receiver: Receiver, path: str) -> AbstractContextManager[str]:
    app = Flask(__name__)
    FluxbaseWebhooks(app, receiver, url=path)
    return run_wsgi(app)


def flask_blueprint(receiver: Receiver, path: str) -> AbstractContextManager[str]:
    prefix, _, url = path.rstrip("/").rpartition("/")
    blueprint = Blueprint("hooks", __name__, url_prefix=prefix)
    FluxbaseWebhooks(None, receiver, url=f"/{url}").init_app(blueprint)
    app = Flask(__name__)
    app.register_blueprint(blueprint)
    return run_wsgi(app)


def flask_view(receiver: Receiver, path: str) -> AbstractContextManager[str]:
    app = Flask(__name__)

    @app.post(path.rstrip("/") + "/", strict_slashes=False)  # the form the docs give
    @webhook_view(receiver)
    def hook(event: WebhookEvent) -> None:
        return None

    return run_wsgi(app)


def wsgi_middleware(receiver: Receiver, path: str) -> AbstractContextManager[str]:
    return run_wsgi(FluxbaseWSGIMiddleware(other_app, receiver, path=path))


def starlette_routes(receiver: Receiver, path: str) -> AbstractContextManager[str]:
    return run_asgi(Starlette(routes=webhook_routes(path, receiver)))


def asgi_middleware(receiver: Receiver, path: str) -> AbstractContextManager[str]:
    return run_asgi(FluxbaseASGIMiddleware(other_asgi, receiver, path=path))


def fastapi_route(receiver: Receiver, path: str) -> AbstractContextManager[str]:
    app = FastAPI()
    install_exception_handler(app)
    webhook = FluxbaseWebhook(receiver)

    @webhook.post(app, path)
    async def hook(event: Annotated[WebhookEvent, webhook.depends]) -> dict[str, bool]:
        return {"ok": True}

    return run_asgi(app)


def fastapi_plain_route(receiver: Receiver, path: str) -> AbstractContextManager[str]:
    app = FastAPI()
    add_webhook_route(app, path, receiver)
    return run_asgi(app)


ADAPTERS: dict[str, Served] = {
    "flask": flask_registered,
    "flask-blueprint": flask_blueprint,
    "flask-view": flask_view,
    "wsgi": wsgi_middleware,
    "starlette": starlette_routes,
    "asgi": asgi_middleware,
    "fastapi": fastapi_route,
    "fastapi-route": fastapi_plain_route,
}


@pytest.fixture(params=sorted(ADAPTERS), scope="module")
def configured(request: pytest.FixtureRequest) -> Iterator[tuple[httpx.Client, Calls]]:
    """An adapter served on ``PATH``, configured without a trailing slash, and its calls."""
    receiver = Receiver(SECRET)
    calls = Calls()
    receiver.on("orders")(calls)
    with (
        ADAPTERS[request.param](receiver, PATH) as url,
        httpx.Client(base_url=url, follow_redirects=False) as client,
    ):
        yield client, calls


@pytest.mark.parametrize("path", [PATH, PATH + "/"])
def test_both_urls_reach_the_handler(configured: tuple[httpx.Client, Calls], path: str) -> None:
    client, calls = configured
    body = event_body("INSERT", "orders")
    response = client.post(path, content=body, headers=signed_headers(body))
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True}
    assert calls.count(json.loads(body)["record"]["id"]) == 1


def test_other_paths_are_not_the_webhook(configured: tuple[httpx.Client, Calls]) -> None:
    client, calls = configured
    body = event_body("INSERT", "orders")
    for path in (PATH + "/x", PATH + "x"):
        response = client.post(path, content=body, headers=signed_headers(body))
        assert response.status_code == 404
    assert calls.count(json.loads(body)["record"]["id"]) == 0


@pytest.mark.parametrize("name", ["flask", "wsgi", "starlette", "asgi", "fastapi", "fastapi-route"])
@pytest.mark.parametrize("path", [PATH, PATH + "/"])
def test_a_path_configured_with_a_slash_reaches_the_handler_both_ways(name: str, path: str) -> None:
    receiver = Receiver(SECRET)
    calls = Calls()
    receiver.on("orders")(calls)
    body = event_body("INSERT", "orders")
    with (
        ADAPTERS[name](receiver, PATH + "/") as url,
        httpx.Client(base_url=url, follow_redirects=False) as client,
    ):
        response = client.post(path, content=body, headers=signed_headers(body))
    assert response.status_code == 200, response.text
    assert calls.count(json.loads(body)["record"]["id"]) == 1


@pytest.mark.parametrize("source", SOURCES)
def test_lambda_takes_the_path_with_a_trailing_slash(source: str) -> None:
    receiver = Receiver(SECRET)
    calls = Calls()
    receiver.on("orders")(calls)
    body = event_body("INSERT", "orders")
    event = json.loads(
        json.dumps(lambda_event(source, body)).replace(
            '/webhooks/fluxbase"', '/webhooks/fluxbase/"'
        )
    )
    assert PATH + "/" in json.dumps(event)
    response = lambda_handler(receiver)(event, None)
    assert response["statusCode"] == 200
    assert calls.count(json.loads(body)["record"]["id"]) == 1
