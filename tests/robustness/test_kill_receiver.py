"""A receiver process SIGKILLed mid-handler loses nothing.

A real server (waitress or uvicorn) runs in a subprocess with a shared store. The first
delivery's handler blocks; the process is killed; a new one starts on the same port. A
driver retries as a Fluxbase server does (no event id, a new ``timestamp`` and signature
per attempt, any non-2xx or transport error is a failure, 3 retries after 5 s, 10 s and
15 s), its delays scaled by ``SCALE``, and the claim's lease scaled alike (the default
lease is 10 s against Fluxbase's 5/10/15 s schedule). The dead process's claim lapses
within one lease, so a retry runs the handler to the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from fluxbase_receiver import DEFAULT_LEASE, sign_payload
from tests.servers import free_port, wait_for_port

SECRET = "kill-test-secret"
SCALE = 0.3
"""Fluxbase's retry delays and our default lease, scaled down alike for the test."""
RETRY_DELAYS = [5 * SCALE, 10 * SCALE, 15 * SCALE]
LEASE = DEFAULT_LEASE * SCALE

SERVER = """
import pathlib, sys, time

from fluxbase_receiver import Receiver

kind, server, target, name, port, folder, lease = sys.argv[1:8]
folder = pathlib.Path(folder)
if kind == "sqlite":
    from fluxbase_receiver import SQLiteIdempotencyStore

    store = SQLiteIdempotencyStore(target, table=name)
elif kind == "redis":
    from fluxbase_receiver.idempotency.redis import (
        AsyncRedisIdempotencyStore,
        RedisIdempotencyStore,
    )

    store = (AsyncRedisIdempotencyStore if server == "asgi" else RedisIdempotencyStore)(
        target, prefix=name + ":"
    )
else:
    from fluxbase_receiver.idempotency.postgres import (
        AsyncPostgresIdempotencyStore,
        PostgresIdempotencyStore,
    )

    store = (AsyncPostgresIdempotencyStore if server == "asgi" else PostgresIdempotencyStore)(
        target, table=name
    )
receiver = Receiver("kill-test-secret", idempotency=store, processing_ttl=float(lease))


@receiver.on("orders")
def handler(event):
    started = folder / "started"
    if not started.exists():
        started.write_text(str(event.record["id"]))
        time.sleep(3600)  # the test kills the process here
    with (folder / "completed").open("a") as out:
        out.write(f"{event.record['id']}\\n")


if server == "wsgi":
    import waitress
    from fluxbase_receiver.adapters.wsgi import WSGIWebhookEndpoint

    waitress.serve(WSGIWebhookEndpoint(receiver), host="127.0.0.1", port=int(port), threads=4)
else:
    import uvicorn
    from fluxbase_receiver.adapters.starlette import webhook_endpoint

    uvicorn.run(webhook_endpoint(receiver), host="127.0.0.1", port=int(port), log_level="warning")
"""


class Server:
    """The receiver's process; ``kill`` it, ``start`` another on the same port."""

    def __init__(self, args: list[str], port: int) -> None:
        self.args = args
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", SERVER, *self.args])

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def fluxbase_attempt(url: str) -> int | None:
    """One attempt as a Fluxbase server makes it: the same change, no id, the attempt's own
    timestamp and signature. The status, or ``None`` on a transport error."""
    document = {
        "event": "UPDATE",
        "table": "orders",
        "schema": "public",
        "record": {"id": 42, "status": "shipped"},
        "old_record": {"id": 42, "status": "paid"},
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    body = json.dumps(document).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Fluxbase-Signature": sign_payload(body, SECRET),
    }
    try:
        return httpx.post(url, content=body, headers=headers, timeout=60).status_code
    except httpx.TransportError:
        return None


def deliver_with_retries(url: str, attempts: list[int | None]) -> None:
    """Fluxbase's retry policy: the first attempt, then one after each delay until a 2xx."""
    for delay in [0.0, *RETRY_DELAYS]:
        time.sleep(delay)
        status = fluxbase_attempt(url)
        attempts.append(status)
        if status is not None and 200 <= status < 300:
            return


@pytest.fixture(
    params=[
        ("sqlite", "wsgi"),
        ("redis", "wsgi"),
        ("redis", "asgi"),
        ("postgres", "wsgi"),
        ("postgres", "asgi"),
    ],
    ids=lambda p: "-".join(p),
)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    kind, flavour = request.param
    name = f"kill_{uuid.uuid4().hex[:12]}"
    target = {
        "sqlite": lambda: str(tmp_path / "claims.db"),
        "redis": lambda: request.getfixturevalue("redis_url"),
        "postgres": lambda: request.getfixturevalue("postgres_url"),
    }[kind]()
    folder = tmp_path / "marks"
    folder.mkdir()
    port = free_port()
    running = Server([kind, flavour, target, name, str(port), str(folder), str(LEASE)], port)
    running.start()
    try:
        wait_for_port(port, timeout=30)
        yield running, folder
    finally:
        running.stop()
        if kind == "postgres":
            import psycopg

            with psycopg.connect(target, autocommit=True) as conn:
                conn.execute(f"DROP TABLE IF EXISTS {name}")


def test_a_receiver_killed_mid_handler_loses_nothing(server: tuple[Server, Path]) -> None:
    receiver, folder = server
    attempts: list[int | None] = []
    driver = threading.Thread(target=deliver_with_retries, args=(receiver.url, attempts))
    driver.start()
    deadline = time.monotonic() + 30
    while not (folder / "started").exists():
        assert time.monotonic() < deadline, "the handler never started"
        time.sleep(0.05)

    # While the handler outlives its lease, the heartbeat keeps the claim: a retry waits.
    time.sleep(1.5 * LEASE)
    assert fluxbase_attempt(receiver.url) == 409

    receiver.kill()
    receiver.start()
    driver.join(120)
    assert not driver.is_alive()

    assert attempts[0] is None  # the killed process never answered
    assert attempts[-1] == 200, attempts
    assert len(attempts) <= 1 + len(RETRY_DELAYS)
    assert (folder / "completed").read_text().split() == ["42"]
