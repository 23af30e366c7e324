"""Captured row changes: building them from application code, and their wire body."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json

__all__ = ["CapturedEvent", "new_event", "wire_body"]

_string = json.encoder.encode_basestring
"""A str as a JSON string, non-ASCII kept (``json.dumps(s, ensure_ascii=False)``)."""
_ascii = json.encoder.encode_basestring_ascii
"""A str as an ASCII JSON string (``json.dumps(s)``)."""
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_EMITTED = ("INSERT", "UPDATE", "DELETE", "TEST")


@dataclass(frozen=True, slots=True)
class CapturedEvent:
    """A row change to deliver; ``record`` and ``old_record`` are JSON text."""

    id: str
    event: str
    schema: str
    table: str
    record: str | None
    old_record: str | None
    occurred_at: float
    """Unix seconds when the row changed (the body's ``timestamp``, stable across retries)."""


def check_identifier(kind: str, name: str) -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise ``ValueError``."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{kind} must be a plain identifier (letters, digits, _), not {name!r}")
    return name


def new_event(
    event: str,
    table: str,
    record: Any,
    old_record: Any,
    schema: str,
    occurred_at: float,
) -> CapturedEvent:
    """A :class:`CapturedEvent` from application values (dicts, pydantic models, ...)."""
    operation = event.upper()
    if operation not in _EMITTED:
        raise ValueError(f"event must be one of {list(_EMITTED)}, not {event!r}")
    return CapturedEvent(
        id=uuid.uuid4().hex,
        event=operation,
        schema=check_identifier("schema", schema),
        table=check_identifier("table", table),
        record=None if record is None else to_json(record).decode("utf-8"),
        old_record=None if old_record is None else to_json(old_record).decode("utf-8"),
        occurred_at=occurred_at,
    )


def wire_body(event: CapturedEvent, webhook_id: str) -> bytes:
    """The JSON body POSTed for ``event``: Fluxbase's fields plus our stable ``id``."""
    timestamp = datetime.fromtimestamp(event.occurred_at, UTC).isoformat(timespec="microseconds")
    return (
        f'{{"event":{_string(event.event)},"table":{_string(event.table)}'
        f',"schema":{_string(event.schema)},"record":{event.record or "null"}'
        f',"old_record":{event.old_record or "null"}'
        f',"timestamp":"{timestamp.replace("+00:00", "Z")}"'
        f',"webhook_id":{_ascii(webhook_id)},"id":{_ascii(event.id)}}}'
    ).encode()
