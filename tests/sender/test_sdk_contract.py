"""The official Fluxbase TypeScript SDK, built unmodified, against ``sender serve``.

Every webhook call of ``client.management.webhooks`` and every refusal it can meet,
driven with node over loopback. Skipped (with the reason) when node or the SDK build
is missing; under ``CI=true`` that is a failure instead.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sender.receivers import SECRET, Answer, ScriptedReceiver, serving
from tests.sender.served import READ_ONLY_KEY, SERVICE_KEY, sender_serve
from tests.servers import IN_CI, ROOT

SDK = ROOT.parent / "shared" / "fluxbase-sdk" / "dist" / "index.js"
SCRIPT = Path(__file__).parent / "sdk" / "contract.mjs"


def _node() -> str:
    node = shutil.which("node")
    missing = None if node else "node is not installed"
    if node and not SDK.exists():
        missing = f"the Fluxbase SDK build is missing ({SDK})"
    if missing:
        if IN_CI:
            pytest.fail(f"the SDK contract suite cannot run under CI: {missing}")
        pytest.skip(missing)
    assert node is not None
    return node


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    node = _node()
    target, failing = ScriptedReceiver(), ScriptedReceiver()
    failing.script.extend([Answer(500, body=b"receiver is down")] * 5)
    directory = tmp_path_factory.mktemp("sdk")
    with serving(target) as hook_url, serving(failing) as failing_url:
        with sender_serve(directory) as api_url:
            config = {
                "serviceKey": SERVICE_KEY,
                "readOnlyKey": READ_ONLY_KEY,
                "hookUrl": hook_url,
                "failingUrl": failing_url,
                "secret": SECRET,
            }
            run = subprocess.run(
                [node, str(SCRIPT), str(SDK), api_url, json.dumps(config)],
                capture_output=True,
                text=True,
                timeout=120,
            )
        assert run.returncode == 0, run.stderr
        found: dict[str, Any] = json.loads(run.stdout)
        found["_events"] = [e.event for e in target.events]
        yield found


def ok(results: dict[str, Any], name: str) -> Any:
    outcome = results[name]
    assert outcome["ok"], f"{name} failed: {outcome}"
    return outcome["value"]


def refused(results: dict[str, Any], name: str, status: int, code: str) -> str:
    outcome = results[name]
    assert not outcome["ok"], f"{name} succeeded: {outcome}"
    assert outcome["status"] == status and outcome["details"]["code"] == code, outcome
    message: str = outcome["message"]
    assert message == outcome["details"]["error"] and " " in message
    return message


def test_create_get_and_list(results: dict[str, Any]) -> None:
    created = ok(results, "create")
    assert uuid.UUID(created["id"]) and "secret" not in created
    assert created["events"] == [{"table": "orders", "operations": ["INSERT", "UPDATE"]}]
    assert created["description"] == "orders to the billing service"
    assert created["timeout_seconds"] == 30 and created["scope"] == "user"
    assert ok(results, "get") == created
    assert created in ok(results, "list")
    assert ok(results, "read_only_list")


def test_updates_answer_success_message_and_the_webhook(results: dict[str, Any]) -> None:
    updated = ok(results, "update")
    assert updated["success"] is True and updated["message"] == "Webhook updated successfully"
    assert updated["max_retries"] == 5 and updated["name"] == "orders"
    echoed = ok(results, "update_with_get_answer")
    assert echoed["timeout_seconds"] == 10 and echoed["max_retries"] == 3  # as sent back
    assert ok(results, "update_is_active")["is_active"] is False
    assert ok(results, "update_enable")["enabled"] is True


def test_test_sends_and_delivery_history(results: dict[str, Any]) -> None:
    sent = ok(results, "test")
    assert sent["success"] is True and sent["message"] == "Test webhook sent successfully"
    assert sent["status_code"] == 200
    assert results["_events"] == ["TEST"]
    (delivery,) = ok(results, "list_deliveries")
    assert delivery["id"] == sent["delivery_id"] and delivery["status"] == "success"
    assert delivery["status_code"] == 200 and delivery["attempt"] == 1
    assert delivery["payload"]["event"] == "TEST" and delivery["payload"]["record"] == {
        "test": True
    }
    assert ok(results, "list_deliveries_limit") == [delivery]


def test_a_failing_receiver_fails_the_test_as_the_server_reports_it(
    results: dict[str, Any],
) -> None:
    message = refused(results, "test_failing", 502, "WEBHOOK_TEST_FAILED")
    assert message == "HTTP 500: receiver is down"
    assert results["test_failing"]["details"]["success"] is False


def test_deletes_answer_success_and_message(results: dict[str, Any]) -> None:
    assert ok(results, "delete") == {"success": True, "message": "Webhook deleted successfully"}
    assert ok(results, "delete_failing")["success"] is True
    assert ok(results, "list_after_delete") == []


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("error_missing_name", 400, "MISSING_REQUIRED_FIELD"),
        ("error_sdk_typed_events", 400, "INVALID_REQUEST_BODY"),
        ("error_invalid_id", 400, "INVALID_ID"),
        ("error_too_large", 413, "PAYLOAD_TOO_LARGE"),
        ("error_bad_limit", 400, "INVALID_QUERY_PARAMETER"),
        ("error_read_only_write", 403, "INSUFFICIENT_PERMISSIONS"),
        ("error_wrong_key", 401, "INVALID_SERVICE_KEY"),
        ("error_get_deleted", 404, "NOT_FOUND"),
        ("error_update_deleted", 404, "NOT_FOUND"),
        ("error_delete_deleted", 404, "NOT_FOUND"),
        ("error_test_deleted", 404, "NOT_FOUND"),
        ("error_deliveries_deleted", 404, "NOT_FOUND"),
    ],
)
def test_every_refusal_reaches_the_sdk_as_a_sentence(
    results: dict[str, Any], name: str, status: int, code: str
) -> None:
    refused(results, name, status, code)


def test_the_sdk_sees_the_servers_sentences(results: dict[str, Any]) -> None:
    assert refused(results, "error_missing_name", 400, "MISSING_REQUIRED_FIELD") == (
        "Name is required"
    )
    assert refused(results, "error_wrong_key", 401, "INVALID_SERVICE_KEY") == "Invalid service key"
    read_only = results["error_read_only_write"]["details"]
    assert read_only["required_scope"] == "webhooks:write"
