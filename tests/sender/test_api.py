"""The HTTP management API and ``FluxbaseClient(url, api_key).webhooks`` over loopback."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from fluxbase_receiver import FluxbaseClient
from fluxbase_receiver.client import FluxbaseAPIError
from fluxbase_receiver.sender import Sender
from fluxbase_receiver.sender.api import MAX_BODY, management_app
from tests.sender.receivers import SECRET, ScriptedReceiver
from tests.servers import run_asgi

SERVICE_KEY = "service-key-0123456789abcdef"


@pytest.fixture
def api_url(sender: Sender) -> Iterator[str]:
    with run_asgi(management_app(sender, SERVICE_KEY)) as url:
        yield url


@pytest.fixture
def client(api_url: str) -> FluxbaseClient:
    return FluxbaseClient(api_url, api_key=SERVICE_KEY)


def test_the_sdk_calls_round_trip(
    client: FluxbaseClient, sender: Sender, target: ScriptedReceiver, hook_url: str
) -> None:
    created = client.webhooks.create(
        {
            "name": "orders",
            "url": hook_url,
            "secret": SECRET,
            "events": [{"table": "orders", "operations": ["INSERT", "UPDATE"]}],
            "retry_backoff_seconds": 0.01,
        }
    )
    assert "secret" not in created
    assert created["events"] == [{"table": "orders", "operations": ["INSERT", "UPDATE"]}]
    assert client.webhooks.list() == [created]
    assert client.webhooks.get(created["id"]) == created

    updated = client.webhooks.update(created["id"], {"max_retries": 5})
    assert updated["max_retries"] == 5 and updated["name"] == "orders"

    result = client.webhooks.test(created["id"])
    assert result["success"] and result["status_code"] == 200
    custom = client.webhooks.test(
        created["id"], {"event": "INSERT", "table": "orders", "record": {"id": 1}}
    )
    assert custom["success"]
    assert [e.event for e in target.events] == ["TEST", "INSERT"]

    sender.emit("INSERT", "orders", {"id": 2})
    sender.deliver_pending()
    deliveries = client.webhooks.get_deliveries(created["id"], limit=2, offset=0)
    assert [d["status"] for d in deliveries] == ["success", "success"]
    assert deliveries[0]["event"] == "INSERT" and deliveries[0]["schema"] == "public"
    assert len(client.webhooks.get_deliveries(created["id"])) == 3

    client.webhooks.delete(created["id"])
    assert client.webhooks.list() == []
    with pytest.raises(FluxbaseAPIError) as missing:
        client.webhooks.get(created["id"])
    assert (missing.value.status, missing.value.code) == (404, "not_found")


def test_a_generated_secret_is_returned_once(client: FluxbaseClient, sender: Sender) -> None:
    created = client.webhooks.create({"name": "x", "url": "https://example.com/hook"})
    assert created["secret"] == sender.webhooks.get(created["id"]).secret.get_secret_value()
    assert "secret" not in client.webhooks.get(created["id"])


def test_invalid_webhooks_are_refused_with_field_messages(client: FluxbaseClient) -> None:
    with pytest.raises(FluxbaseAPIError) as refused:
        client.webhooks.create(
            {"name": "x", "url": "ftp://example.com", "max_retries": 50, "secret": "s"}
        )
    error = refused.value
    assert (error.status, error.code) == (422, "invalid_webhook")
    assert {e["field"] for e in error.errors} == {"url", "max_retries"}
    assert "s3cret" not in str(error)


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-key-0123456789", SERVICE_KEY, "Basic abc"]
)
def test_calls_need_the_bearer_service_key(api_url: str, authorization: str | None) -> None:
    request = urllib.request.Request(f"{api_url}/api/v1/webhooks")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    assert refused.value.headers["WWW-Authenticate"] == "Bearer"
    assert json.loads(refused.value.read())["error"] == "unauthorized"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "bad_request"),
        (b"[1, 2]", 400, "bad_request"),
        (b"{" + b" " * MAX_BODY + b"}", 413, "payload_too_large"),
    ],
)
def test_bad_bodies_get_clear_errors(api_url: str, body: bytes, status: int, code: str) -> None:
    request = urllib.request.Request(f"{api_url}/api/v1/webhooks", data=body, method="POST")
    request.add_header("Authorization", f"Bearer {SERVICE_KEY}")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == status
    assert json.loads(refused.value.read())["error"] == code


def test_bad_test_events_and_queries_are_refused(client: FluxbaseClient) -> None:
    created = client.webhooks.create({"name": "x", "url": "https://example.com/hook"})
    with pytest.raises(FluxbaseAPIError, match="event must be one of") as bad_event:
        client.webhooks.test(created["id"], {"event": "TRUNCATE"})
    assert bad_event.value.status == 400
    with pytest.raises(FluxbaseAPIError, match="unknown test fields"):
        client.webhooks.test(created["id"], {"colour": "red"})
    with pytest.raises(FluxbaseAPIError, match="limit must be"):
        client.webhooks.get_deliveries(created["id"], limit=-1)


def test_an_unreachable_server_is_a_clear_error() -> None:
    from tests.servers import free_port

    client = FluxbaseClient(f"http://127.0.0.1:{free_port()}", api_key=SERVICE_KEY)
    with pytest.raises(FluxbaseAPIError, match="cannot reach") as unreachable:
        client.webhooks.list()
    assert unreachable.value.status == 0
    assert SERVICE_KEY not in repr(client) + repr(client.webhooks)
