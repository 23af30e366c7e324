"""Every status of DESIGN.md's table, end to end: each example app under a real server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.adapters.conftest import (
    BAD_SIGNATURES,
    PATH,
    Calls,
    Gate,
    badly_signed_headers,
    event_body,
    load_example,
    partial_upload,
    signed_headers,
    with_event_id,
)
from tests.servers import run_asgi, run_wsgi

EXAMPLES = {"starlette_app": run_asgi, "fastapi_app": run_asgi, "flask_app": run_wsgi}


@dataclass
class Served:
    url: str
    calls: Calls
    gate: Gate
    client: httpx.Client

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.client.post(
            PATH, content=body, headers=signed_headers(body) if headers is None else headers
        )


@pytest.fixture(scope="module", params=sorted(EXAMPLES))
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    example = load_example(request.param)
    calls, gate = Calls(), Gate()
    example.receiver.on("audited")(calls)
    example.receiver.on("slow_jobs")(gate)

    @example.receiver.on("broken_jobs")
    def broken(event: Any) -> None:
        raise RuntimeError("database password is hunter2")

    with (
        EXAMPLES[request.param](example.app) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield Served(url, calls, gate, client)


def test_signed_event_is_handled_once(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    body = event_body("INSERT", "audited", id=101)
    with caplog.at_level("DEBUG"):  # the example apps log each event at DEBUG
        response = served.post(body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"ok": True}
    assert served.calls.count(101) == 1
    assert any("New record in audited" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("operation", ["INSERT", "UPDATE", "DELETE"])
def test_each_operation_is_accepted(served: Served, operation: str) -> None:
    response = served.post(event_body(operation, "audited"))
    assert response.status_code == 200


def test_redelivery_is_a_duplicate(served: Served) -> None:
    body = with_event_id(event_body("UPDATE", "audited", id=202), f"evt-{time.monotonic_ns()}")
    assert served.post(body).json() == {"ok": True}
    again = served.post(body)
    assert again.status_code == 200
    assert again.json() == {"ok": True, "duplicate": True}
    assert served.calls.count(202) == 1


def test_get_is_405(served: Served) -> None:
    response = served.client.get(PATH)
    assert response.status_code == 405
    body = response.json()  # FastAPI answers 405 itself, for methods the route does not list
    assert body.get("error") == "method_not_allowed" or body == {"detail": "Method Not Allowed"}
    assert response.headers["allow"] == "POST"


def test_declared_oversized_body_is_413(served: Served) -> None:
    body = event_body("INSERT", "audited", blob="x" * 1_100_000)
    response = served.post(body)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def fifty_mb(declared: bool) -> Iterator[bytes] | bytes:
    chunk = b"x" * 1_048_576
    return chunk * 50 if declared else (chunk for _ in range(50))


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_50_mb_upload_is_413(served: Served, declared: bool) -> None:
    response = served.client.post(PATH, content=fifty_mb(declared), headers=signed_headers(b""))
    assert response.status_code == 413
    assert response.json() == {
        "error": "payload_too_large",
        "message": "body exceeds 1048576 bytes",
    }


@pytest.mark.parametrize("name", [name for name, run in EXAMPLES.items() if run is run_asgi])
@pytest.mark.parametrize("declared", [50 * 1_048_576, None], ids=["content-length", "chunked"])
def test_asgi_refuses_a_50_mb_upload_before_it_is_sent(name: str, declared: int | None) -> None:
    """Only 2 MiB are ever sent: the 413 arrives while the upload is still going."""
    with run_asgi(load_example(name).app) as url:
        status = partial_upload(url, declared, send=2 * 1_048_576)
    assert status == "HTTP/1.1 413 Request Entity Too Large"


def test_non_json_content_type_is_415(served: Served) -> None:
    body = event_body("INSERT", "audited")
    headers = {**signed_headers(body), "Content-Type": "text/plain"}
    response = served.post(body, headers)
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


@pytest.mark.parametrize(("signature", "code"), BAD_SIGNATURES)
def test_bad_signatures_are_401(served: Served, signature: str | None, code: str) -> None:
    body = event_body("INSERT", "audited", id=303)
    response = served.post(body, badly_signed_headers(body, signature))
    assert response.status_code == 401
    assert response.json()["error"] == code
    assert served.calls.count(303) == 0


@pytest.mark.parametrize("body", [b"{not json", b'{"event": "INSERT"}', b'["INSERT"]'])
def test_body_that_is_not_an_event_is_400(served: Served, body: bytes) -> None:
    response = served.post(body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_payload"


def test_same_event_while_handler_runs_is_409(served: Served) -> None:
    body = with_event_id(event_body("INSERT", "slow_jobs", id=404), f"evt-{time.monotonic_ns()}")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(served.post, body)
        assert served.gate.started.wait(timeout=20)
        try:
            second = served.post(body)
        finally:
            served.gate.release.set()
        assert first.result().status_code == 200
    assert second.status_code == 409
    assert second.json()["error"] == "event_in_progress"
    assert served.post(body).json() == {"ok": True, "duplicate": True}


def test_failing_handler_is_500_without_leaking(served: Served) -> None:
    body = event_body("INSERT", "broken_jobs", id=505)
    response = served.post(body)
    assert response.status_code == 500
    assert response.json()["error"] == "handler_failed"
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    retry = served.post(body)  # the claim was released: the retry runs the handlers again
    assert retry.status_code == 500
