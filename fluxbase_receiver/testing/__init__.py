"""Fake, correctly signed Fluxbase events for tests and local development.

One implementation of event building and signing, shared by the pytest plugin
(:mod:`fluxbase_receiver.testing.plugin`), the Hypothesis strategies
(:mod:`fluxbase_receiver.testing.strategies`) and the ``fluxbase-receiver`` command.
:func:`lambda_event` wraps a signed request in the event AWS Lambda receives.
Imports only the standard library and the core.

>>> payload = make_event("UPDATE", table="orders", record={"id": 1, "status": "paid"})
>>> body, headers = sign_event(payload, "my-secret")
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from fluxbase_receiver.client import fluxbase_json
from fluxbase_receiver.signature import SIGNATURE_HEADER, fluxbase_headers
from fluxbase_receiver.testing.lambda_events import LambdaContext, LambdaFormat, lambda_event

__all__ = [
    "OMIT",
    "LambdaContext",
    "LambdaFormat",
    "encode_event",
    "go_timestamp",
    "lambda_event",
    "make_event",
    "random_secret",
    "sign_event",
]


class _Omit:
    """Marker type of :data:`OMIT`."""

    def __repr__(self) -> str:
        return "OMIT"


OMIT: Final = _Omit()
"""Pass as a field's value to :func:`make_event` to leave that field out of the payload."""


def random_secret() -> str:
    """A fresh random webhook secret (URL-safe text, 256 bits)."""
    return secrets.token_urlsafe(32)


def go_timestamp(when: datetime | None = None, *, nanoseconds: int | None = None) -> str:
    """An RFC 3339 timestamp with nine fractional digits, as a Go server writes it.

    ``when`` defaults to now (UTC, nanosecond clock). A timezone-aware ``when`` keeps
    its offset (``+01:00``); ``nanoseconds`` overrides the fractional part.
    """
    if when is None:
        now_ns = time.time_ns()
        when = datetime.fromtimestamp(now_ns // 1_000_000_000, UTC)
        fraction = now_ns % 1_000_000_000
    else:
        when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        fraction = when.microsecond * 1000
    if nanoseconds is not None:
        fraction = nanoseconds
    offset = when.utcoffset() or timedelta(0)
    if offset:
        minutes = int(offset.total_seconds()) // 60
        sign = "+" if minutes >= 0 else "-"
        zone = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    else:
        zone = "Z"
    return f"{when:%Y-%m-%dT%H:%M:%S}.{fraction:09d}{zone}"


def _default_record(table: str, created_at: str, updated_at: str) -> dict[str, Any]:
    record: dict[str, Any] = {"id": str(uuid.uuid4())}
    if table == "users":
        record.update(email="ada@example.com", name="Ada Lovelace")
    else:
        record.update(name=f"example {table}")
    record.update(created_at=created_at, updated_at=updated_at)
    return record


def make_event(
    event: str = "INSERT",
    *,
    table: str | None = None,
    schema: str = "public",
    record: Mapping[str, Any] | _Omit | None = None,
    old_record: Mapping[str, Any] | _Omit | None = None,
    timestamp: str | _Omit | None = None,
    webhook_id: str | _Omit | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Fluxbase event payload with realistic defaults for everything not given.

    Defaults: table ``users`` (``test`` for TEST), schema ``public``, a Go-style
    timestamp with nanoseconds, a random UUID ``webhook_id`` and a plausible row.
    ``old_record`` defaults to ``null`` on INSERT, a copy of the row before the change
    on UPDATE, and is left out on DELETE (the shape a Fluxbase server sends). Pass
    :data:`OMIT` to leave any field out; ``extra`` fields are added as given.
    """
    operation = event.upper()
    table = table if table is not None else ("test" if operation == "TEST" else "users")
    stamp = go_timestamp() if timestamp is None else timestamp
    created = go_timestamp(datetime.now(UTC) - timedelta(days=1))
    if record is None and operation == "TEST":
        record = {"test": True}
    elif record is None:
        record = _default_record(
            table, created, stamp if operation == "UPDATE" and isinstance(stamp, str) else created
        )
    if old_record is None:
        if operation == "UPDATE" and isinstance(record, Mapping):
            old_record = {**record, "updated_at": created} if "updated_at" in record else record
        elif operation in ("DELETE", "TEST"):
            old_record = OMIT
    payload: dict[str, Any] = {
        "event": operation,
        "table": table,
        "schema": schema,
        "record": record,
        "old_record": old_record,
        "timestamp": stamp,
        "webhook_id": str(uuid.uuid4()) if webhook_id is None else webhook_id,
        **extra,
    }
    return {
        key: dict(value) if isinstance(value, Mapping) else value
        for key, value in payload.items()
        if value is not OMIT
    }


def encode_event(payload: Mapping[str, Any] | bytes | str) -> bytes:
    """The body bytes for ``payload``: compact JSON as the Go server writes it.

    Bytes and text are taken as the body already (text is UTF-8 encoded).
    """
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return fluxbase_json(payload)


def sign_event(
    payload: Mapping[str, Any] | bytes | str,
    secret: str | Sequence[str],
    *,
    timestamp: int | None = None,
    skew: float = 0,
    wrong_secret: bool = False,
    legacy_only: bool = False,
    headers: Mapping[str, str] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """``(body, headers)`` for ``payload`` exactly as a Fluxbase server sends them.

    Headers: ``Content-Type``, ``User-Agent: Fluxbase-Webhooks/1.0``,
    ``X-Fluxbase-Signature`` (``t=…,v1=…``, one ``v1`` per secret when ``secret`` is a
    list) and the legacy ``X-Webhook-Signature`` (first secret), then ``headers``.

    ``timestamp`` is the signed unix time (default now), moved by ``skew`` seconds
    (negative: an old signature). ``wrong_secret`` signs with a random other secret;
    ``legacy_only`` sends only the legacy header.
    """
    body = encode_event(payload)
    keys: list[str] = [secret] if isinstance(secret, str) else list(secret)
    if not keys:
        raise ValueError("at least one webhook secret is required")
    if wrong_secret:
        keys = [random_secret()]
    signed_at = int((time.time() if timestamp is None else timestamp) + skew)
    sent = fluxbase_headers(body, keys, signed_at)
    if legacy_only:
        del sent[SIGNATURE_HEADER]
    sent.update(headers or {})
    return body, sent
