"""Flask: registration on an app or Blueprint, the view decorator, MAX_CONTENT_LENGTH."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from flask import Blueprint, Flask, request
from pydantic import BaseModel

from fluxbase_receiver import InsertEvent, Receiver
from fluxbase_receiver.adapters.flask import FluxbaseWebhooks, webhook_view
from tests.adapters.conftest import SECRET, event_body, signed_headers, with_event_id
from tests.servers import run_wsgi


class Order(BaseModel):
    id: int
    status: str


def post(client: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return client.post(path, content=body, headers=signed_headers(body))


def test_init_app_on_a_blueprint_with_max_content_length() -> None:
    receiver = Receiver(SECRET)
    seen: list[Any] = []
    receiver.on("orders")(seen.append)
    webhooks = FluxbaseWebhooks(None, receiver, url="/fluxbase")
    blueprint = Blueprint("hooks", __name__, url_prefix="/hooks")
    webhooks.init_app(blueprint)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 2000
    app.register_blueprint(blueprint)
    with run_wsgi(app) as url, httpx.Client(base_url=url) as client:
        assert post(client, "/hooks/fluxbase", event_body(id=1)).json() == {"ok": True}
        too_big = post(client, "/hooks/fluxbase", event_body(id=2, note="x" * 3000))
        assert too_big.status_code == 413
        assert too_big.json()["message"] == "body exceeds 2000 bytes"
        chunked = client.post(
            "/hooks/fluxbase", content=iter([b"x" * 1500, b"x" * 1500]), headers=signed_headers(b"")
        )
        assert chunked.status_code == 413
        for method in ("DELETE", "OPTIONS", "HEAD"):
            refused = client.request(method, "/hooks/fluxbase")
            assert refused.status_code == 405
            assert refused.headers["allow"] == "POST"
    assert [e.row["id"] for e in seen] == [1]


@pytest.fixture(scope="module")
def view_app() -> Iterator[httpx.Client]:
    receiver = Receiver(SECRET)
    app = Flask(__name__)
    attempts: list[int] = []

    @app.post("/orders/<shop>")
    @webhook_view(receiver, model=Order)
    def orders(event: InsertEvent[Order], shop: str) -> Any:
        assert isinstance(event.record, Order)
        attempts.append(event.record.id)
        if event.record.status == "explode":
            raise RuntimeError("secret internals")
        raw = request.get_data()  # still readable: the adapter did not consume it for others
        return {"shop": shop, "id": event.record.id, "status": event.record.status, "raw": len(raw)}

    @app.post("/plain")
    @webhook_view(receiver)
    def plain(event: Any) -> None:
        return None

    with run_wsgi(app) as url, httpx.Client(base_url=url) as client:
        client.attempts = attempts  # type: ignore[attr-defined]
        yield client


def test_view_gets_the_typed_event_and_returns_its_own_response(view_app: httpx.Client) -> None:
    body = with_event_id(event_body("INSERT", "orders", id=7, status="paid"), "evt-view-7")
    response = post(view_app, "/orders/acme", body)
    assert response.status_code == 200
    assert response.json() == {"shop": "acme", "id": 7, "status": "paid", "raw": len(body)}
    again = post(view_app, "/orders/acme", body)
    assert again.json() == {"ok": True, "duplicate": True}


def test_view_returning_none_answers_ok(view_app: httpx.Client) -> None:
    assert post(view_app, "/plain", event_body()).json() == {"ok": True}


def test_view_that_raises_answers_500_and_releases_the_claim(view_app: httpx.Client) -> None:
    body = event_body("INSERT", "orders", id=8, status="explode")
    first = post(view_app, "/orders/acme", body)
    assert first.status_code == 500
    assert first.json()["error"] == "handler_failed"
    assert "secret internals" not in first.text
    assert post(view_app, "/orders/acme", body).status_code == 500
    assert view_app.attempts.count(8) == 2  # type: ignore[attr-defined]  # ran again


def test_record_not_matching_the_model_is_400(view_app: httpx.Client) -> None:
    body = json.dumps({"event": "INSERT", "table": "orders", "record": {"id": "nine"}}).encode()
    response = post(view_app, "/orders/acme", body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_payload"


def test_refusals_reach_the_view_never(view_app: httpx.Client) -> None:
    body = event_body("INSERT", "orders", id=9, status="paid")
    response = view_app.post("/orders/acme", content=body, headers=signed_headers(body, "wrong"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
    assert 9 not in view_app.attempts  # type: ignore[attr-defined]
