"""The Starlette endpoint and ASGI middleware under uvicorn: routing and answering early."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from fluxbase_receiver import Receiver
from fluxbase_receiver.adapters.starlette import FluxbaseASGIMiddleware, webhook_endpoint
from tests.adapters.conftest import (
    PATH,
    SECRET,
    Gate,
    WatchedStore,
    event_body,
    signed_headers,
    with_event_id,
)
from tests.servers import run_asgi


async def hello(scope: Any, receive: Any, send: Any) -> None:
    """A bare ASGI application that is not Starlette."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"app saw {scope['method']}".encode()})


def post(client: httpx.Client, body: bytes, path: str = PATH) -> httpx.Response:
    return client.post(path, content=body, headers=signed_headers(body))


def test_middleware_passes_other_paths_through() -> None:
    receiver = Receiver(SECRET)
    seen: list[Any] = []
    receiver.on("orders")(seen.append)
    app = FluxbaseASGIMiddleware(hello, receiver, path="/hooks")
    with run_asgi(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/").text == "app saw GET"
        assert client.post("/webhooks/fluxbase").text == "app saw POST"
        assert post(client, event_body(id=1), "/hooks").json() == {"ok": True}
        assert client.get("/hooks").status_code == 405
    assert [e.row["id"] for e in seen] == [1]


def test_background_failure_is_logged_and_releases_the_claim(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = WatchedStore()
    receiver = Receiver(SECRET, idempotency=store)
    attempts = threading.Semaphore(0)

    @receiver.on("orders")
    async def broken(event: Any) -> None:
        attempts.release()
        raise RuntimeError("boom")

    app = webhook_endpoint(receiver, respond="immediately")
    body = event_body(id=8)
    with caplog.at_level("ERROR"), run_asgi(app) as url, httpx.Client(base_url=url) as client:
        assert post(client, body, "/").status_code == 202
        assert attempts.acquire(timeout=20)
        assert store.settled.acquire(timeout=20)
        # The failed run released the claim: the redelivery runs the handler again.
        assert post(client, body, "/").status_code == 202
        assert attempts.acquire(timeout=20)
    assert any("handler failed" in r.getMessage() for r in caplog.records)


def test_deadline_answers_202_and_lets_handlers_finish() -> None:
    store = WatchedStore()
    receiver = Receiver(SECRET, idempotency=store)
    gate = Gate()
    receiver.on("orders")(gate)
    app = FluxbaseASGIMiddleware(hello, receiver, deadline=0.05)
    body = with_event_id(event_body(id=9), "evt-9")
    with run_asgi(app) as url, httpx.Client(base_url=url) as client:
        response = post(client, body)
        assert response.status_code == 202
        assert response.json() == {"ok": True, "accepted": True}
        assert gate.started.wait(timeout=20)
        gate.release.set()
        assert store.settled.acquire(timeout=20)
        assert post(client, body).json() == {"ok": True, "duplicate": True}


def test_a_quick_handler_within_the_deadline_answers_200() -> None:
    receiver = Receiver(SECRET)
    receiver.on("orders", threaded=False)(lambda event: None)
    app = webhook_endpoint(receiver, deadline=30)
    with run_asgi(app) as url, httpx.Client(base_url=url) as client:
        assert post(client, event_body(), "/").json() == {"ok": True}


@pytest.mark.parametrize(
    "options",
    [{"respond": "later"}, {"respond": "immediately", "deadline": 1.0}, {"deadline": 0}],
)
def test_impossible_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"respond|deadline"):
        webhook_endpoint(Receiver(SECRET), **options)
