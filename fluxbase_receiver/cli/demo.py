"""``fluxbase-receiver demo``: both sides of Fluxbase webhooks on one machine, no server.

A temporary SQLite database gets an ``orders`` table watched by the sender's triggers;
a receiver built from this package (core + Starlette adapter, uvicorn on a free
loopback port) prints the verified, typed events it gets. The demo inserts, updates
and deletes rows, has the receiver refuse one delivery once (500, then retried), sends
one event again (the receiver drops the duplicate), and prints the delivery history.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.routing import Route

from fluxbase_receiver import DeleteEvent, InsertEvent, Receiver, UpdateEvent
from fluxbase_receiver.adapters.starlette import webhook_endpoint
from fluxbase_receiver.cli.arguments import CLIError
from fluxbase_receiver.sender.backend import AttemptRecord, ClaimedDelivery
from fluxbase_receiver.sender.models import Delivery
from fluxbase_receiver.sender.sender import Sender

WEBHOOK_PATH = "/webhooks/fluxbase"


class Order(BaseModel):
    """A row of the demo's ``orders`` table."""

    id: int
    item: str
    quantity: int
    status: str


class Demo:
    """The demo's state: output switch, the refusal to make once, what the receiver saw."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.refuse_next_update = True
        self.handled: list[str] = []
        self.lock = threading.Lock()

    def say(self, text: str) -> None:
        if not self.quiet:
            with self.lock:
                print(text, flush=True)

    def receiver(self, secret: str) -> Receiver:
        """A receiver whose handlers print the typed events and refuse one update once."""
        receiver = Receiver(secret)

        @receiver.on("orders", "INSERT", model=Order)
        def inserted(event: InsertEvent[Order]) -> None:
            order = event.record
            self._seen(event.id, f"INSERT  order #{order.id}: {order.quantity} x {order.item}")

        @receiver.on("orders", "UPDATE", model=Order)
        def updated(event: UpdateEvent[Order]) -> None:
            if self.refuse_next_update:
                self.refuse_next_update = False
                self.say("  receiver  UPDATE  refused on purpose this time: answering 500")
                raise RuntimeError("refused once by the demo")
            changes = ", ".join(
                f"{k}: {old!r} -> {new!r}" for k, (old, new) in event.changes.items()
            )
            self._seen(event.id, f"UPDATE  order #{event.record.id}: {changes}")

        @receiver.on("orders", "DELETE", model=Order)
        def deleted(event: DeleteEvent[Order]) -> None:
            self._seen(event.id, f"DELETE  order #{event.row.id} ({event.row.item})")

        return receiver

    def _seen(self, event_id: str | None, text: str) -> None:
        self.handled.append(event_id or "")
        self.say(f"  receiver  {text}   [signature verified, typed as Order]")


@contextmanager
def serve_receiver(receiver: Receiver) -> Iterator[str]:
    """Serve ``receiver`` with uvicorn on a free loopback port; yield the webhook URL."""
    app = Starlette(routes=[Route(WEBHOOK_PATH, webhook_endpoint(receiver))])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: server.started, 10, "the receiver did not start")
        yield f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def running_worker(sender: Sender) -> Iterator[None]:
    """Run ``sender.serve()`` in a background thread."""
    thread = threading.Thread(target=lambda: asyncio.run(sender.serve()), daemon=True)
    thread.start()
    try:
        yield
    finally:
        sender.stop()
        thread.join(10)


class Watcher:
    """Prints each delivery's progress: failed attempts as the worker records them (a
    retry can follow sooner than any poll), outcomes from the delivery history."""

    def __init__(self, sender: Sender, demo: Demo) -> None:
        self.sender = sender
        self.demo = demo
        self.shown: dict[str, tuple[str, int]] = {}
        sender.observe(self.attempted)

    def attempted(self, claimed: ClaimedDelivery, record: AttemptRecord) -> None:
        decision = record.decision
        if decision.status != "retrying" or decision.next_attempt_at is None:
            return
        wait = max(0.0, decision.next_attempt_at - time.time())
        what = f"{claimed.event.event} {claimed.event.table} (delivery {claimed.delivery_id[:8]})"
        self.demo.say(
            f"  sender    {what}: attempt {record.attempt} failed ({record.result.error});"
            f" retrying in {wait:.2f} s"
        )

    def poll(self) -> list[Delivery]:
        deliveries = self.sender.get_deliveries(limit=100)
        for delivery in reversed(deliveries):
            state = (delivery.status, delivery.attempts)
            if self.shown.get(delivery.id) == state or delivery.status in ("pending", "retrying"):
                continue
            self.shown[delivery.id] = state
            what = f"{delivery.event} {delivery.table} (delivery {delivery.id[:8]})"
            if delivery.status == "success":
                detail = _answer(delivery)
                self.demo.say(
                    f"  sender    {what}: delivered on attempt {delivery.attempts}, {detail}"
                )
            else:
                self.demo.say(f"  sender    {what}: {delivery.status} ({delivery.error})")
        return deliveries

    def until(self, done: Callable[[list[Delivery]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done(self.poll()):
                return True
            time.sleep(0.05)
        return False


def all_delivered(count: int) -> Callable[[list[Delivery]], bool]:
    return lambda ds: len(ds) >= count and all(d.status == "success" for d in ds)


def history_table(sender: Sender, deliveries: list[Delivery]) -> str:
    """The delivery history as a plain text table, oldest first, with retried attempts."""
    header = ("delivery", "event", "table", "status", "attempts", "last answer / error")
    rows: list[tuple[str, ...]] = [header]
    for d in reversed(deliveries):
        last = _answer(d) if d.status == "success" else (d.error or "")
        rows.append((d.id[:8], d.event, d.table, d.status, str(d.attempts), last))
        if d.attempts > 1:
            for a in sender.get_attempts(d.id):
                detail = a.error or str(a.response_status)
                rows.append(
                    ("", f"  #{a.attempt}", "", a.outcome, f"{a.duration_ms:.0f} ms", detail)
                )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _answer(delivery: Delivery) -> str:
    body = (delivery.response_body or "").strip()
    if '"duplicate":true' in body.replace(" ", ""):
        return f"{delivery.response_status}, duplicate dropped by the receiver"
    return f"{delivery.response_status} {body[:60]}"


def _wait_for(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.01)


def run_demo(database: Path, demo: Demo) -> bool:
    """Run every step; True when every milestone was reached."""
    secret = secrets.token_urlsafe(24)
    with Sender(f"sqlite:///{database}", allow_private_networks=True, poll_interval=0.1) as sender:
        app = sender.connect()
        app.execute(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL,"
            " quantity INTEGER NOT NULL, status TEXT NOT NULL)"
        )
        sender.watch("orders")
        demo.say(f"1. SQLite database {database} with table orders, watched by triggers")
        with serve_receiver(demo.receiver(secret)) as url, running_worker(sender):
            webhook = sender.webhooks.create(
                name="demo orders",
                url=url,
                secret=secret,
                events=[{"table": "orders", "operations": ["*"]}],
                retry_backoff_seconds=0.5,
                timeout_seconds=5,
            )
            demo.say(f"2. receiver listening on {url}; webhook {webhook.id[:8]} points at it")
            demo.say("3. writing rows: 3 inserts, 1 update, 1 delete")
            watcher = Watcher(sender, demo)
            app.execute("BEGIN")
            app.executemany(
                "INSERT INTO orders (item, quantity, status) VALUES (?, ?, 'new')",
                [("notebook", 2), ("pencil", 12), ("eraser", 1)],
            )
            app.execute("COMMIT")
            app.execute("UPDATE orders SET quantity = 3, status = 'paid' WHERE item = 'notebook'")
            app.execute("DELETE FROM orders WHERE item = 'eraser'")
            delivered = watcher.until(all_delivered(5), timeout=15)

            first = sender.get_deliveries(limit=100)[-1]
            demo.say(f"4. sending delivery {first.id[:8]} ({first.event}) again")
            again = sender.redeliver(first.id)
            redelivered = watcher.until(all_delivered(6), timeout=10)
            duplicate = '"duplicate":true' in (sender.get_delivery(again.id).response_body or "")
            history = sender.get_deliveries(limit=100)
            table = history_table(sender, history)

    refused = any(d.status == "success" and d.attempts > 1 for d in history)
    print("\nDelivery history:\n" + table, flush=True)
    milestones = {
        "every change delivered": delivered,
        "one delivery refused once, then retried": refused,
        "duplicate dropped by the receiver": redelivered and duplicate,
        "each event handled once": len(demo.handled) == len(set(demo.handled)) == 5,
    }
    print()
    for name, reached in milestones.items():
        print(f"  [{'ok' if reached else 'MISSING'}] {name}", flush=True)
    return all(milestones.values())


def run(args: argparse.Namespace) -> int:
    """Run the demo; the exit status is 0 when every milestone was reached."""
    demo = Demo(args.quiet)
    package_logger = logging.getLogger("fluxbase_receiver")
    level = package_logger.level
    package_logger.setLevel(logging.CRITICAL)  # the refusal is on purpose: no traceback
    try:
        if args.database is not None:
            if args.database.exists():
                raise CLIError(f"{args.database} already exists; give a new path", status=2)
            return 0 if run_demo(args.database, demo) else 1
        with tempfile.TemporaryDirectory(prefix="fluxbase-demo-") as tmp:
            return 0 if run_demo(Path(tmp) / "demo.db", demo) else 1
    finally:
        package_logger.setLevel(level)
