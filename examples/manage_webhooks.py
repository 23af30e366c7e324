"""Every webhooks call of the Fluxbase guide, made with ``FluxbaseClient`` against ``sender serve``.

    python examples/manage_webhooks.py

Starts ``fluxbase-receiver sender serve`` on loopback (a temporary SQLite database) and a
small receiver that checks each signature, then creates, lists, gets, updates, tests and
deletes webhooks, and ends with the test delivery listed in the webhook's history.
Needs the ``sender`` extra.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fluxbase_receiver import FluxbaseAPIError, FluxbaseClient

SERVICE_KEY = "sk_example_0123456789abcdef"
SECRET = "whsec-example-secret"


class Receiver(BaseHTTPRequestHandler):
    """Answers 200 to a correctly signed webhook and 401 to anything else."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        signature = self.headers.get("X-Fluxbase-Signature")
        valid = FluxbaseClient.verify_webhook_signature(body, signature, SECRET)
        self.send_response(200 if valid else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def receiver() -> Iterator[str]:
    """The signature-checking receiver on a free loopback port; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/webhooks/fluxbase"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def sender_serve(database: str) -> Iterator[str]:
    """``fluxbase-receiver sender serve`` on a free loopback port; yields its URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "fluxbase_receiver.cli",
        "sender",
        "serve",
        "--database-url",
        f"sqlite:///{database}",
        "--port",
        str(port),
        "--service-key",
        SERVICE_KEY,
        "--allow-private-networks",  # the receiver is on loopback
    ]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                FluxbaseClient(url, SERVICE_KEY).webhooks.list()
                break
            except FluxbaseAPIError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def main() -> int:
    with (
        tempfile.TemporaryDirectory() as directory,
        receiver() as hook_url,
        sender_serve(os.path.join(directory, "sender.db")) as url,
    ):
        client = FluxbaseClient(url, api_key=SERVICE_KEY)

        webhook = client.webhooks.create(
            {
                "name": "New users",
                "description": "Welcome e-mails",
                "url": hook_url,
                "secret": SECRET,
                "enabled": True,
                "events": [{"table": "users", "operations": ["INSERT"]}],
                "max_retries": 3,
                "timeout_seconds": 30,
                "retry_backoff_seconds": 5,
                "headers": {"X-Team": "growth"},
            }
        )
        print(f"created   {webhook.id} {webhook.name!r} -> {webhook.url}")

        for found in client.webhooks.list():
            print(f"listed    {found.id} enabled={found.enabled} scope={found.scope}")

        fetched = client.webhooks.get(webhook.id)
        print(f"got       {fetched.name!r}: {[(e.table, e.operations) for e in fetched.events]}")

        updated = client.webhooks.update(
            webhook.id,
            {"events": [{"table": "users", "operations": ["INSERT", "UPDATE"]}], "max_retries": 5},
        )
        print(f"updated   max_retries={updated.max_retries} events={updated.events[0].operations}")

        result = client.webhooks.test(webhook.id)
        print(f"tested    success={result.success} status={result.status_code}")

        scratch = client.webhooks.create({"name": "Scratch", "url": hook_url})
        client.webhooks.delete(scratch.id)
        print(f"deleted   {scratch.id}")

        deliveries = client.webhooks.get_deliveries(webhook.id, limit=10)
        for delivery in deliveries:
            print(
                f"delivery  {delivery.id} {delivery.event} {delivery.status}"
                f" status_code={delivery.status_code} attempt={delivery.attempt}"
            )
        return 0 if result.success and deliveries else 1


if __name__ == "__main__":
    sys.exit(main())
