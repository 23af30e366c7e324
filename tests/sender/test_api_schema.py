"""Property-based run over the management API's OpenAPI document (schemathesis).

Valid and invalid requests generated from the document go to the real app on loopback:
no answer may be a 5xx (but the documented 502 of a test send whose receiver failed),
use an undocumented status, or break the document's schemas. Webhook URLs in generated
bodies are pointed at a loopback receiver (nothing leaves the machine), and half the
generated ids are swapped for a webhook that exists, so the handlers behind the 404s
run too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fluxbase_receiver.sender import Sender
from fluxbase_receiver.sender.api import management_app
from fluxbase_receiver.sender.openapi import openapi_document
from tests.sender.receivers import SECRET, ScriptedReceiver, serving
from tests.servers import run_asgi

SERVICE_KEY = "service-key-0123456789abcdef"
schema = schemathesis.openapi.from_dict(
    openapi_document(), config=schemathesis.Config.from_dict({"generation": {"mode": "all"}})
)


@schemathesis.check
def no_server_error(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """No 5xx, except the documented 502 of a test send whose receiver failed."""
    if response.status_code == 502 and response.json().get("code") == "WEBHOOK_TEST_FAILED":
        return None
    return not_a_server_error(ctx, response, case)


class Served:
    """The API on loopback, its sender, and a receiver for the webhooks it creates."""

    def __init__(self, url: str, sender: Sender, hook_url: str) -> None:
        self.url = url
        self.sender = sender
        self.hook_url = hook_url

    def existing_webhook(self) -> str:
        """The id of a webhook that exists (made again after a generated DELETE)."""
        found = self.sender.webhooks.list()
        if found:
            return found[0].id
        created = self.sender.webhooks.create(
            name="kept", url=self.hook_url, secret=SECRET, timeout_seconds=2
        )
        self.sender.emit("INSERT", "orders", {"id": 1})
        return created.id


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory: Path = tmp_path_factory.mktemp("schema")
    with (
        Sender(f"sqlite:///{directory}/app.db", allow_private_networks=True) as sender,
        serving(ScriptedReceiver()) as hook_url,
        run_asgi(management_app(sender, SERVICE_KEY)) as url,
    ):
        yield Served(url, sender, hook_url)


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_answer_is_a_5xx_or_breaks_the_document(case: schemathesis.Case, served: Served) -> None:
    if isinstance(case.body, dict) and "url" in case.body:
        case.body["url"] = served.hook_url
    parameters = case.path_parameters or {}
    if "webhook_id" in parameters and hash(parameters["webhook_id"]) % 2:
        parameters["webhook_id"] = served.existing_webhook()
    case.call_and_validate(
        base_url=served.url,
        headers={"Authorization": f"Bearer {SERVICE_KEY}"},
        checks=[
            no_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
