"""``FluxbaseClient``: the calls of the Fluxbase SDK that this package mirrors.

``FluxbaseClient.verify_webhook_signature`` checks a signature (static, no server).
``FluxbaseClient(url, api_key).webhooks`` manages webhooks over the HTTP management API
(``fluxbase-receiver sender serve``, or a Fluxbase server) with the standard library's
HTTP client, and returns typed models; :class:`AsyncFluxbaseClient` does the same from
async code::

    client = FluxbaseClient("https://sender.example.com", api_key=SERVICE_KEY)
    hook = client.webhooks.create({"name": "orders", "url": "https://...",
                                   "events": [{"table": "orders"}]})
    client.webhooks.test(hook.id)
    client.webhooks.get_deliveries(hook.id, limit=50, offset=0)

A refusal raises :class:`FluxbaseAPIError` with the server's ``status``, ``code`` and
message (``str(error)``).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from fluxbase_receiver.errors import FluxbaseError, SignatureError
from fluxbase_receiver.signature import (
    DEFAULT_TOLERANCE,
    Secrets,
    verify_legacy_signature,
    verify_signature,
)

__all__ = [
    "AsyncFluxbaseClient",
    "AsyncWebhooksClient",
    "FluxbaseAPIError",
    "FluxbaseClient",
    "ManagedWebhook",
    "TableEvents",
    "WebhookDelivery",
    "WebhookTestResult",
    "WebhooksClient",
]


def fluxbase_json(payload: Mapping[str, Any]) -> bytes:
    """Compact JSON as a Fluxbase server's Go encoder writes it (``<``, ``>``, ``&`` escaped)."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode("utf-8")


class FluxbaseAPIError(FluxbaseError):
    """The management API refused a call, or could not be reached (``status`` 0).

    ``code`` (``NOT_FOUND``, ``INVALID_REQUEST_BODY``, ...) and ``str(error)`` come from
    the server's answer; ``errors`` holds its ``{"field", "message"}`` list for a refused
    body and ``detail`` the whole error body.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        errors: list[dict[str, str]] | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.errors = errors or []
        self.detail = detail or {}


class _Answer(BaseModel):
    """An answer of the management API: fields this package does not know are kept."""

    model_config = ConfigDict(extra="allow")


class TableEvents(_Answer):
    """Which changes a webhook receives: a table and its operations."""

    table: str
    operations: list[str] = ["*"]


class ManagedWebhook(_Answer):
    """A webhook as the management API shows it (never its secret, except once on create)."""

    id: str
    name: str
    url: str
    enabled: bool
    events: list[TableEvents]
    max_retries: int
    timeout_seconds: int | float
    retry_backoff_seconds: int | float
    headers: dict[str, str] = {}
    scope: str = "user"
    description: str | None = None
    secret: str | None = None
    """Only in the answer to a create that let the server generate the secret."""
    created_at: datetime
    updated_at: datetime


class WebhookDelivery(_Answer):
    """One event to one webhook, and where its delivery stands."""

    id: str
    webhook_id: str
    event: str
    status: str
    attempt: int = 0
    status_code: int | None = None
    response_body: str | None = None
    error: str | None = None
    payload: dict[str, Any] | None = None
    created_at: datetime
    delivered_at: datetime | None = None


class WebhookTestResult(_Answer):
    """What a test send got: ``success``, and the receiver's answer or the error."""

    __test__ = False  # not a pytest test class

    success: bool
    message: str | None = None
    status_code: int | None = None
    response_body: str | None = None
    error: str | None = None
    delivery_id: str | None = None


class WebhooksClient:
    """``client.webhooks``: the Fluxbase SDK's webhook calls, over HTTP."""

    def __init__(self, url: str, api_key: str, timeout: float) -> None:
        self._base = url.rstrip("/") + "/api/v1/webhooks"
        self._api_key = api_key
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"<WebhooksClient {self._base}>"

    def create(self, webhook: Mapping[str, Any]) -> ManagedWebhook:
        """Create a webhook (the answer holds ``secret`` only when the server generated it)."""
        return ManagedWebhook.model_validate(self._call("POST", "", webhook))

    def list(self) -> builtins.list[ManagedWebhook]:
        """Every webhook."""
        return [ManagedWebhook.model_validate(item) for item in self._call("GET", "")]

    def get(self, webhook_id: str) -> ManagedWebhook:
        """One webhook."""
        return ManagedWebhook.model_validate(self._call("GET", f"/{_segment(webhook_id)}"))

    def update(self, webhook_id: str, changes: Mapping[str, Any]) -> ManagedWebhook:
        """Change the given fields of a webhook; the updated webhook."""
        answer = self._call("PATCH", f"/{_segment(webhook_id)}", changes)
        return ManagedWebhook.model_validate(answer)

    def delete(self, webhook_id: str) -> None:
        """Delete a webhook and its delivery history."""
        self._call("DELETE", f"/{_segment(webhook_id)}")

    def test(self, webhook_id: str, event: Mapping[str, Any] | None = None) -> WebhookTestResult:
        """Send a TEST event (or ``{"event", "table", "record", ...}``) now; the result.

        A receiver that fails gives ``success=False`` with its status or the error.
        """
        path = f"/{_segment(webhook_id)}/test"
        try:
            answer = self._call("POST", path, event or {})
        except FluxbaseAPIError as error:
            if error.code != "WEBHOOK_TEST_FAILED":
                raise
            answer = error.detail
        return WebhookTestResult.model_validate(answer)

    def get_deliveries(
        self, webhook_id: str, limit: int = 50, offset: int = 0
    ) -> builtins.list[WebhookDelivery]:
        """A webhook's deliveries, newest first."""
        query = urllib.parse.urlencode({"limit": limit, "offset": offset})
        found = self._call("GET", f"/{_segment(webhook_id)}/deliveries?{query}")
        return [WebhookDelivery.model_validate(item) for item in found]

    def redeliver(self, webhook_id: str, delivery_id: str) -> WebhookDelivery:
        """Queue a delivery's event to its webhook again; the new delivery."""
        path = f"/{_segment(webhook_id)}/deliveries/{_segment(delivery_id)}/redeliver"
        return WebhookDelivery.model_validate(self._call("POST", path))

    def _call(self, method: str, path: str, payload: Mapping[str, Any] | None = None) -> Any:
        data = None if payload is None else json.dumps(dict(payload)).encode("utf-8")
        request = urllib.request.Request(self._base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._api_key}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            raise _api_error(error.code, error.read()) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise FluxbaseAPIError(
                0, "UNREACHABLE", f"cannot reach {self._base}: {reason}"
            ) from None
        try:
            return json.loads(body) if body else None
        except ValueError:
            raise FluxbaseAPIError(
                response.status, "INVALID_RESPONSE", "the server's answer is not JSON"
            ) from None


class AsyncWebhooksClient:
    """``AsyncFluxbaseClient(...).webhooks``: :class:`WebhooksClient`'s calls, awaitable."""

    def __init__(self, calls: WebhooksClient) -> None:
        self._calls = calls

    def __repr__(self) -> str:
        return f"<Async{self._calls!r}"[:-1] + ">"

    async def create(self, webhook: Mapping[str, Any]) -> ManagedWebhook:
        """See :meth:`WebhooksClient.create`."""
        return await asyncio.to_thread(self._calls.create, webhook)

    async def list(self) -> builtins.list[ManagedWebhook]:
        """See :meth:`WebhooksClient.list`."""
        return await asyncio.to_thread(self._calls.list)

    async def get(self, webhook_id: str) -> ManagedWebhook:
        """See :meth:`WebhooksClient.get`."""
        return await asyncio.to_thread(self._calls.get, webhook_id)

    async def update(self, webhook_id: str, changes: Mapping[str, Any]) -> ManagedWebhook:
        """See :meth:`WebhooksClient.update`."""
        return await asyncio.to_thread(self._calls.update, webhook_id, changes)

    async def delete(self, webhook_id: str) -> None:
        """See :meth:`WebhooksClient.delete`."""
        await asyncio.to_thread(self._calls.delete, webhook_id)

    async def test(
        self, webhook_id: str, event: Mapping[str, Any] | None = None
    ) -> WebhookTestResult:
        """See :meth:`WebhooksClient.test`."""
        return await asyncio.to_thread(self._calls.test, webhook_id, event)

    async def get_deliveries(
        self, webhook_id: str, limit: int = 50, offset: int = 0
    ) -> builtins.list[WebhookDelivery]:
        """See :meth:`WebhooksClient.get_deliveries`."""
        return await asyncio.to_thread(self._calls.get_deliveries, webhook_id, limit, offset)

    async def redeliver(self, webhook_id: str, delivery_id: str) -> WebhookDelivery:
        """See :meth:`WebhooksClient.redeliver`."""
        return await asyncio.to_thread(self._calls.redeliver, webhook_id, delivery_id)


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _api_error(status: int, body: bytes) -> FluxbaseAPIError:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return FluxbaseAPIError(status, f"HTTP_{status}", f"the server answered {status}")
    errors = data.get("errors")
    return FluxbaseAPIError(
        status,
        str(data.get("code") or f"HTTP_{status}"),
        str(data.get("error") or f"the server answered {status}"),
        errors if isinstance(errors, list) else None,
        data,
    )


def _check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError("url must start with http:// or https://")
    return url


class FluxbaseClient:
    """Client-side helpers named as in the Fluxbase SDK documentation.

    ``FluxbaseClient(url, api_key)`` talks to a management API (``webhooks``); the
    static :meth:`verify_webhook_signature` needs no instance.
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = 30.0) -> None:
        self.url = _check_url(url)
        self.webhooks = WebhooksClient(url, api_key, timeout)

    def __repr__(self) -> str:
        return f"<FluxbaseClient {self.url}>"

    @staticmethod
    def verify_webhook_signature(
        payload: bytes | str | Mapping[str, Any],
        signature: str | None,
        secret: Secrets,
        *,
        tolerance: float | None = DEFAULT_TOLERANCE,
        now: float | None = None,
    ) -> bool:
        """True when ``signature`` is valid for ``payload``, as the Fluxbase docs call it.

        ``signature`` is the ``X-Fluxbase-Signature`` value (``t=…,v1=…``, checked with
        ``tolerance``) or, passed explicitly, a legacy ``X-Webhook-Signature`` hex digest.
        Pass the raw request body: a dict is re-serialised compactly the way the
        Fluxbase server's JSON encoder writes it, which is best effort only (key order
        and number formatting must survive your framework's JSON decoding).
        """
        body = fluxbase_json(payload) if isinstance(payload, Mapping) else payload
        try:
            if signature is not None and "=" not in signature:
                verify_legacy_signature(body, signature, secret)
            else:
                verify_signature(body, signature, secret, tolerance=tolerance, now=now)
        except SignatureError:
            return False
        return True


class AsyncFluxbaseClient:
    """:class:`FluxbaseClient` for async code: ``await client.webhooks.create(...)``.

    Calls run the standard library's HTTP client in a worker thread, so no extra
    dependency is needed.
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = 30.0) -> None:
        self.url = _check_url(url)
        self.webhooks = AsyncWebhooksClient(WebhooksClient(url, api_key, timeout))

    def __repr__(self) -> str:
        return f"<AsyncFluxbaseClient {self.url}>"
