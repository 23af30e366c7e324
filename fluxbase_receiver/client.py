"""``FluxbaseClient``: the calls of the Fluxbase SDK that this package mirrors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fluxbase_receiver.errors import SignatureError
from fluxbase_receiver.signature import (
    DEFAULT_TOLERANCE,
    Secrets,
    verify_legacy_signature,
    verify_signature,
)

__all__ = ["FluxbaseClient"]


def _go_json(payload: Mapping[str, Any]) -> bytes:
    """Compact JSON as Go's ``encoding/json`` writes it (``<``, ``>``, ``&`` escaped)."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode("utf-8")


class FluxbaseClient:
    """Client-side helpers named as in the Fluxbase SDK documentation."""

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
        body = _go_json(payload) if isinstance(payload, Mapping) else payload
        try:
            if signature is not None and "=" not in signature:
                verify_legacy_signature(body, signature, secret)
            else:
                verify_signature(body, signature, secret, tolerance=tolerance, now=now)
        except SignatureError:
            return False
        return True
