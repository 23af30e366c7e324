"""Every adapter settles claims through the core: the same answer for a record that does not
match the model, no claim left behind by a refused or failed view, and a completed event
answered as a duplicate by the next delivery."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from fluxbase_receiver import MemoryIdempotencyStore, Receiver, sign_payload

SECRET = "settle-test-secret"
PATH = "/webhooks/fluxbase"


class Order(BaseModel):
    id: int
    status: str


def signed(record: dict[str, Any], event_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {"event": "INSERT", "table": "orders", "record": record, "id": event_id}
    ).encode()
    return body, {
        "Content-Type": "application/json",
        "X-Fluxbase-Signature": sign_payload(body, SECRET),
    }


Post = Callable[[bytes, dict[str, str]], tuple[int, dict[str, Any]]]


def flask_view(receiver: Receiver, fail: list[bool]) -> Post:
    from flask import Flask

    from fluxbase_receiver.adapters.flask import webhook_view

    app = Flask(__name__)

    @app.post(PATH)
    @webhook_view(receiver, model=Order)
    def view(event: Any) -> None:
        if fail[0]:
            raise RuntimeError("the view failed")

    client = app.test_client()

    def post(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        response = client.post(PATH, data=body, headers=headers)
        return response.status_code, response.get_json()

    return post


def fastapi_dependency(receiver: Receiver, fail: list[bool]) -> Post:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from fluxbase_receiver.adapters.fastapi import FluxbaseWebhook, install_exception_handler

    app = FastAPI()
    install_exception_handler(app)
    webhook = FluxbaseWebhook(receiver, model=Order)

    @app.post(PATH)
    def route(event: Any = webhook.depends) -> dict[str, bool]:
        if fail[0]:
            raise RuntimeError("the route failed")
        return {"ok": True}

    client = TestClient(app, raise_server_exceptions=False)

    def post(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        response = client.post(PATH, content=body, headers=headers)
        return response.status_code, response.json()

    return post


def handler_model(adapter: str) -> Callable[[Receiver, list[bool]], Post]:
    """A handler registered with ``receiver.on(model=Order)``, served by ``adapter``."""

    def make(receiver: Receiver, fail: list[bool]) -> Post:
        @receiver.on("orders", model=Order)
        def handler(event: Any) -> None:
            if fail[0]:
                raise RuntimeError("the handler failed")

        if adapter == "starlette":
            from starlette.testclient import TestClient

            from fluxbase_receiver.adapters.starlette import webhook_endpoint

            client = TestClient(webhook_endpoint(receiver))

            def post(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
                response = client.post("/", content=body, headers=headers)
                return response.status_code, response.json()

            return post
        if adapter == "wsgi":
            from werkzeug.test import Client

            from fluxbase_receiver.adapters.wsgi import WSGIWebhookEndpoint

            wsgi = Client(WSGIWebhookEndpoint(receiver))

            def post_wsgi(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
                response = wsgi.post("/", data=body, headers=headers)
                return response.status_code, json.loads(response.data)

            return post_wsgi
        from fluxbase_receiver.adapters.aws_lambda import lambda_handler

        handle = lambda_handler(receiver)

        def post_lambda(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
            event = {
                "version": "2.0",
                "rawPath": "/",
                "headers": {name.lower(): value for name, value in headers.items()},
                "requestContext": {"http": {"method": "POST", "path": "/"}},
                "body": body.decode(),
                "isBase64Encoded": False,
            }
            answer = handle(event, None)
            return answer["statusCode"], json.loads(answer["body"])

        return post_lambda

    return make


ADAPTERS: dict[str, Callable[[Receiver, list[bool]], Post]] = {
    "flask-webhook_view": flask_view,
    "fastapi-dependency": fastapi_dependency,
    "starlette": handler_model("starlette"),
    "wsgi": handler_model("wsgi"),
    "aws_lambda": handler_model("lambda"),
}


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_every_adapter_settles_through_the_core(adapter: str) -> None:
    store = MemoryIdempotencyStore()
    fail = [False]
    post = ADAPTERS[adapter](Receiver(SECRET, idempotency=store), fail)

    status, answer = post(*signed({"id": 1}, "evt-bad"))
    assert status == 400
    assert answer["error"] == "invalid_payload"
    assert answer["message"].startswith("record does not match Order: ")
    assert len(store) == 0  # refused before any claim

    fail[0] = True
    good = signed({"id": 2, "status": "paid"}, "evt-good")
    assert post(*good)[0] == 500
    assert len(store) == 0  # the failure released the claim
    fail[0] = False
    assert post(*good)[0] == 200
    assert post(*good) == (200, {"ok": True, "duplicate": True})
