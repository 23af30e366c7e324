"""FastAPI: the typed event dependency, its idempotency, and its OpenAPI documentation; the
plain route's documentation and inclusion through a router."""

import json
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from pydantic import BaseModel

from fluxbase_receiver import InsertEvent, Receiver, UpdateEvent
from fluxbase_receiver.adapters._common import Respond
from fluxbase_receiver.adapters.fastapi import (
    FluxbaseWebhook,
    add_webhook_route,
    install_exception_handler,
)
from tests.adapters.conftest import PATH, SECRET, event_body, signed_headers, with_event_id
from tests.servers import run_asgi


class Order(BaseModel):
    id: int
    status: str


def make_app() -> tuple[FastAPI, list[int]]:
    app = FastAPI()
    install_exception_handler(app)
    webhook = FluxbaseWebhook(Receiver(SECRET), model=Order)
    OrderEvent = Annotated[InsertEvent[Order] | UpdateEvent[Order], webhook.depends]
    attempts: list[int] = []

    @app.post(PATH, **webhook.openapi)
    async def orders(event: OrderEvent) -> dict[str, Any]:
        assert isinstance(event.record, Order)
        attempts.append(event.record.id)
        if event.record.status == "explode":
            raise RuntimeError("secret internals")
        if event.record.status == "refuse":
            raise HTTPException(422, "not today")
        return {"ok": True, "order": event.record.id}

    return app, attempts


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[httpx.Client, list[int]]]:
    app, attempts = make_app()
    with run_asgi(app) as url, httpx.Client(base_url=url) as client:
        yield client, attempts


def post(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post(PATH, content=body, headers=signed_headers(body))


def test_route_gets_the_typed_event_once(served: tuple[httpx.Client, list[int]]) -> None:
    client, attempts = served
    body = with_event_id(event_body("UPDATE", "orders", id=1, status="paid"), "evt-order-1")
    assert post(client, body).json() == {"ok": True, "order": 1}
    assert post(client, body).json() == {"ok": True, "duplicate": True}
    assert attempts.count(1) == 1


def test_route_that_raises_answers_500_and_releases(served: tuple[httpx.Client, list[int]]) -> None:
    client, attempts = served
    body = event_body("INSERT", "orders", id=2, status="explode")
    first = post(client, body)
    assert first.status_code == 500
    assert first.json() == {"error": "handler_failed", "message": "the webhook view failed"}
    assert post(client, body).status_code == 500
    assert attempts.count(2) == 2  # released: the redelivery ran the route again


def test_route_http_exception_passes_through_and_releases(
    served: tuple[httpx.Client, list[int]],
) -> None:
    client, attempts = served
    body = event_body("INSERT", "orders", id=3, status="refuse")
    assert post(client, body).status_code == 422
    assert post(client, body).status_code == 422
    assert attempts.count(3) == 2


def test_record_not_matching_the_model_is_400(served: tuple[httpx.Client, list[int]]) -> None:
    client, attempts = served
    body = json.dumps({"event": "INSERT", "table": "orders", "record": {"id": 4}}).encode()
    response = post(client, body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_payload"
    assert response.json()["message"].startswith("record does not match Order: ")
    assert 4 not in attempts  # no status: the record does not match Order


def test_openapi_documents_body_header_and_refusals() -> None:
    app, _ = make_app()
    document = app.openapi()
    operation = document["paths"][PATH]["post"]
    assert {"400", "401", "409", "413", "415", "500"} <= set(operation["responses"])
    assert operation["responses"]["401"]["content"]["application/json"]["schema"]["required"] == [
        "error",
        "message",
    ]
    (header,) = [p for p in operation["parameters"] if p["in"] == "header"]
    assert header["name"] == "X-Fluxbase-Signature"
    assert header["required"] is True
    body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    variants = {v["properties"]["event"]["const"]: v for v in body_schema["oneOf"]}
    assert set(variants) == {"INSERT", "UPDATE", "DELETE"}  # TEST only when the route takes it
    assert variants["INSERT"]["properties"]["record"]["properties"].keys() == {"id", "status"}
    assert "$defs" not in json.dumps(document)


def test_plain_route_openapi_documents_body_header_and_answers() -> None:
    app = FastAPI()
    add_webhook_route(app, PATH, Receiver(SECRET), tags=["webhooks"])
    document = app.openapi()
    assert set(document["paths"]) == {PATH}  # the path with a trailing slash is hidden
    operation = document["paths"][PATH]["post"]
    assert operation["tags"] == ["webhooks"]
    assert set(operation["responses"]) == {"200", "400", "401", "405", "409", "413", "415", "500"}
    assert "duplicate" in operation["responses"]["200"]["description"]
    assert operation["responses"]["409"]["content"]["application/json"]["schema"]["required"] == [
        "error",
        "message",
    ]
    (header,) = operation["parameters"]
    assert header["name"] == "X-Fluxbase-Signature"
    assert (header["in"], header["required"]) == ("header", True)
    body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    variants = {v["properties"]["event"]["const"] for v in body_schema["oneOf"]}
    assert variants == {"INSERT", "UPDATE", "DELETE", "TEST"}
    assert "$defs" not in json.dumps(document)


@pytest.mark.parametrize(("respond", "deadline"), [("immediately", None), ("after_handlers", 2.0)])
def test_plain_route_answering_early_documents_202(
    respond: Respond, deadline: float | None
) -> None:
    app = FastAPI()
    add_webhook_route(app, PATH, Receiver(SECRET), respond=respond, deadline=deadline)
    assert "202" in app.openapi()["paths"][PATH]["post"]["responses"]


def test_plain_route_on_an_included_router_takes_both_urls() -> None:
    receiver = Receiver(SECRET)
    handled: list[int] = []
    receiver.on("orders")(lambda event: handled.append(event.record["id"]))
    router = APIRouter(prefix="/api")
    add_webhook_route(router, "/hooks/", receiver)
    app = FastAPI()
    app.include_router(router)
    assert set(app.openapi()["paths"]) == {"/api/hooks/"}
    with run_asgi(app) as url, httpx.Client(base_url=url, follow_redirects=False) as client:
        for n, path in enumerate(["/api/hooks", "/api/hooks/"]):
            body = event_body("INSERT", "orders", id=n)
            response = client.post(path, content=body, headers=signed_headers(body))
            assert response.json() == {"ok": True}
        assert client.get("/api/hooks").json()["error"] == "method_not_allowed"
    assert handled == [0, 1]
