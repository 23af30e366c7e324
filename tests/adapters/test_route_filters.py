"""Single-route adapters (Flask ``webhook_view``, FastAPI ``FluxbaseWebhook``) filter
events like ``receiver.on``: other tables, operations and TEST events are answered
200 "skipped" without running the route, the claim settled like any other event's."""

import json
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI
from flask import Flask
from pydantic import BaseModel

from fluxbase_receiver import InsertEvent, Receiver, TestEvent, UpdateEvent
from fluxbase_receiver.adapters.fastapi import FluxbaseWebhook, install_exception_handler
from fluxbase_receiver.adapters.flask import webhook_view
from tests.adapters.conftest import SECRET, Calls, event_body, signed_headers
from tests.servers import run_asgi, run_wsgi

SKIPPED = {"ok": True, "skipped": True}
DUPLICATE = {"ok": True, "duplicate": True}


class Order(BaseModel):
    id: int
    status: str


def delivery(event: str, table: str, schema: str = "public", **record: Any) -> bytes:
    """An event body with an event id (as this package's sender sends), so a redelivery of
    a completed event is answered as a duplicate."""
    document = json.loads(event_body(event, table, **record))
    if event == "TEST":
        document["record"] = {"test": True}
    return json.dumps({**document, "schema": schema, "id": str(uuid.uuid4())}).encode()


class Served:
    """A client for an app whose routes record what they ran, beside the receiver's own
    handler (``handled``), which fails for rows with status "explode"."""

    def __init__(self, client: httpx.Client, routes: dict[str, list[Any]], handled: Calls):
        self.client = client
        self.routes = routes
        self.handled = handled

    def post(self, path: str, body: bytes) -> httpx.Response:
        return self.client.post(path, content=body, headers=signed_headers(body))


def receiver_with_handler() -> tuple[Receiver, Calls]:
    receiver = Receiver(SECRET)
    handled = Calls()

    @receiver.on("*")
    def handler(event: Any) -> None:
        handled(event)
        if event.row.get("status") == "explode":
            raise RuntimeError("secret internals")

    return receiver, handled


def flask_app() -> Iterator[Served]:
    receiver, handled = receiver_with_handler()
    routes: dict[str, list[Any]] = {"orders": [], "tests": [], "auth": []}
    app = Flask(__name__)

    @app.post("/orders")
    @webhook_view(receiver, "orders", "INSERT", "UPDATE", model=Order)
    def orders(event: InsertEvent[Order] | UpdateEvent[Order]) -> Any:
        assert isinstance(event.record, Order)
        routes["orders"].append(event)
        return {"order": event.record.id}

    @app.post("/tests")
    @webhook_view(receiver, "*", "TEST")
    def tests(event: TestEvent) -> None:
        routes["tests"].append(event)

    @app.post("/auth")
    @webhook_view(receiver, "auth.*")
    def auth(event: Any) -> None:
        routes["auth"].append(event)

    with run_wsgi(app) as url, httpx.Client(base_url=url, follow_redirects=False) as client:
        yield Served(client, routes, handled)


def fastapi_app() -> Iterator[Served]:
    receiver, handled = receiver_with_handler()
    routes: dict[str, list[Any]] = {"orders": [], "tests": [], "auth": []}
    app = FastAPI()
    install_exception_handler(app)
    orders_hook = FluxbaseWebhook(receiver, "orders", "INSERT", "UPDATE", model=Order)
    tests_hook = FluxbaseWebhook(receiver, "*", "TEST")
    auth_hook = FluxbaseWebhook(receiver, "auth.*")

    @app.post("/orders", **orders_hook.openapi)
    async def orders(
        event: Annotated[InsertEvent[Order] | UpdateEvent[Order], orders_hook.depends],
    ) -> dict[str, int]:
        assert isinstance(event.record, Order)
        routes["orders"].append(event)
        return {"order": event.record.id}

    @app.post("/tests", **tests_hook.openapi)
    async def tests(event: Annotated[TestEvent, tests_hook.depends]) -> dict[str, bool]:
        routes["tests"].append(event)
        return {"ok": True}

    @app.post("/auth", **auth_hook.openapi)
    async def auth(event: Annotated[Any, auth_hook.depends]) -> dict[str, bool]:
        routes["auth"].append(event)
        return {"ok": True}

    with run_asgi(app) as url, httpx.Client(base_url=url, follow_redirects=False) as client:
        yield Served(client, routes, handled)


@pytest.fixture(params=["flask", "fastapi"], scope="module")
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    yield from flask_app() if request.param == "flask" else fastapi_app()


def test_a_matching_event_runs_the_route_with_its_model(served: Served) -> None:
    body = delivery("UPDATE", "orders", id=1, status="paid")
    assert served.post("/orders", body).json() == {"order": 1}
    assert served.post("/orders", body).json() == DUPLICATE
    assert [e.record.id for e in served.routes["orders"]].count(1) == 1
    assert served.handled.count(1) == 1


@pytest.mark.parametrize(
    "body, again",
    [
        (delivery("DELETE", "orders", id=2), DUPLICATE),  # another operation
        (delivery("INSERT", "customers", id=3, name="not an Order"), DUPLICATE),  # another table
        (delivery("TEST", "test"), SKIPPED),  # TEST only when named; each TEST click arrives
    ],
    ids=["operation", "table", "test"],
)
def test_other_events_are_skipped_without_running_the_route(
    served: Served, body: bytes, again: dict[str, bool]
) -> None:
    ran = len(served.routes["orders"])
    response = served.post("/orders", body)
    assert response.status_code == 200
    assert response.json() == SKIPPED
    assert served.post("/orders", body).json() == again  # the claim was settled as completed
    assert len(served.routes["orders"]) == ran


def test_the_receiver_handlers_still_run_for_a_skipped_event(served: Served) -> None:
    body = delivery("INSERT", "customers", id=4, status="new")
    assert served.post("/orders", body).json() == SKIPPED
    assert served.handled.count(4) == 1


def test_a_skipped_event_whose_handler_fails_is_500_and_released(served: Served) -> None:
    body = delivery("DELETE", "orders", id=5, status="explode")
    first = served.post("/orders", body)
    assert first.status_code == 500
    assert "secret internals" not in first.text
    assert served.post("/orders", body).status_code == 500  # released: it runs again
    assert served.handled.count(5) == 2


def test_a_route_that_names_test_gets_test_events(served: Served) -> None:
    assert served.post("/tests", delivery("TEST", "test")).status_code == 200
    assert [type(e) for e in served.routes["tests"]] == [TestEvent]
    assert served.post("/tests", delivery("INSERT", "orders", id=6)).json() == SKIPPED


def test_schema_patterns_filter_like_on(served: Served) -> None:
    assert served.post("/auth", delivery("INSERT", "users", "auth", id=7)).status_code == 200
    assert served.post("/auth", delivery("INSERT", "users", "public", id=8)).json() == SKIPPED
    assert [e.row["id"] for e in served.routes["auth"]] == [7]


def test_bad_filters_fail_when_the_route_is_declared() -> None:
    receiver = Receiver(SECRET)
    with pytest.raises(ValueError, match="unknown operation"):
        webhook_view(receiver, "orders", "TRUNCATE")
    with pytest.raises(ValueError, match="table must be"):
        FluxbaseWebhook(receiver, "a.b.c")


def openapi_operation(webhook: FluxbaseWebhook) -> dict[str, Any]:
    app = FastAPI()

    @app.post("/hook", **webhook.openapi)
    async def hook(event: Annotated[Any, webhook.depends]) -> dict[str, bool]:
        return {"ok": True}

    operation: dict[str, Any] = app.openapi()["paths"]["/hook"]["post"]
    return operation


def body_events(operation: dict[str, Any]) -> set[str]:
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    return {v["properties"]["event"]["const"] for v in schema.get("oneOf", [schema])}


def test_openapi_shows_the_route_events_and_every_2xx_answer() -> None:
    receiver = Receiver(SECRET)
    orders = openapi_operation(FluxbaseWebhook(receiver, "orders", "INSERT", "UPDATE", model=Order))
    assert body_events(orders) == {"INSERT", "UPDATE"}
    assert body_events(openapi_operation(FluxbaseWebhook(receiver, "orders", "DELETE"))) == {
        "DELETE"
    }
    assert body_events(openapi_operation(FluxbaseWebhook(receiver))) == {
        "INSERT",
        "UPDATE",
        "DELETE",
    }
    assert "TEST" in body_events(openapi_operation(FluxbaseWebhook(receiver, "*", "TEST")))
    answers = orders["responses"]
    assert '"duplicate": true' in answers["200"]["description"]
    assert '"skipped": true' in answers["200"]["description"]
    assert "202" in answers
    assert {"400", "401", "409", "413", "415", "500"} <= set(answers)
