"""The SSRF guard against every spelling of a loopback or unspecified address.

Each URL names a real recording server on loopback. With private networks refused
(the default) the server must never see a connection, the delivery must be recorded
as a refusal naming the rule, and the webhook cannot be created or pointed there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from fluxbase_receiver.sender import Sender, WebhookValidationError
from tests.sender.conftest import make_webhook
from tests.sender.receivers import RawServer

V4 = "127.0.0.1"
V6 = "::1"

SPELLINGS = [
    # (host as written in the URL, where the recording server listens, rule named)
    ("\uff11\uff12\uff17.0.0.1", V4, "loopback"),  # fullwidth digits
    ("127\u30020\u30020\u30021", V4, "loopback"),  # ideographic full stops
    ("\u2460\u2461\u2466.0.0.1", V4, "loopback"),  # circled digits
    ("127\uff0e0\uff0e0\uff0e1", V4, "loopback"),  # fullwidth full stops
    ("127.1", V4, "loopback"),
    ("2130706433", V4, "loopback"),
    ("0177.0.0.1", V4, "loopback"),
    ("017700000001", V4, "loopback"),
    ("0x7f.0.0.1", V4, "loopback"),
    ("0x7f000001", V4, "loopback"),
    ("127.000.000.001", V4, "loopback"),
    ("127.0.0.1.", V4, "loopback"),
    ("0", V4, "unspecified"),
    ("0.0.0.0", V4, "unspecified"),
    ("[::1]", V6, "loopback"),
    ("[0:0:0:0:0:0:0:1]", V6, "loopback"),
    ("[::]", V6, "unspecified"),
    ("[::ffff:127.0.0.1]", V4, "loopback"),
    ("[::ffff:7f00:1]", V4, "loopback"),
    ("[64:ff9b::127.0.0.1]", V4, "loopback"),
    ("localhost", V4, "loopback"),
    ("LOCALHOST", V4, "loopback"),
    ("localhost.", V4, "loopback"),
    ("\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54", V4, "loopback"),
]
IDS = [spelling for spelling, _, _ in SPELLINGS]


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/app.db"


@pytest.fixture
def guarded(database: str) -> Iterator[Sender]:
    with Sender(database) as sender:  # allow_private_networks defaults to False
        yield sender


@pytest.fixture
def permissive(database: str) -> Iterator[Sender]:
    """The same database opened with the guard off: it can store any URL."""
    with Sender(database, allow_private_networks=True) as sender:
        yield sender


@pytest.mark.parametrize(("host", "listen", "rule"), SPELLINGS, ids=IDS)
def test_a_delivery_to_any_spelling_is_refused_and_never_connects(
    guarded: Sender, permissive: Sender, host: str, listen: str, rule: str
) -> None:
    with RawServer(host=listen) as server:
        url = f"http://{host}:{server.port}/hook"
        webhook = make_webhook(permissive, url, max_retries=0)
        guarded.emit("INSERT", "orders", {"id": 1})
        guarded.deliver_pending()
        tested = guarded.webhooks.test(webhook.id)

    assert server.connections == 0 and server.requests == []
    assert not tested.success and tested.status_code is None
    deliveries = guarded.webhooks.get_deliveries(webhook.id)
    assert len(deliveries) == 2
    for delivery in deliveries:
        assert delivery.status == "failed" and delivery.response_status is None
        assert delivery.error is not None and delivery.error.startswith("destination ")
        assert f"is {rule}" in delivery.error
        assert "allow_private_networks=True" in delivery.error
        (attempt,) = guarded.get_attempts(delivery.id)
        assert attempt.outcome == "refused"


@pytest.mark.parametrize(("host", "listen", "rule"), SPELLINGS, ids=IDS)
def test_creating_or_pointing_a_webhook_at_any_spelling_is_refused(
    guarded: Sender, host: str, listen: str, rule: str
) -> None:
    url = f"http://{host}:8080/hook"
    with pytest.raises(WebhookValidationError) as created:
        guarded.webhooks.create(name="hook", url=url)
    existing = guarded.webhooks.create(name="hook", url="https://example.com/hook")
    with pytest.raises(WebhookValidationError) as updated:
        guarded.webhooks.update(existing.id, url=url)

    for error in (created.value, updated.value):
        ((field, message),) = [(e["field"], e["message"]) for e in error.errors]
        assert field == "url" and f"is {rule}" in message
        assert "allow_private_networks=True" in message
    assert guarded.webhooks.get(existing.id).url == "https://example.com/hook"


def test_the_opt_in_still_stores_and_reaches_loopback(permissive: Sender) -> None:
    with RawServer() as server:
        webhook = make_webhook(permissive, f"http://localhost:{server.port}/hook")
        assert permissive.webhooks.test(webhook.id).success
    assert len(server.requests) == 1


def test_a_webhook_stored_before_the_guard_can_still_be_edited_and_disabled(
    guarded: Sender, permissive: Sender
) -> None:
    webhook = make_webhook(permissive, "http://127.0.0.1:9/hook")
    renamed = guarded.webhooks.update(webhook.id, name="renamed", enabled=False)
    assert (renamed.name, renamed.enabled, renamed.url) == ("renamed", False, webhook.url)


def test_redirects_to_loopback_are_not_followed(permissive: Sender) -> None:
    with RawServer() as inner:
        location = f"http://127.0.0.1:{inner.port}/internal"

        async def redirect(writer: asyncio.StreamWriter) -> None:
            writer.write(
                b"HTTP/1.1 307 Temporary Redirect\r\nLocation: "
                + location.encode()
                + b"\r\nContent-Length: 0\r\n\r\n"
            )
            await writer.drain()

        with RawServer(redirect) as outer:
            webhook = make_webhook(permissive, f"http://127.0.0.1:{outer.port}/hook", max_retries=0)
            permissive.emit("INSERT", "orders", {"id": 1})
            permissive.deliver_pending()
    assert len(outer.requests) == 1 and inner.connections == 0
    (delivery,) = permissive.webhooks.get_deliveries(webhook.id)
    assert (delivery.status, delivery.response_status) == ("failed", 307)
    assert delivery.error == f"redirect 307 not followed (Location: {location})"
