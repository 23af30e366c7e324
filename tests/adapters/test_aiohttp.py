"""aiohttp under its own server: the example, streaming refusals, the middleware's pass-through,
deadlines and background failures.

The status table itself runs against the handler and the middleware in test_contract.py."""

import os
import socket
import subprocess
import sys
import threading
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from aiohttp import web

from fluxbase_receiver import Receiver
from fluxbase_receiver.adapters.aiohttp import webhook_handler, webhook_middleware, webhook_routes
from tests.adapters.conftest import (
    PATH,
    SECRET,
    Calls,
    Gate,
    WatchedStore,
    event_body,
    partial_upload,
    run_aiohttp,
    signed_headers,
    with_event_id,
)
from tests.servers import ROOT, free_port, wait_for_port


def post(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post(PATH, content=body, headers=signed_headers(body))


def routed(receiver: Receiver, **options: Any) -> web.Application:
    app = web.Application()
    app.add_routes(webhook_routes(PATH, receiver, **options))
    return app


def test_the_example_serves_under_its_documented_command() -> None:
    port = free_port()
    env = {**os.environ, "FLUXBASE_WEBHOOK_SECRET": SECRET}
    args = [
        "-m",
        "aiohttp.web",
        "-H",
        "127.0.0.1",
        "-P",
        str(port),
        "examples.aiohttp_app:create_app",
    ]
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, timeout=30)
        response = httpx.post(
            f"http://127.0.0.1:{port}{PATH}/",
            content=(body := event_body("INSERT", "orders")),
            headers=signed_headers(body),
        )
    finally:
        process.terminate()
        _, log = process.communicate(timeout=15)
    assert (response.status_code, response.json()) == (200, {"ok": True})
    assert b"New record in orders" in log


@pytest.mark.parametrize("declared", [50 * 1_048_576, None], ids=["content-length", "chunked"])
def test_a_50_mb_upload_is_refused_before_it_is_sent(declared: int | None) -> None:
    """Only 2 MiB are ever sent: the 413 arrives while the upload is still going."""
    with run_aiohttp(routed(Receiver(SECRET))) as url:
        status = partial_upload(url, declared, send=2 * 1_048_576)
    assert status == "HTTP/1.1 413 Request Entity Too Large"


def test_a_body_of_exactly_the_limit_is_read_whole() -> None:
    body = with_event_id(event_body(id=1), "evt-aiohttp-limit")
    receiver = Receiver(SECRET, max_body_bytes=len(body))
    with run_aiohttp(routed(receiver)) as url, httpx.Client(base_url=url) as client:
        chunked = client.post(
            PATH, content=iter([body[:10], body[10:]]), headers=signed_headers(body)
        )
        assert chunked.json() == {"ok": True}
        assert post(client, body).json() == {"ok": True, "duplicate": True}


def test_the_middleware_passes_every_other_request_on() -> None:
    receiver = Receiver(SECRET)
    calls = Calls()
    receiver.on("orders")(calls)

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=f"app saw {request.method} {request.path}")

    app = web.Application(middlewares=[webhook_middleware(receiver, path="/hooks")])
    app.router.add_route("*", "/", index)
    app.router.add_route("*", PATH, index)
    with run_aiohttp(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/").text == "app saw GET /"
        assert client.post(PATH).text == f"app saw POST {PATH}"
        assert client.get("/nowhere").status_code == 404
        body = event_body("INSERT", "orders", id=2)
        assert client.post("/hooks/", content=body, headers=signed_headers(body)).json() == {
            "ok": True
        }
    assert calls.count(2) == 1


def test_a_handler_for_the_router_answers_every_method() -> None:
    app = web.Application()
    app.router.add_route("*", "/in", webhook_handler(Receiver(SECRET)))
    with run_aiohttp(app) as url, httpx.Client(base_url=url) as client:
        for method in ("GET", "PATCH", "OPTIONS"):
            response = client.request(method, "/in")
            assert response.status_code == 405
            assert response.json()["error"] == "method_not_allowed"


def test_a_client_that_goes_away_mid_body_runs_nothing() -> None:
    receiver = Receiver(SECRET)
    calls = Calls()
    receiver.on("orders")(calls)
    body = event_body("INSERT", "orders", id=3)
    with run_aiohttp(routed(receiver)) as url:
        parts = urlsplit(url)
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-Fluxbase-Signature: {signed_headers(body)['X-Fluxbase-Signature']}\r\n\r\n"
        )
        with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
            sock.sendall(head.encode() + body[:20])
        with httpx.Client(base_url=url) as client:  # the server goes on serving
            assert post(client, event_body("INSERT", "orders", id=4)).json() == {"ok": True}
    assert calls.count(3) == 0
    assert calls.count(4) == 1


def test_deadline_answers_202_and_lets_handlers_finish() -> None:
    store = WatchedStore()
    receiver = Receiver(SECRET, idempotency=store)
    gate = Gate()
    receiver.on("orders")(gate)
    body = with_event_id(event_body(id=5), "evt-aiohttp-5")
    with run_aiohttp(routed(receiver, deadline=0.05)) as url, httpx.Client(base_url=url) as client:
        response = post(client, body)
        assert (response.status_code, response.json()) == (202, {"ok": True, "accepted": True})
        assert gate.started.wait(timeout=20)
        gate.release.set()
        assert store.settled.acquire(timeout=20)
        assert post(client, body).json() == {"ok": True, "duplicate": True}


def test_a_quick_handler_within_the_deadline_answers_200() -> None:
    receiver = Receiver(SECRET)
    receiver.on("orders", threaded=False)(lambda event: None)
    with run_aiohttp(routed(receiver, deadline=30)) as url, httpx.Client(base_url=url) as client:
        assert post(client, event_body()).json() == {"ok": True}


def test_a_background_failure_is_logged_and_releases_the_claim(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = WatchedStore()
    receiver = Receiver(SECRET, idempotency=store)
    attempts = threading.Semaphore(0)

    @receiver.on("orders")
    async def broken(event: Any) -> None:
        attempts.release()
        raise RuntimeError("boom")

    body = event_body(id=6)
    app = routed(receiver, respond="immediately")
    with caplog.at_level("ERROR"), run_aiohttp(app) as url, httpx.Client(base_url=url) as client:
        assert post(client, body).status_code == 202
        assert attempts.acquire(timeout=20)
        assert store.settled.acquire(timeout=20)
        assert post(client, body).status_code == 202  # released: the redelivery runs again
        assert attempts.acquire(timeout=20)
    assert any("handler failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "options",
    [{"respond": "later"}, {"respond": "immediately", "deadline": 1.0}, {"deadline": 0}],
)
def test_impossible_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"respond|deadline"):
        webhook_handler(Receiver(SECRET), **options)


def test_missing_aiohttp_fails_with_one_line_naming_the_extra() -> None:
    code = "import sys; sys.modules['aiohttp'] = None; import fluxbase_receiver.adapters.aiohttp"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ImportError: fluxbase_receiver.adapters.aiohttp needs aiohttp: "
        "pip install 'fluxbase-receiver[aiohttp]'"
    )
