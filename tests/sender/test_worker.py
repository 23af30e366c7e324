"""Workers: a SIGKILLed worker's leases are taken over; run/serve wake on emit and stop."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from fluxbase_receiver.sender import Sender
from tests.sender.conftest import make_webhook
from tests.sender.receivers import Answer, ScriptedReceiver, serving
from tests.servers import ROOT


def start_worker(database: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.sender.worker", database], cwd=ROOT)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


def test_a_killed_worker_is_taken_over_and_nothing_succeeds_twice(
    sender: Sender, database: str
) -> None:
    target = ScriptedReceiver(handler_delay=0.05)
    with serving(target) as url:
        webhook = make_webhook(sender, url, timeout_seconds=1)
        events = 60
        db = sender.connect()
        db.execute("BEGIN")
        for i in range(events):
            sender.emit("INSERT", "orders", {"id": i}, connection=db)
        db.execute("COMMIT")

        first = start_worker(database)
        wait_until(lambda: len(target.requests) >= 10)
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
        assert sum(target.handled.values()) < events, "killed mid-run"

        second = start_worker(database)
        try:
            wait_until(
                lambda: all(
                    d.status == "success"
                    for d in sender.webhooks.get_deliveries(webhook.id, limit=events)
                )
            )
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(15) == 0, "SIGTERM stops a worker cleanly"

    deliveries = sender.webhooks.get_deliveries(webhook.id, limit=events)
    assert len(deliveries) == events
    assert set(target.handled) == {d.event_id for d in deliveries}
    assert set(target.handled.values()) == {1}, "each event handled once by the receiver"
    successes = Counter(
        a.delivery_id
        for d in deliveries
        for a in sender.get_attempts(d.id)
        if a.outcome == "success"
    )
    assert set(successes.values()) == {1} and len(successes) == events


def test_serve_wakes_on_emit_and_stops(sender: Sender) -> None:
    target = ScriptedReceiver()
    worker = Sender(sender.database_url, allow_private_networks=True, poll_interval=30)
    with serving(target) as url:
        make_webhook(sender, url)
        thread = threading.Thread(target=lambda: asyncio.run(worker.serve()))
        thread.start()
        try:
            wait_until(lambda: worker.serving)
            worker.emit("INSERT", "orders", {"id": 1})
            wait_until(lambda: len(target.events) == 1, timeout=10)
        finally:
            worker.stop()
            thread.join(10)
        assert not thread.is_alive()
    worker.close()


def test_serve_polls_for_trigger_captures(sender: Sender) -> None:
    target = ScriptedReceiver()
    worker = Sender(sender.database_url, allow_private_networks=True, poll_interval=0.1)
    app = sender.connect()
    app.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    sender.watch("orders")
    with serving(target) as url:
        make_webhook(sender, url)
        thread = threading.Thread(target=lambda: asyncio.run(worker.serve()))
        thread.start()
        try:
            app.execute("INSERT INTO orders VALUES (1)")
            wait_until(lambda: len(target.events) == 1, timeout=10)
        finally:
            worker.stop()
            thread.join(10)
    worker.close()


def test_a_worker_killed_mid_send_has_spent_an_attempt(sender: Sender, database: str) -> None:
    target = ScriptedReceiver()
    target.script = [Answer(200, hang=3.0)]
    with serving(target) as url:
        webhook = make_webhook(sender, url, timeout_seconds=1, max_retries=2)
        sender.emit("INSERT", "orders", {"id": 1})
        worker = start_worker(database)
        wait_until(lambda: len(target.requests) == 1)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)

        (delivery,) = sender.webhooks.get_deliveries(webhook.id)
        assert (delivery.status, delivery.attempts) == ("pending", 1)
        wait_until(lambda: sender.deliver_pending().attempted == 1)

    (delivery,) = sender.webhooks.get_deliveries(webhook.id)
    assert (delivery.status, delivery.attempts) == ("success", 2)
    lost, delivered = sender.get_attempts(delivery.id)
    assert (lost.attempt, lost.outcome, lost.response_status) == (1, "failed", None)
    assert lost.error is not None and lost.error.startswith("worker lost")
    assert (delivered.attempt, delivered.outcome) == (2, "success")


def test_a_stopping_worker_whose_store_refuses_records_exits_and_loses_nothing(
    sender: Sender,
) -> None:
    """Stopped while its records cannot be written, a worker gives up after a few tries
    (it does not hang); the change stays pending and is sent again, so nothing is lost."""
    from fluxbase_receiver.sender.worker import Worker

    class RefusingStore:
        def __init__(self, store: Any) -> None:
            self._store = store

        def __getattr__(self, name: str) -> Any:
            return getattr(self._store, name)

        async def record_attempts(self, records: Any) -> None:
            raise OSError("the database refuses writes")

    target = ScriptedReceiver()
    with serving(target) as url:
        make_webhook(sender, url)
        sender.emit("INSERT", "orders", {"id": 1})
        worker = Worker(
            RefusingStore(sender.store), poll_interval=0.05, allow_private_networks=True
        )

        async def serve_then_stop() -> float:
            serving_task = asyncio.create_task(worker.serve())
            while not target.events:
                await asyncio.sleep(0.02)
            worker.stop()
            started = time.monotonic()
            await asyncio.wait_for(serving_task, 10)
            return time.monotonic() - started

        assert sender._call(serve_then_stop()) < 5, "the worker stops instead of hanging"
        assert len(target.events) == 1
        assert sender.next_due() is not None, "the unrecorded delivery is still pending"
