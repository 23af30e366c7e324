"""Django: the example project under gunicorn and uvicorn, the view decorator (sync and
async), DATA_UPLOAD_MAX_MEMORY_SIZE, and ``fluxbase_post`` against the project.

The status table itself runs against the Django views in test_contract.py."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.http import HttpRequest, JsonResponse
from django.test import Client
from django.urls import path
from pydantic import BaseModel

from fluxbase_receiver import InsertEvent, Receiver
from fluxbase_receiver.adapters.django import webhook_endpoint, webhook_urls, webhook_view
from fluxbase_receiver.testing.plugin import Poster
from tests.adapters.conftest import (
    PATH,
    SECRET,
    Calls,
    event_body,
    load_example,
    run_django,
    setup_django,
    signed_headers,
    with_event_id,
)
from tests.servers import ROOT, free_port, run_asgi, wait_for_port

BIN = Path(sys.executable).parent


class Order(BaseModel):
    id: int
    status: str


def post(client: httpx.Client, url: str, body: bytes) -> httpx.Response:
    return client.post(url, content=body, headers=signed_headers(body))


@contextmanager
def gunicorn(port: int) -> Iterator[subprocess.Popen[str]]:
    """The example project under its documented command, its log captured."""
    env = {**os.environ, "FLUXBASE_WEBHOOK_SECRET": SECRET}
    args = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--threads", "4"]
    process = subprocess.Popen(
        [*args, "examples.django_project.wsgi"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_the_example_project_serves_under_gunicorn() -> None:
    port = free_port()
    with gunicorn(port) as process, httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        wait_for_port(port, timeout=30)
        first = post(client, PATH, event_body("INSERT", "orders", id=1))
        slashed = post(client, PATH + "/", event_body("DELETE", "orders", id=2))
        body = event_body("UPDATE", "orders", id=3)
        chunked = client.post(
            PATH, content=iter([body[:20], body[20:]]), headers=signed_headers(body)
        )
        got = client.get(PATH)
        too_big = client.post(  # last: gunicorn then drops the connection with the unread rest
            PATH, content=iter([b"x" * 1_048_576] * 3), headers=signed_headers(b"")
        )
        process.terminate()
        _, log = process.communicate(timeout=15)
    assert (first.status_code, first.json()) == (200, {"ok": True})
    assert slashed.status_code == 200  # no redirect, no 404
    assert (chunked.status_code, chunked.json()) == (200, {"ok": True})  # no Content-Length
    assert too_big.status_code == 413
    assert too_big.json() == {"error": "payload_too_large", "message": "body exceeds 1048576 bytes"}
    assert got.status_code == 405
    assert got.headers["allow"] == "POST"
    assert "New record in orders" in log
    assert "Record deleted from orders" in log
    assert "Record updated in orders" in log


def test_the_example_project_serves_under_uvicorn() -> None:
    webhooks = load_example("django_project.webhooks")
    calls = Calls()
    webhooks.receiver.on("orders")(calls)
    asgi = load_example("django_project.asgi")
    with run_asgi(asgi.application) as url, httpx.Client(base_url=url) as client:
        body = with_event_id(event_body("INSERT", "orders", id=4), "evt-django-4")
        assert post(client, PATH, body).json() == {"ok": True}
        assert post(client, PATH + "/", body).json() == {"ok": True, "duplicate": True}
    assert calls.count(4) == 1


@pytest.fixture
def fluxbase_secret() -> str:
    """The example project's secret, so ``fluxbase_post`` signs for it."""
    return SECRET


@pytest.fixture
def django_test_environment() -> Iterator[None]:
    """Django's test environment (as pytest-django sets it up): ``testserver`` is an
    allowed host of the test ``Client``."""
    from django.test.utils import setup_test_environment, teardown_test_environment

    setup_django()
    setup_test_environment()
    yield
    teardown_test_environment()


@pytest.mark.usefixtures("django_test_environment")
@pytest.mark.parametrize("target", ["wsgi", "asgi", "client"])
def test_fluxbase_post_posts_to_the_example_project(
    fluxbase_post: Poster, fluxbase_event: Any, target: str
) -> None:
    webhooks = load_example("django_project.webhooks")
    calls = Calls()
    webhooks.receiver.on("audited")(calls)
    app = Client() if target == "client" else load_example(f"django_project.{target}").application
    event = fluxbase_event("INSERT", table="audited", record={"id": 5, "status": "new"})
    response = fluxbase_post(app, event)
    assert response.status == 200
    assert response.json == {"ok": True}
    assert response.headers["Content-Type"] == "application/json"
    assert fluxbase_post(app, event, wrong_secret=True).status == 401
    assert calls.count(5) == 1


@pytest.fixture(scope="module", params=["sync", "async"])
def views(request: pytest.FixtureRequest) -> Iterator[tuple[httpx.Client, list[Any]]]:
    """Decorated views (sync or async, under waitress or uvicorn) recording what they saw."""
    receiver = Receiver(SECRET)
    seen: list[Any] = []

    def order_view(request: HttpRequest, event: InsertEvent[Order], shop: str) -> Any:
        assert isinstance(event.record, Order)
        seen.append(event.record.id)
        if event.record.status == "explode":
            raise RuntimeError("secret internals")
        raw = request.body  # still readable: the adapter read it through Django
        return JsonResponse({"shop": shop, "id": event.record.id, "raw": len(raw)})

    if request.param == "async":

        async def orders(request: HttpRequest, event: InsertEvent[Order], shop: str) -> Any:
            return order_view(request, event, shop)

    else:
        orders = order_view

    view = webhook_view(receiver, "orders", "INSERT", model=Order)(orders)
    urls = [path("orders/<slug:shop>", view)]
    with (
        run_django(urls, asgi=request.param == "async") as url,
        httpx.Client(base_url=url) as client,
    ):
        yield client, seen


def test_the_view_gets_the_typed_event_and_answers_itself(
    views: tuple[httpx.Client, list[Any]],
) -> None:
    client, seen = views
    body = with_event_id(event_body("INSERT", "orders", id=6, status="paid"), f"evt-{id(seen)}")
    response = post(client, "/orders/acme", body)
    assert response.status_code == 200
    assert response.json() == {"shop": "acme", "id": 6, "raw": len(body)}
    assert post(client, "/orders/acme", body).json() == {"ok": True, "duplicate": True}
    assert seen.count(6) == 1


def test_a_view_that_raises_is_500_and_runs_again(views: tuple[httpx.Client, list[Any]]) -> None:
    client, seen = views
    body = with_event_id(event_body("INSERT", "orders", id=7, status="explode"), f"evt7-{id(seen)}")
    first = post(client, "/orders/acme", body)
    assert first.status_code == 500
    assert first.json() == {"error": "handler_failed", "message": "the webhook view failed"}
    assert post(client, "/orders/acme", body).status_code == 500
    assert seen.count(7) == 2  # the claim was released


def test_other_events_are_skipped_without_the_view(views: tuple[httpx.Client, list[Any]]) -> None:
    client, seen = views
    for body in (event_body("INSERT", "invoices", id=8), event_body("UPDATE", "orders", id=8)):
        response = post(client, "/orders/acme", body)
        assert response.json() == {"ok": True, "skipped": True}
    assert 8 not in seen


def test_a_record_not_matching_the_model_is_400(views: tuple[httpx.Client, list[Any]]) -> None:
    client, _ = views
    body = json.dumps({"event": "INSERT", "table": "orders", "record": {"id": "nine"}}).encode()
    response = post(client, "/orders/acme", body)
    assert response.status_code == 400
    assert response.json()["message"].startswith("record does not match Order")


@pytest.mark.parametrize("asgi", [False, True], ids=["wsgi", "asgi"])
def test_data_upload_max_memory_size_is_honoured(asgi: bool) -> None:
    receiver = Receiver(SECRET)
    calls = Calls()
    receiver.on("orders")(calls)
    urls = webhook_urls(PATH, receiver, asynchronous=asgi)
    with (
        run_django(urls, asgi=asgi, DATA_UPLOAD_MAX_MEMORY_SIZE=2000) as url,
        httpx.Client(base_url=url) as client,
    ):
        fits = post(client, PATH, event_body("INSERT", "orders", id=9, note="x" * 1500))
        declared = post(client, PATH, event_body("INSERT", "orders", id=10, note="x" * 3000))
        body = event_body("INSERT", "orders", id=11, note="x" * 3000)
        chunked = client.post(
            PATH, content=iter([body[:100], body[100:]]), headers=signed_headers(body)
        )
    assert fits.status_code == 200
    for refused in (declared, chunked):
        assert refused.status_code == 413
        assert refused.json() == {
            "error": "payload_too_large",
            "message": "body exceeds 2000 bytes",
        }
    assert [calls.count(n) for n in (9, 10, 11)] == [1, 0, 0]


def test_answering_early_needs_an_async_view() -> None:
    with pytest.raises(ValueError, match="asynchronous=True"):
        webhook_endpoint(Receiver(SECRET), respond="immediately")
    with pytest.raises(ValueError, match="asynchronous=True"):
        webhook_urls(PATH, Receiver(SECRET), deadline=2.0)


def test_an_async_view_under_wsgi_answers_after_the_handlers() -> None:
    """No event loop outlives a WSGI request, so nothing is left to run in the background."""
    receiver = Receiver(SECRET)
    calls = Calls()
    receiver.on("orders")(calls)
    urls = webhook_urls(PATH, receiver, asynchronous=True, respond="immediately")
    with run_django(urls, asgi=False) as url, httpx.Client(base_url=url) as client:
        response = post(client, PATH, event_body("INSERT", "orders", id=12))
    assert (response.status_code, response.json()) == (200, {"ok": True})
    assert calls.count(12) == 1


def test_the_urls_are_named_once() -> None:
    setup_django()
    first, second = webhook_urls("/hooks/fluxbase/", Receiver(SECRET), name="hooks")
    assert (str(first.pattern), first.name) == ("hooks/fluxbase", "hooks")
    assert (str(second.pattern), second.name) == ("hooks/fluxbase/", None)


def test_a_decorated_view_answers_405_for_other_methods(
    views: tuple[httpx.Client, list[Any]],
) -> None:
    client, _ = views
    response = client.get("/orders/acme")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_missing_django_fails_with_one_line_naming_the_extra() -> None:
    code = "import sys; sys.modules['django'] = None; import fluxbase_receiver.adapters.django"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ImportError: fluxbase_receiver.adapters.django needs Django: "
        "pip install 'fluxbase-receiver[django]'"
    )
