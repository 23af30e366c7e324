"""``FluxbaseClient`` and ``AsyncFluxbaseClient`` against the management API over loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from fluxbase_receiver import (
    AsyncFluxbaseClient,
    FluxbaseAPIError,
    FluxbaseClient,
    ManagedWebhook,
    WebhookDelivery,
    WebhookTestResult,
)
from fluxbase_receiver.sender import Sender
from fluxbase_receiver.sender.api import management_app
from tests.sender.receivers import SECRET, Answer, ScriptedReceiver
from tests.servers import free_port, run_asgi

SERVICE_KEY = "service-key-0123456789abcdef"


@pytest.fixture
def api_url(sender: Sender) -> Iterator[str]:
    with run_asgi(management_app(sender, SERVICE_KEY)) as url:
        yield url


@pytest.fixture
def client(api_url: str) -> FluxbaseClient:
    return FluxbaseClient(api_url, api_key=SERVICE_KEY)


def test_every_call_returns_typed_models(
    client: FluxbaseClient, sender: Sender, hook_url: str, target: ScriptedReceiver
) -> None:
    created = client.webhooks.create(
        {
            "name": "orders",
            "url": hook_url,
            "secret": SECRET,
            "events": [{"table": "orders", "operations": ["INSERT", "UPDATE"]}],
        }
    )
    assert isinstance(created, ManagedWebhook) and uuid.UUID(created.id)
    assert created.secret is None and created.scope == "user" and created.timeout_seconds == 30
    assert [(e.table, e.operations) for e in created.events] == [("orders", ["INSERT", "UPDATE"])]
    assert client.webhooks.list() == [created]
    assert client.webhooks.get(created.id) == created

    updated = client.webhooks.update(created.id, {"max_retries": 5})
    assert isinstance(updated, ManagedWebhook)
    assert updated.max_retries == 5 and updated.name == "orders"

    result = client.webhooks.test(created.id)
    assert isinstance(result, WebhookTestResult)
    assert result.success and result.status_code == 200 and result.delivery_id
    custom = client.webhooks.test(
        created.id, {"event": "INSERT", "table": "orders", "record": {"id": 1}}
    )
    assert custom.success
    assert [e.event for e in target.events] == ["TEST", "INSERT"]

    target.script.append(Answer(503, body=b"busy"))
    failed = client.webhooks.test(created.id)
    assert not failed.success and failed.status_code == 503 and failed.error == "HTTP 503: busy"

    sender.emit("INSERT", "orders", {"id": 2})
    sender.deliver_pending()
    deliveries = client.webhooks.get_deliveries(created.id, limit=2, offset=0)
    assert all(isinstance(d, WebhookDelivery) for d in deliveries)
    assert [d.status for d in deliveries] == ["success", "failed"]
    assert deliveries[0].payload is not None and deliveries[0].payload["record"] == {"id": 2}
    assert deliveries[0].status_code == 200 and deliveries[0].attempt == 1
    assert len(client.webhooks.get_deliveries(created.id)) == 4

    again = client.webhooks.redeliver(created.id, deliveries[0].id)
    assert isinstance(again, WebhookDelivery) and again.status == "pending"
    assert again.id != deliveries[0].id

    client.webhooks.delete(created.id)
    assert client.webhooks.list() == []
    with pytest.raises(FluxbaseAPIError) as missing:
        client.webhooks.get(created.id)
    error = missing.value
    assert (error.status, error.code) == (404, "NOT_FOUND")
    assert str(error) == f"No webhook with id {created.id!r}"


def test_a_generated_secret_is_returned_once(client: FluxbaseClient, sender: Sender) -> None:
    created = client.webhooks.create({"name": "x", "url": "https://example.com/hook"})
    assert created.secret == sender.webhooks.get(created.id).secret.get_secret_value()
    assert client.webhooks.get(created.id).secret is None


def test_refusals_are_typed_errors_with_field_messages(client: FluxbaseClient) -> None:
    with pytest.raises(FluxbaseAPIError) as refused:
        client.webhooks.create(
            {"name": "x", "url": "ftp://example.com", "max_retries": 50, "secret": "s3cr3t"}
        )
    error = refused.value
    assert (error.status, error.code) == (400, "INVALID_REQUEST_BODY")
    assert {e["field"] for e in error.errors} == {"url", "max_retries"}
    assert str(error).startswith("Invalid request body: ") and "s3cr3t" not in str(error)
    assert error.detail["code"] == "INVALID_REQUEST_BODY"
    with pytest.raises(FluxbaseAPIError) as bad_id:
        client.webhooks.get("not-a-uuid")
    assert (bad_id.value.status, bad_id.value.code) == (400, "INVALID_ID")
    with pytest.raises(FluxbaseAPIError) as bad_limit:
        client.webhooks.get_deliveries(str(uuid.uuid4()), limit=0)
    assert bad_limit.value.code == "INVALID_QUERY_PARAMETER"


def test_a_wrong_key_is_a_401(api_url: str) -> None:
    with pytest.raises(FluxbaseAPIError) as refused:
        FluxbaseClient(api_url, api_key="wrong-key-0123456789abcdef").webhooks.list()
    assert (refused.value.status, refused.value.code) == (401, "INVALID_SERVICE_KEY")


def test_the_async_client_makes_the_same_calls(api_url: str, hook_url: str) -> None:
    async def scenario() -> None:
        client = AsyncFluxbaseClient(api_url, api_key=SERVICE_KEY)
        created = await client.webhooks.create({"name": "a", "url": hook_url, "secret": SECRET})
        assert isinstance(created, ManagedWebhook)
        assert await client.webhooks.list() == [created]
        assert await client.webhooks.get(created.id) == created
        assert (await client.webhooks.update(created.id, {"enabled": False})).enabled is False
        assert (await client.webhooks.test(created.id)).success
        (delivery,) = await client.webhooks.get_deliveries(created.id)
        assert (await client.webhooks.redeliver(created.id, delivery.id)).status == "pending"
        await client.webhooks.delete(created.id)
        with pytest.raises(FluxbaseAPIError) as missing:
            await client.webhooks.get(created.id)
        assert missing.value.status == 404

    asyncio.run(scenario())


def test_an_unreachable_server_is_a_clear_error() -> None:
    client = FluxbaseClient(f"http://127.0.0.1:{free_port()}", api_key=SERVICE_KEY)
    with pytest.raises(FluxbaseAPIError, match="cannot reach") as unreachable:
        client.webhooks.list()
    assert (unreachable.value.status, unreachable.value.code) == (0, "UNREACHABLE")
    clients = (client, AsyncFluxbaseClient(client.url, api_key=SERVICE_KEY))
    assert all(SERVICE_KEY not in repr(c) + repr(c.webhooks) for c in clients)
    with pytest.raises(ValueError, match="http"):
        AsyncFluxbaseClient("ftp://x", api_key=SERVICE_KEY)


def test_the_client_module_imports_only_the_standard_library_and_pydantic() -> None:
    third_party = {"aiohttp", "httpx", "starlette", "uvicorn", "requests", "anyio"}
    code = (
        "import json, sys, fluxbase_receiver.client;"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {third_party!r})))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(found.stdout) == []
