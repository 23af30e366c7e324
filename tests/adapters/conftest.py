"""Signed requests and the example apps, shared by the adapter tests."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any
from unittest.mock import patch
from urllib.parse import urlsplit

from fluxbase_receiver import MemoryIdempotencyStore, sign_payload
from tests.servers import bound_socket, run_asgi, run_wsgi

SECRET = "whsec_adapter-tests"
PATH = "/webhooks/fluxbase"


def event_body(event: str = "INSERT", table: str = "orders", **record: Any) -> bytes:
    """A Fluxbase event body as the Go server sends it (a fresh row id unless given)."""
    row = {"id": record.pop("id", time.monotonic_ns()), "status": "new", **record}
    document: dict[str, Any] = {
        "event": event,
        "table": table,
        "schema": "public",
        "record": row,
        "timestamp": "2026-11-27T03:30:00.123456789Z",
    }
    if event == "UPDATE":
        document["old_record"] = {**row, "status": "old"}
    return json.dumps(document).encode()


def with_event_id(body: bytes, event_id: str) -> bytes:
    """``body`` with an event ``id``, as this package's sender sends it: deduplicated exactly
    (a body without one is never answered as a duplicate)."""
    return json.dumps({**json.loads(body), "id": event_id}).encode()


def signed_headers(
    body: bytes, secret: str = SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """The headers a Fluxbase server sends with ``body``."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "Fluxbase-Webhooks/1.0",
        "X-Fluxbase-Signature": sign_payload(body, secret, timestamp),
    }


BAD_SIGNATURES = [
    (None, "missing_signature"),
    ("v1=abc", "malformed_signature"),
    ("stale", "timestamp_outside_tolerance"),
    ("wrong-secret", "invalid_signature"),
]
"""``(kind, error code)`` for :func:`badly_signed_headers`: each way a signature fails."""


def badly_signed_headers(body: bytes, kind: str | None) -> dict[str, str]:
    """Headers whose signature fails as ``kind`` says: ``None`` (missing), ``"stale"``,
    ``"wrong-secret"``, or a literal header value."""
    if kind == "stale":
        return signed_headers(body, timestamp=1_000_000_000)
    if kind == "wrong-secret":
        return signed_headers(body, secret="not-the-secret")
    headers = signed_headers(body)
    if kind is None:
        del headers["X-Fluxbase-Signature"]
    else:
        headers["X-Fluxbase-Signature"] = kind
    return headers


class Gate:
    """Holds handlers mid-run: ``started`` is set (and ``entered`` counts up) inside each,
    ``release`` lets them all end."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def __call__(self, event: Any) -> None:
        self.started.set()
        self.entered.release()
        if not self.release.wait(timeout=30):
            raise TimeoutError("the test never released the handler")


class WatchedStore(MemoryIdempotencyStore):
    """The in-memory store, counting in ``settled`` each claim completed or released."""

    def __init__(self) -> None:
        super().__init__()
        self.settled = threading.Semaphore(0)

    def complete(self, key: str, owner: str, ttl: float) -> bool:
        done = super().complete(key, owner, ttl)
        self.settled.release()
        return done

    def release(self, key: str, owner: str) -> None:
        super().release(key, owner)
        self.settled.release()


class Calls:
    """Records the events a handler saw (thread-safe)."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        with self._lock:
            self.events.append(event)

    def count(self, row_id: Any) -> int:
        with self._lock:
            return sum(1 for e in self.events if e.row["id"] == row_id)


def load_example(name: str) -> ModuleType:
    """Import ``examples.<name>`` with the test secret in ``FLUXBASE_WEBHOOK_SECRET``
    (the examples read it once, when imported)."""
    with patch.dict(os.environ, {"FLUXBASE_WEBHOOK_SECRET": SECRET}):
        return importlib.import_module(f"examples.{name}")


def partial_upload(url: str, declared: int | None, send: int) -> str:
    """Start a POST of a large body but send only ``send`` bytes of it; return the status line.

    ``declared`` is the ``Content-Length`` to announce (``None``: chunked, no length). The
    status arrives only if the server answers before the upload ends, which shows it
    refused the body without reading it all.
    """
    parts = urlsplit(url)
    framing = "Transfer-Encoding: chunked" if declared is None else f"Content-Length: {declared}"
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"X-Fluxbase-Signature: {sign_payload(b'', SECRET)}\r\n{framing}\r\n\r\n"
    )
    chunk = b"x" * 65_536
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(head.encode())
        for _ in range(send // len(chunk)):
            sock.sendall(b"10000\r\n" + chunk + b"\r\n" if declared is None else chunk)
        with sock.makefile("rb") as reader:
            return reader.readline().decode().strip()


@contextmanager
def run_aiohttp(app: Any) -> Iterator[str]:
    """Serve an aiohttp ``web.Application`` on a free loopback port, its event loop in a
    thread; yield its URL."""
    from aiohttp import web

    sock = bound_socket()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)  # a lingering refusal
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.SockSite(runner, sock).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        sock.close()


class URLConf:
    """A URL configuration object (Django takes any object with ``urlpatterns``)."""

    def __init__(self, urlpatterns: list[Any]) -> None:
        self.urlpatterns = urlpatterns


def setup_django() -> None:
    """Set Django up with the example project's settings (no database, CSRF middleware on)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.settings")
    django.setup(set_prefix=False)


@contextmanager
def run_django(urlpatterns: list[Any], *, asgi: bool, **settings: Any) -> Iterator[str]:
    """Serve ``urlpatterns`` with the example project's settings (``settings`` override
    them): Django's ASGI handler under uvicorn, or its WSGI handler under waitress."""
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    setup_django()
    with override_settings(ROOT_URLCONF=URLConf(urlpatterns), **settings):
        if asgi:
            with run_asgi(ASGIHandler()) as url:
                yield url
        else:
            with run_wsgi(WSGIHandler()) as url:
                yield url
