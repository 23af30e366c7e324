"""The HTTP management API over loopback: the Fluxbase server's shapes, statuses and errors."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fluxbase_receiver.sender import Sender
from fluxbase_receiver.sender.api import MAX_BODY, management_app
from tests.sender.conftest import make_webhook
from tests.sender.receivers import SECRET, Answer, ScriptedReceiver
from tests.servers import run_asgi

SERVICE_KEY = "service-key-0123456789abcdef"
READ_ONLY_KEY = "read-only-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {SERVICE_KEY}"}
HOOKS = "/api/v1/webhooks"
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9_]*$")


@pytest.fixture
def api(sender: Sender) -> Iterator[httpx.Client]:
    app = management_app(sender, SERVICE_KEY, read_only_keys=[READ_ONLY_KEY])
    with run_asgi(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error body, checked for the server's shape: a sentence and an UPPER_SNAKE code."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code and UPPER_SNAKE.match(body["code"])
    assert isinstance(body["error"], str) and " " in body["error"].strip()
    return body


def create(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    answer = api.post(HOOKS, json={"name": "orders", **fields}, headers=AUTH)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def test_webhooks_have_the_servers_shape(api: httpx.Client, hook_url: str) -> None:
    created = create(api, url=hook_url, secret=SECRET, scope="global")
    assert uuid.UUID(created["id"])
    assert [created[k] for k in ("max_retries", "timeout_seconds", "retry_backoff_seconds")] == [
        3,
        30,
        5,
    ]
    assert all(type(created[k]) is int for k in ("timeout_seconds", "retry_backoff_seconds"))
    assert created["scope"] == "global" and created["enabled"] is created["is_active"] is True
    assert "description" not in created and "secret" not in created
    listed = api.get(HOOKS, headers=AUTH).json()
    assert listed == [created]
    assert api.get(f"{HOOKS}/{created['id']}", headers=AUTH).json() == created
    assert create(api, url=hook_url, description="d")["description"] == "d"


def test_the_list_is_newest_first_like_the_server(api: httpx.Client, hook_url: str) -> None:
    first, second = create(api, url=hook_url), create(api, url=hook_url)
    assert [w["id"] for w in api.get(HOOKS, headers=AUTH).json()] == [second["id"], first["id"]]


def test_a_generated_secret_is_returned_once(
    api: httpx.Client, sender: Sender, hook_url: str
) -> None:
    created = create(api, url=hook_url)
    assert created["secret"] == sender.webhooks.get(created["id"]).secret.get_secret_value()
    assert "secret" not in api.get(f"{HOOKS}/{created['id']}", headers=AUTH).json()


def test_patch_merges_ignores_read_only_fields_and_answers_success(
    api: httpx.Client, sender: Sender, hook_url: str
) -> None:
    created = create(api, url=hook_url, secret=SECRET, headers={"X-Team": "a"})
    one = f"{HOOKS}/{created['id']}"
    fetched = api.get(one, headers=AUTH).json()
    echoed = api.patch(one, json={**fetched, "max_retries": 5}, headers=AUTH)
    assert echoed.status_code == 200, echoed.text
    body = echoed.json()
    assert body["success"] is True and body["message"] == "Webhook updated successfully"
    assert body["max_retries"] == 5 and body["id"] == created["id"]
    assert created["headers"] == body["headers"] == {"X-Team": "**********"}
    assert sender.webhooks.get(created["id"]).headers == {"X-Team": "a"}
    api.patch(one, json={"headers": {"X-Team": "b", "X-Env": "**********"}}, headers=AUTH)
    assert sender.webhooks.get(created["id"]).headers == {"X-Team": "b", "X-Env": "**********"}

    partial = api.patch(one, json={"is_active": False}, headers=AUTH).json()
    assert partial["enabled"] is False and partial["is_active"] is False
    assert partial["name"] == "orders" and partial["max_retries"] == 5
    assert partial["created_at"] == created["created_at"]
    assert api.put(one, json={"enabled": True}, headers=AUTH).json()["enabled"] is True


def test_delete_answers_200_with_the_servers_body(api: httpx.Client, hook_url: str) -> None:
    one = f"{HOOKS}/{create(api, url=hook_url)['id']}"
    deleted = api.delete(one, headers=AUTH)
    assert deleted.status_code == 200
    assert deleted.json() == {"success": True, "message": "Webhook deleted successfully"}
    refused(api.get(one, headers=AUTH), 404, "NOT_FOUND")


def test_a_test_send_answers_as_the_server_with_our_detail(
    api: httpx.Client, hook_url: str, target: ScriptedReceiver
) -> None:
    one = f"{HOOKS}/{create(api, url=hook_url, secret=SECRET)['id']}"
    sent = api.post(f"{one}/test", json={}, headers=AUTH)
    assert sent.status_code == 200
    body = sent.json()
    assert body["success"] is True and body["message"] == "Test webhook sent successfully"
    assert body["status_code"] == 200 and uuid.UUID(body["delivery_id"])
    assert [e.event for e in target.events] == ["TEST"]

    custom = {"event": "INSERT", "table": "orders", "record": {"id": 1}, "schema": "shop"}
    assert api.post(f"{one}/test", json=custom, headers=AUTH).json()["success"] is True
    assert target.events[-1].table == "orders" and target.events[-1].schema_name == "shop"

    target.script.append(Answer(500, body=b"down for maintenance"))
    failed = refused(api.post(f"{one}/test", headers=AUTH), 502, "WEBHOOK_TEST_FAILED")
    assert failed["error"] == "HTTP 500: down for maintenance"
    assert failed["success"] is False and failed["status_code"] == 500
    assert failed["response_body"] == "down for maintenance" and uuid.UUID(failed["delivery_id"])


def test_deliveries_carry_the_servers_fields_and_can_be_redelivered(
    api: httpx.Client, sender: Sender, hook_url: str, target: ScriptedReceiver
) -> None:
    webhook = make_webhook(sender, hook_url, events=[{"table": "orders"}])
    one = f"{HOOKS}/{webhook.id}"
    sender.emit("INSERT", "orders", {"id": 7})
    sender.deliver_pending()
    (delivery,) = api.get(f"{one}/deliveries", headers=AUTH).json()
    assert uuid.UUID(delivery["id"]) and delivery["webhook_id"] == webhook.id
    assert delivery["status"] == "success" and delivery["event"] == "INSERT"
    assert delivery["status_code"] == delivery["response_status"] == 200
    assert delivery["attempt"] == delivery["attempts"] == 1
    assert delivery["payload"]["record"] == {"id": 7}
    assert delivery["payload"]["table"] == "orders" and delivery["payload"]["schema"] == "public"

    again = api.post(f"{one}/deliveries/{delivery['id']}/redeliver", headers=AUTH)
    assert again.status_code == 201 and again.json()["status"] == "pending"
    sender.deliver_pending()
    history = api.get(f"{one}/deliveries?limit=1&offset=1", headers=AUTH).json()
    assert [d["id"] for d in history] == [delivery["id"]]
    assert len(target.requests) == 2  # the receiver saw it again (and dropped the duplicate)

    other = make_webhook(sender, hook_url)
    elsewhere = f"{HOOKS}/{other.id}/deliveries/{delivery['id']}/redeliver"
    refused(api.post(elsewhere, headers=AUTH), 404, "NOT_FOUND")


def test_trailing_slashes_reach_the_same_routes(api: httpx.Client, hook_url: str) -> None:
    created = create(api, url=hook_url)
    for path in (f"{HOOKS}/", f"{HOOKS}/{created['id']}/", f"{HOOKS}/{created['id']}/deliveries/"):
        answer = api.get(path, headers=AUTH)
        assert answer.status_code == 200 and not answer.history, path
    assert (
        api.post(f"{HOOKS}/", json={"name": "x", "url": hook_url}, headers=AUTH).status_code == 201
    )


NESTED = b'{"name": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"
SOME_ID = "0b3f8c5e-2a51-4c1e-9b0d-6f1f0e9a7c11"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", HOOKS, b"{not json", 400, "INVALID_REQUEST_BODY"),
        ("POST", HOOKS, b"[1, 2]", 400, "INVALID_REQUEST_BODY"),
        ("POST", HOOKS, b"", 400, "INVALID_REQUEST_BODY"),
        ("POST", HOOKS, NESTED, 400, "INVALID_REQUEST_BODY"),
        ("POST", HOOKS, b'{"name": "x", "url": NaN}', 400, "INVALID_REQUEST_BODY"),
        ("POST", HOOKS, b"{" + b" " * MAX_BODY + b"}", 413, "PAYLOAD_TOO_LARGE"),
        ("POST", HOOKS, b'{"url": "https://example.com/h"}', 400, "MISSING_REQUIRED_FIELD"),
        ("POST", HOOKS, b'{"name": "x"}', 400, "MISSING_REQUIRED_FIELD"),
        ("POST", HOOKS, b'{"name": "x", "url": "ftp://x"}', 400, "INVALID_REQUEST_BODY"),
        (
            "POST",
            HOOKS,
            b'{"name": "x", "url": "https://e.com", "colour": 1}',
            400,
            "INVALID_REQUEST_BODY",
        ),
        (
            "POST",
            HOOKS,
            b'{"name": "x", "url": "https://e.com", "events": ["user.created"]}',
            400,
            "INVALID_REQUEST_BODY",
        ),
        (
            "POST",
            HOOKS,
            b'{"name": "x", "url": "https://e.com", "timeout_seconds": 2.5}',
            400,
            "INVALID_REQUEST_BODY",
        ),
        (
            "POST",
            HOOKS,
            b'{"name": "x", "url": "https://e.com", "max_retries": true}',
            400,
            "INVALID_REQUEST_BODY",
        ),
        (
            "POST",
            HOOKS,
            b'{"name": "x", "url": "https://e.com", "scope": "team"}',
            400,
            "INVALID_REQUEST_BODY",
        ),
        ("GET", f"{HOOKS}/not-a-uuid", b"", 400, "INVALID_ID"),
        ("GET", f"{HOOKS}/{SOME_ID}", b"", 404, "NOT_FOUND"),
        ("PATCH", f"{HOOKS}/{SOME_ID}", b"{}", 404, "NOT_FOUND"),
        ("DELETE", f"{HOOKS}/{SOME_ID}", b"", 404, "NOT_FOUND"),
        ("POST", f"{HOOKS}/{SOME_ID}/test", b"", 404, "NOT_FOUND"),
        ("GET", f"{HOOKS}/{SOME_ID}/deliveries", b"", 404, "NOT_FOUND"),
        ("POST", f"{HOOKS}/{SOME_ID}/deliveries/{SOME_ID}/redeliver", b"", 404, "NOT_FOUND"),
        ("POST", f"{HOOKS}/{SOME_ID}/deliveries/nope/redeliver", b"", 400, "INVALID_ID"),
        ("DELETE", HOOKS, b"", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/api/v1/nothing", b"", 404, "NOT_FOUND"),
    ],
)
def test_every_refusal_has_the_servers_status_and_shape(
    api: httpx.Client, method: str, path: str, body: bytes, status: int, code: str
) -> None:
    answer = api.request(method, path, content=body, headers=AUTH)
    refused(answer, status, code)


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        (b'{"schema": null}', "schema"),
        (b'{"event": null}', "event"),
        (b'{"table": null}', "table"),
        (b'{"event": "TRUNCATE"}', "event"),
        (b'{"table": "bad name"}', "table"),
        (b'{"schema": "a;b"}', "schema"),
        (b'{"colour": "red"}', "colour"),
        (b"[" * 30_000 + b"]" * 30_000, "body"),
    ],
)
def test_bad_test_sends_are_400(
    api: httpx.Client, hook_url: str, request_body: bytes, field: str
) -> None:
    one = f"{HOOKS}/{create(api, url=hook_url)['id']}"
    body = refused(
        api.post(f"{one}/test", content=request_body, headers=AUTH), 400, "INVALID_REQUEST_BODY"
    )
    assert [e["field"] for e in body["errors"]] == [field]


@pytest.mark.parametrize(
    "query",
    [
        "limit=%C2%B2",
        "limit=" + "9" * 5000,
        "offset=" + "9" * 30,
        "limit=0",
        "limit=-1",
        "offset=x",
    ],
)
def test_bad_delivery_queries_are_400(api: httpx.Client, hook_url: str, query: str) -> None:
    one = f"{HOOKS}/{create(api, url=hook_url)['id']}"
    refused(api.get(f"{one}/deliveries?{query}", headers=AUTH), 400, "INVALID_QUERY_PARAMETER")


def test_a_large_limit_is_capped_not_refused(api: httpx.Client, hook_url: str) -> None:
    one = f"{HOOKS}/{create(api, url=hook_url)['id']}"
    assert api.get(f"{one}/deliveries?limit=100000", headers=AUTH).json() == []


def test_field_errors_name_each_field_without_echoing_secrets(api: httpx.Client) -> None:
    body = refused(
        api.post(
            HOOKS,
            json={"name": "x", "url": "ftp://e.com", "max_retries": 50, "secret": "s3cr3t-value"},
            headers=AUTH,
        ),
        400,
        "INVALID_REQUEST_BODY",
    )
    assert {e["field"] for e in body["errors"]} == {"url", "max_retries"}
    assert "s3cr3t-value" not in str(body)


def test_enabled_and_is_active_must_agree(api: httpx.Client, hook_url: str) -> None:
    fields = {"name": "x", "url": hook_url, "enabled": True, "is_active": False}
    body = refused(api.post(HOOKS, json=fields, headers=AUTH), 400, "INVALID_REQUEST_BODY")
    assert body["errors"] == [{"field": "is_active", "message": "is_active and enabled disagree"}]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {SERVICE_KEY}"},
        {"apikey": SERVICE_KEY},
        {"X-Service-Key": SERVICE_KEY},
        {"Authorization": f"ServiceKey {SERVICE_KEY}"},
        {"apikey": SERVICE_KEY, "Authorization": f"Bearer {SERVICE_KEY}"},
    ],
)
def test_service_keys_are_accepted_as_the_server_accepts_them(
    api: httpx.Client, headers: dict[str, str]
) -> None:
    created = api.post(HOOKS, json={"name": "x", "url": "https://e.com/h"}, headers=headers)
    assert created.status_code == 201


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "UNAUTHORIZED"),
        ({"Authorization": "Bearer wrong-key-0123456789"}, "INVALID_SERVICE_KEY"),
        ({"Authorization": SERVICE_KEY}, "UNAUTHORIZED"),
        ({"Authorization": "Basic abc"}, "UNAUTHORIZED"),
        ({"apikey": SERVICE_KEY[:-1]}, "INVALID_SERVICE_KEY"),
        ({"X-Service-Key": "x" * 40}, "INVALID_SERVICE_KEY"),
    ],
)
@pytest.mark.parametrize("path", [HOOKS, f"{HOOKS}/{SOME_ID}/deliveries", "/openapi.json", "/x"])
def test_no_endpoint_answers_without_a_valid_key(
    api: httpx.Client, headers: dict[str, str], code: str, path: str
) -> None:
    answer = api.get(path, headers=headers)
    refused(answer, 401, code)
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert SERVICE_KEY not in answer.text


def test_read_only_keys_read_and_are_refused_writes(api: httpx.Client, hook_url: str) -> None:
    created = create(api, url=hook_url)
    reader = {"apikey": READ_ONLY_KEY}
    assert api.get(HOOKS, headers=reader).json()[0]["id"] == created["id"]
    one = f"{HOOKS}/{created['id']}"
    for method, path in [("POST", HOOKS), ("PATCH", one), ("DELETE", one), ("POST", f"{one}/test")]:
        body = refused(
            api.request(method, path, json={}, headers=reader), 403, "INSUFFICIENT_PERMISSIONS"
        )
        assert body["required_scope"] == "webhooks:write"


def test_the_key_can_come_from_the_environment(
    sender: Sender, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUXBASE_SERVICE_KEY", SERVICE_KEY)
    with run_asgi(management_app(sender)) as url:
        assert httpx.get(f"{url}{HOOKS}", headers=AUTH).status_code == 200
        assert httpx.get(f"{url}{HOOKS}").status_code == 401
    monkeypatch.delenv("FLUXBASE_SERVICE_KEY")
    with pytest.raises(ValueError, match="service key is required"):
        management_app(sender)
    with pytest.raises(ValueError, match="at least 16"):
        management_app(sender, "short")


def test_cors_is_off_by_default_and_configurable(sender: Sender, api: httpx.Client) -> None:
    preflight = {
        "Origin": "https://admin.example.com",
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    assert "access-control-allow-origin" not in api.options(HOOKS, headers=preflight).headers
    app = management_app(sender, SERVICE_KEY, cors_origins=["https://admin.example.com"])
    with run_asgi(app) as url:
        allowed = httpx.options(f"{url}{HOOKS}", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://admin.example.com"
        assert "PATCH" in allowed.headers["access-control-allow-methods"]
        listed = httpx.get(f"{url}{HOOKS}", headers={**AUTH, "Origin": preflight["Origin"]})
        assert listed.headers["access-control-allow-origin"] == "https://admin.example.com"
        denied = httpx.get(f"{url}{HOOKS}", headers={"Origin": preflight["Origin"]})
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] == "https://admin.example.com"


def test_private_urls_are_refused_at_the_door_unless_allowed(database: str) -> None:
    with (
        Sender(database) as guarded,
        run_asgi(management_app(guarded, SERVICE_KEY)) as url,
        httpx.Client(base_url=url, timeout=10) as api,
    ):
        for private in ("http://127.0.0.1:8080/h", "http://10.1.2.3/h", "http://[fe80::1]/h"):
            answer = api.post(HOOKS, json={"name": "x", "url": private}, headers=AUTH)
            body = refused(answer, 400, "INVALID_REQUEST_BODY")
            assert [e["field"] for e in body["errors"]] == ["url"]
            assert "private" in body["error"] or "loopback" in body["error"]
        created = create(api, url="https://93.184.215.14/hook")
        moved = api.patch(
            f"{HOOKS}/{created['id']}", json={"url": "http://169.254.169.254/"}, headers=AUTH
        )
        refused(moved, 400, "INVALID_REQUEST_BODY")
    with (
        Sender(database, allow_private_networks=True) as open_sender,
        run_asgi(management_app(open_sender, SERVICE_KEY)) as url,
        httpx.Client(base_url=url, timeout=10) as api,
    ):
        assert create(api, url="http://127.0.0.1:8080/h")["url"] == "http://127.0.0.1:8080/h"
