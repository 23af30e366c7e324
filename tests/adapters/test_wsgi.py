"""The WSGI middleware under waitress, in front of Flask and of a bare WSGI callable."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from flask import Flask

from fluxbase_receiver import Receiver
from fluxbase_receiver.adapters.wsgi import FluxbaseWSGIMiddleware
from tests.adapters.conftest import (
    PATH,
    SECRET,
    Gate,
    WatchedStore,
    event_body,
    signed_headers,
    with_event_id,
)
from tests.servers import run_wsgi


def bare(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """A WSGI application that is not Flask."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"app saw {environ['REQUEST_METHOD']} {environ['PATH_INFO']}".encode()]


def flask_app() -> Flask:
    app = Flask(__name__)
    app.add_url_rule("/", "index", lambda: "flask index")
    return app


def post(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post(PATH, content=body, headers=signed_headers(body))


@pytest.mark.parametrize("make_app", [lambda: bare, flask_app], ids=["bare", "flask"])
def test_middleware_handles_its_path_and_passes_the_rest(make_app: Any) -> None:
    receiver = Receiver(SECRET)
    seen: list[Any] = []
    receiver.on("orders")(seen.append)
    app = FluxbaseWSGIMiddleware(make_app(), receiver)
    with run_wsgi(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/").text in ("app saw GET /", "flask index")
        assert post(client, event_body(id=1)).json() == {"ok": True}
    assert [e.row["id"] for e in seen] == [1]


class CountingInput:
    """Wraps ``wsgi.input`` and counts the bytes the application read from it."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.stream.read(size)
        self.read_bytes += len(data)
        return data

    def readinto(self, buffer: bytearray) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length-unset"])
def test_reads_at_most_one_byte_past_the_limit(chunked: bool) -> None:
    receiver = Receiver(SECRET, max_body_bytes=1000)
    inputs: list[CountingInput] = []
    middleware = FluxbaseWSGIMiddleware(bare, receiver)

    def counting(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        inputs.append(CountingInput(environ["wsgi.input"]))
        environ["wsgi.input"] = inputs[-1]
        if not chunked:  # a body whose length the server does not pass on
            environ.pop("CONTENT_LENGTH", None)
        answer: Iterable[bytes] = middleware(environ, start_response)
        return answer

    def upload() -> Iterator[bytes]:
        yield from (b"x" * 65_536 for _ in range(80))  # 5 MiB

    with run_wsgi(counting) as url, httpx.Client(base_url=url) as client:
        content = upload() if chunked else b"x" * 5_242_880
        response = client.post(PATH, content=content, headers=signed_headers(b""))
    assert response.status_code == 413
    assert response.json()["message"] == "body exceeds 1000 bytes"
    assert inputs[0].read_bytes <= 1001


def test_a_body_of_exactly_the_limit_is_read_whole() -> None:
    body = with_event_id(event_body(id=2), "evt-limit")
    receiver = Receiver(SECRET, max_body_bytes=len(body))
    with (
        run_wsgi(FluxbaseWSGIMiddleware(bare, receiver)) as url,
        httpx.Client(base_url=url) as client,
    ):
        chunked = client.post(
            PATH, content=iter([body[:10], body[10:]]), headers=signed_headers(body)
        )
        assert chunked.json() == {"ok": True}
        assert post(client, body).json() == {"ok": True, "duplicate": True}


def test_a_full_pool_makes_the_request_run_its_handlers() -> None:
    receiver = Receiver(SECRET)
    gate = Gate()
    receiver.on("orders")(gate)
    app = FluxbaseWSGIMiddleware(bare, receiver, respond="immediately", workers=1)
    with run_wsgi(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        queued = [post(client, event_body(id=10 + n)).status_code for n in range(4)]
        assert queued == [202, 202, 202, 202]  # one running, three waiting: the pool is full
        assert gate.entered.acquire(timeout=20)  # the pool's only worker is busy
        with ThreadPoolExecutor(1) as pool:
            inline = pool.submit(post, client, event_body(id=20))
            assert gate.entered.acquire(timeout=20)  # ...so the request runs its handler itself
            gate.release.set()
            assert inline.result().status_code == 200


def test_background_failure_is_logged_and_releases_the_claim(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = WatchedStore()
    receiver = Receiver(SECRET, idempotency=store)
    attempts = threading.Semaphore(0)

    @receiver.on("orders")
    def broken(event: Any) -> None:
        attempts.release()
        raise RuntimeError("boom")

    app = FluxbaseWSGIMiddleware(bare, receiver, respond="immediately")
    body = event_body(id=4)
    with caplog.at_level("ERROR"), run_wsgi(app) as url, httpx.Client(base_url=url) as client:
        assert post(client, body).status_code == 202
        assert attempts.acquire(timeout=20)
        assert store.settled.acquire(timeout=20)
        # The failed run released the claim: the redelivery runs the handler again.
        assert post(client, body).status_code == 202
        assert attempts.acquire(timeout=20)
    assert any("handler failed" in r.getMessage() for r in caplog.records)


def test_deadline_answers_202_and_lets_handlers_finish() -> None:
    store = WatchedStore()
    receiver = Receiver(SECRET, idempotency=store)
    gate = Gate()
    receiver.on("orders")(gate)
    app = FluxbaseWSGIMiddleware(bare, receiver, deadline=0.05)
    body = with_event_id(event_body(id=5), "evt-5")
    with run_wsgi(app) as url, httpx.Client(base_url=url) as client:
        response = post(client, body)
        assert response.status_code == 202
        assert gate.started.wait(timeout=20)
        gate.release.set()
        assert store.settled.acquire(timeout=20)
        assert post(client, body).json() == {"ok": True, "duplicate": True}


def test_a_body_shorter_than_its_content_length_is_400() -> None:
    """Called in process: a real server waits for the whole body before calling the app."""
    statuses: list[str] = []
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": PATH,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "1000",
        "HTTP_X_FLUXBASE_SIGNATURE": "t=1,v1=00",
        "wsgi.input": io.BytesIO(b'{"event": "INS'),
    }
    app = FluxbaseWSGIMiddleware(bare, Receiver(SECRET))
    body = b"".join(app(environ, lambda status, headers: statuses.append(status)))
    assert statuses == ["400 Bad Request"]
    assert json.loads(body) == {
        "error": "invalid_payload",
        "message": "the body ended before its Content-Length",
    }
