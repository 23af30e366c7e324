"""``FluxbaseClient``: the calls of the Fluxbase SDK that this package mirrors.

``FluxbaseClient.verify_webhook_signature`` checks a signature (static, no server).
``FluxbaseClient(url, api_key).webhooks`` manages webhooks over the HTTP management API
(``fluxbase_receiver.sender.api``) with the standard library's HTTP client::

    client = FluxbaseClient("https://sender.example.com", api_key=SERVICE_KEY)
    hook = client.webhooks.create({"name": "orders", "url": "https://...",
                                   "events": [{"table": "orders"}]})
    client.webhooks.test(hook["id"])
    client.webhooks.get_deliveries(hook["id"], limit=50, offset=0)
"""

from __future__ import annotations

import builtins
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from fluxbase_receiver.errors import SignatureError, WebhookError
from fluxbase_receiver.signature import (
    DEFAULT_TOLERANCE,
    Secrets,
    verify_legacy_signature,
    verify_signature,
)

__all__ = ["FluxbaseAPIError", "FluxbaseClient", "WebhooksClient"]


def fluxbase_json(payload: Mapping[str, Any]) -> bytes:
    """Compact JSON as a Fluxbase server's Go encoder writes it (``<``, ``>``, ``&`` escaped)."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode("utf-8")


class FluxbaseAPIError(WebhookError):
    """The management API refused a call, or could not be reached (``status`` 0).

    ``code`` and ``str(error)`` come from the server's answer; ``errors`` holds the
    field messages of a refused webhook (422).
    """

    def __init__(
        self, status: int, code: str, message: str, errors: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.errors = errors or []


class WebhooksClient:
    """``client.webhooks``: the Fluxbase SDK's webhook calls, over HTTP. Returns JSON."""

    def __init__(self, url: str, api_key: str, timeout: float) -> None:
        self._base = url.rstrip("/") + "/api/v1/webhooks"
        self._api_key = api_key
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"<WebhooksClient {self._base}>"

    def create(self, webhook: Mapping[str, Any]) -> dict[str, Any]:
        """Create a webhook (the answer holds ``secret`` only when the server generated it)."""
        created: dict[str, Any] = self._call("POST", "", webhook)
        return created

    def list(self) -> list[dict[str, Any]]:
        """Every webhook."""
        found: list[dict[str, Any]] = self._call("GET", "")
        return found

    def get(self, webhook_id: str) -> dict[str, Any]:
        """One webhook."""
        found: dict[str, Any] = self._call("GET", f"/{_segment(webhook_id)}")
        return found

    def update(self, webhook_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change the given fields of a webhook."""
        updated: dict[str, Any] = self._call("PATCH", f"/{_segment(webhook_id)}", changes)
        return updated

    def delete(self, webhook_id: str) -> None:
        """Delete a webhook and its delivery history."""
        self._call("DELETE", f"/{_segment(webhook_id)}")

    def test(self, webhook_id: str, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send a TEST event (or ``{"event", "table", "record", ...}``) now; the result."""
        result: dict[str, Any] = self._call("POST", f"/{_segment(webhook_id)}/test", event or {})
        return result

    def get_deliveries(
        self, webhook_id: str, limit: int = 50, offset: int = 0
    ) -> builtins.list[dict[str, Any]]:
        """A webhook's deliveries, newest first."""
        query = urllib.parse.urlencode({"limit": limit, "offset": offset})
        found: builtins.list[dict[str, Any]] = self._call(
            "GET", f"/{_segment(webhook_id)}/deliveries?{query}"
        )
        return found

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
                0, "unreachable", f"cannot reach {self._base}: {reason}"
            ) from None
        return json.loads(body) if body else None


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _api_error(status: int, body: bytes) -> FluxbaseAPIError:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return FluxbaseAPIError(status, "http_error", f"the server answered {status}")
    return FluxbaseAPIError(
        status,
        str(data.get("error", "http_error")),
        str(data.get("message", f"the server answered {status}")),
        data.get("errors") if isinstance(data.get("errors"), list) else None,
    )


class FluxbaseClient:
    """Client-side helpers named as in the Fluxbase SDK documentation.

    ``FluxbaseClient(url, api_key)`` talks to a management API (``webhooks``); the
    static :meth:`verify_webhook_signature` needs no instance.
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        self.url = url
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
