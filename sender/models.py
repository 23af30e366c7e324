"""Webhook subscriptions, deliveries and attempts: validated pydantic models.

Bad input raises :class:`WebhookValidationError`, whose ``errors`` name each field
and what is wrong with it. Secrets are :class:`~pydantic.SecretStr`: never shown in
reprs, logs or ``model_dump()`` output.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Literal, TypeAlias
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
)

from fluxbase_receiver.errors import SenderError

__all__ = [
    "Delivery",
    "DeliveryAttempt",
    "DeliveryCounts",
    "DeliveryStatus",
    "EventFilter",
    "NotFound",
    "TestResult",
    "Webhook",
    "WebhookSpec",
    "WebhookValidationError",
    "masked_headers",
]

DeliveryStatus: TypeAlias = Literal["pending", "retrying", "success", "failed"]
AttemptOutcome: TypeAlias = Literal["success", "failed", "refused", "superseded"]

CAPTURED_OPERATIONS = ("INSERT", "UPDATE", "DELETE")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""Control characters refused in header values (horizontal tab is allowed)."""
MASK = "**********"
"""What a write-only value (secret, custom header value) shows instead of itself."""
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_IDENTIFIER = re.compile(r"^(\*|[A-Za-z_][A-Za-z0-9_$]*)$")
FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
        "user-agent",
        "x-fluxbase-signature",
        "x-webhook-signature",
        "x-fluxbase-event-id",
        "x-fluxbase-delivery-attempt",
    }
)
"""Custom header names a webhook may not set: hop-by-hop, framing, and our own."""


def masked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Custom headers with every value replaced by :data:`MASK`: values are write-only.

    This is how headers appear in ``model_dump()`` / JSON, ``repr`` and logs. The
    values themselves stay readable on the model (``webhook.headers``).
    """
    return {name: MASK for name in headers}


class WebhookValidationError(SenderError, ValueError):
    """A webhook subscription was refused; ``errors`` lists ``{"field", "message"}``."""

    code = "invalid_webhook"

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        details = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        super().__init__(f"invalid webhook: {details}")

    @classmethod
    def from_pydantic(cls, error: ValidationError) -> WebhookValidationError:
        """Field messages from a pydantic error, without echoing the input."""
        found = []
        for item in error.errors(include_input=False, include_url=False, include_context=False):
            field = ".".join(str(part) for part in item["loc"]) or "webhook"
            message = item["msg"].removeprefix("Value error, ")
            found.append({"field": field, "message": message})
        return cls(found)


class NotFound(SenderError, LookupError):
    """No webhook or delivery has the given id."""

    code = "not_found"


class EventFilter(BaseModel):
    """Which changes a webhook receives: a table and its operations.

    ``table`` is ``"*"`` (every table), ``"users"`` (that table in any schema),
    ``"auth.users"`` or ``"auth.*"``. ``operations`` are INSERT / UPDATE / DELETE or
    ``"*"`` for all three.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str
    operations: list[str] = Field(default_factory=lambda: ["*"], min_length=1)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) > 2 or not all(_IDENTIFIER.match(part) for part in parts):
            raise ValueError("table must be '*', 'name', 'schema.name' or 'schema.*'")
        if len(parts) == 2 and parts[0] == "*":
            raise ValueError("the schema part of a table cannot be '*'")
        return value

    @field_validator("operations")
    @classmethod
    def _operations(cls, values: list[str]) -> list[str]:
        normalised = []
        for value in values:
            upper = value.strip().upper()
            if upper != "*" and upper not in CAPTURED_OPERATIONS:
                raise ValueError("operations must be INSERT, UPDATE, DELETE or '*'")
            if upper not in normalised:
                normalised.append(upper)
        return normalised

    @property
    def patterns(self) -> tuple[str, str]:
        """``(schema, table)`` with ``"*"`` as the wildcard for either."""
        schema, dot, table = self.table.rpartition(".")
        return (schema if dot else "*", table)

    def expanded_operations(self) -> tuple[str, ...]:
        """The operations, ``"*"`` spelled out."""
        return CAPTURED_OPERATIONS if "*" in self.operations else tuple(self.operations)


class WebhookSpec(BaseModel):
    """The fields a user sets on a webhook (Fluxbase's names and defaults)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    url: str
    secret: SecretStr = Field(default_factory=lambda: SecretStr(secrets.token_urlsafe(32)))
    enabled: bool = True
    events: list[EventFilter] = Field(
        default_factory=lambda: [EventFilter(table="*")], min_length=1
    )
    max_retries: int = Field(default=3, ge=0, le=20)
    timeout_seconds: int | float = Field(default=30, ge=1, le=300)
    retry_backoff_seconds: int | float = Field(default=5, gt=0, le=86_400)
    headers: dict[str, str] = Field(default_factory=dict)
    scope: Literal["user", "global"] = "user"
    """Fluxbase's ownership scope, stored and returned (the sender delivers both alike)."""

    @field_validator("timeout_seconds", "retry_backoff_seconds")
    @classmethod
    def _whole_seconds(cls, value: float) -> int | float:
        """Whole seconds become ``int`` (JSON ``30``, not ``30.0``); fractions stay."""
        return int(value) if float(value).is_integer() else value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if any(ch in value for ch in "\r\n\t ") or len(value) > 2048:
            raise ValueError("url must not contain whitespace and must be at most 2048 chars")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError("url is not a valid URL") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError("url must start with http:// or https://")
        if not parts.hostname:
            raise ValueError("url must have a host")
        if parts.username or parts.password:
            raise ValueError("url must not carry credentials; use a custom header")
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("secret must not be empty")
        return value

    @field_validator("headers", mode="before")
    @classmethod
    def _header_values(cls, headers: Any) -> Any:
        """Refuse control characters (tab aside) before whitespace stripping could hide them."""
        if isinstance(headers, Mapping):
            for name, value in headers.items():
                if isinstance(value, str) and _CONTROL.search(value):
                    raise ValueError(
                        f"header {name!r} value must not contain a control character"
                        " (CR, LF, NUL, vertical tab, form feed, ...)"
                    )
        return headers

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        seen: set[str] = set()
        for name in headers:
            lowered = name.lower()
            if not _TOKEN.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP token")
            if lowered in FORBIDDEN_HEADERS:
                raise ValueError(f"header {name!r} cannot be set on a webhook")
            if lowered in seen:
                raise ValueError(f"header {name!r} is given twice")
            seen.add(lowered)
        return headers

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> WebhookSpec:
        """Validate ``data``; raise :class:`WebhookValidationError` with field messages."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as error:
            raise WebhookValidationError.from_pydantic(error) from None

    @field_serializer("headers")
    def _masked_headers(self, headers: dict[str, str]) -> dict[str, str]:
        return masked_headers(headers)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, masked_headers(value) if name == "headers" else value

    def fields(self) -> dict[str, Any]:
        """The spec as plain values, secret and header values included (storage, updates)."""
        data = self.model_dump()
        data["secret"] = self.secret.get_secret_value()
        data["headers"] = dict(self.headers)
        return data


class Webhook(WebhookSpec):
    """A stored webhook subscription."""

    id: str
    created_at: datetime
    updated_at: datetime
    disabled_reason: str | None = None
    """Why the sender disabled it (410 Gone, failing too long); ``None`` otherwise."""


class Delivery(BaseModel):
    """One event to one webhook, and where its delivery stands."""

    id: str
    webhook_id: str
    event_id: str
    event: str
    table: str
    schema_name: str = Field(alias="schema")
    status: DeliveryStatus
    attempts: int
    response_status: int | None
    response_body: str | None
    error: str | None
    created_at: datetime
    delivered_at: datetime | None
    next_attempt_at: datetime | None
    payload: dict[str, Any] | None = None
    """The body sent (or to be sent) for this delivery, as JSON."""

    model_config = ConfigDict(populate_by_name=True)


class DeliveryAttempt(BaseModel):
    """One HTTP attempt of a delivery."""

    id: int
    delivery_id: str
    attempt: int
    outcome: AttemptOutcome
    response_status: int | None
    response_body: str | None
    error: str | None
    duration_ms: float
    started_at: datetime


class TestResult(BaseModel):
    """What ``sender.webhooks.test`` got back."""

    __test__ = False  # not a pytest test class

    success: bool
    status_code: int | None
    response_body: str | None
    error: str | None
    delivery_id: str


class DeliveryCounts(BaseModel):
    """What one delivery pass did."""

    attempted: int = 0
    succeeded: int = 0
    retrying: int = 0
    failed: int = 0
