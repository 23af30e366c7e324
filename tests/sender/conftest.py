"""Fixtures for the sender tests: a sender on a temporary SQLite file and a receiver."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxbase_receiver.sender import Sender, Webhook
from tests.sender.receivers import SECRET, ScriptedReceiver, serving


def deliver_all(sender: Sender, timeout: float = 20.0) -> None:
    """Run delivery passes until nothing is pending any more (retries included)."""
    deadline = time.monotonic() + timeout
    while True:
        sender.deliver_pending()
        due = sender.next_due()
        if due is None:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("deliveries still pending")
        time.sleep(min(1.0, max(0.0, due.timestamp() - time.time())))


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/app.db"


@pytest.fixture
def sender(database: str) -> Iterator[Sender]:
    with Sender(database, allow_private_networks=True, lease_grace_seconds=1.0) as instance:
        yield instance


@pytest.fixture
def target() -> ScriptedReceiver:
    return ScriptedReceiver()


@pytest.fixture
def hook_url(target: ScriptedReceiver) -> Iterator[str]:
    with serving(target) as url:
        yield url


def make_webhook(sender: Sender, url: str, **fields: Any) -> Webhook:
    options: dict[str, Any] = {
        "name": "orders hook",
        "url": url,
        "secret": SECRET,
        "events": [{"table": "*"}],
        "retry_backoff_seconds": 0.01,
        "timeout_seconds": 2,
    }
    options.update(fields)
    return sender.webhooks.create(options)


@pytest.fixture
def webhook(sender: Sender, hook_url: str) -> Webhook:
    return make_webhook(sender, hook_url)
