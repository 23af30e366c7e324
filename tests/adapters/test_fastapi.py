"""FastAPI: the typed event dependency, its idempotency, and its OpenAPI documentation."""

import json
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from fluxbase_receiver import InsertEvent, Receiver, UpdateEvent
from fluxbase_receiver.adapters.fastapi import FluxbaseWebhook, install_exception_handler
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
