"""Test infrastructure: signature vectors, real loopback servers, service URLs and fixtures."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_VECTORS = ROOT.parent / "shared" / "vectors" / "signatures.json"
"""The independently computed vectors, beside the repository where the team keeps them."""
VECTORS_COPY = ROOT / "tests" / "vectors" / "signatures.json"
"""The same file shipped with the tests, for clones without the shared folder."""
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def load_vectors() -> list[dict[str, Any]]:
    """The independently computed signature vectors (the shared file when present)."""
    path = SHARED_VECTORS if SHARED_VECTORS.exists() else VECTORS_COPY
    cases: list[dict[str, Any]] = json.loads(path.read_text("utf-8"))["cases"]
    return cases


@pytest.fixture(scope="session")
def vectors() -> list[dict[str, Any]]:
    return load_vectors()


def bound_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port (pass it to a server: no port race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    """A loopback port that was free a moment ago (for subprocess servers)."""
    with bound_socket() as sock:
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    """Block until something accepts connections on ``127.0.0.1:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


@contextmanager
def run_asgi(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread on a free loopback port; yield its URL."""
    import uvicorn

    sock = bound_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def run_wsgi(app: Callable[..., Any]) -> Iterator[str]:
    """Serve a WSGI app with waitress in a thread on a free loopback port; yield its URL."""
    from waitress.server import create_server  # type: ignore[import-untyped]

    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    port = server.effective_port
    stopping = threading.Event()

    def serve() -> None:
        try:
            server.run()
        except (OSError, ValueError):
            if not stopping.is_set():
                raise
            # close() from this side can pull a socket out from under select(): expected

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        stopping.set()
        server.close()
        thread.join(timeout=10)


def _service_or_skip(name: str, url: str, connect: Callable[[str], None]) -> str:
    try:
        connect(url)
    except Exception as exc:
        message = f"{name} is not reachable at {url}: {type(exc).__name__}: {exc}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: the service is required)")
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL URL (``FLUXBASE_TEST_POSTGRES_URL``); skipped locally, required in CI."""
    url = os.environ.get("FLUXBASE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

    def connect(target: str) -> None:
        import psycopg

        with psycopg.connect(target, connect_timeout=3) as conn:
            conn.execute("SELECT 1")

    return _service_or_skip("PostgreSQL", url, connect)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis URL (``FLUXBASE_TEST_REDIS_URL``); skipped locally, required in CI."""
    url = os.environ.get("FLUXBASE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

    def connect(target: str) -> None:
        import redis

        redis.Redis.from_url(target, socket_connect_timeout=3).ping()

    return _service_or_skip("Redis", url, connect)
