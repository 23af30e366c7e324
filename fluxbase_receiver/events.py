"""Typed Fluxbase events: a pydantic discriminated union on the ``event`` field.

Every event class is generic over its record type: ``UpdateEvent[Order]`` validates
``record`` and ``old_record`` as ``Order``; the default is ``dict[str, Any]``.

Numbers are read exactly where a type asks for it. Integers of any size stay ``int``. A
``Decimal`` field of a record model gets every digit of the JSON number (PostgreSQL
``numeric``): a model with a ``Decimal`` field anywhere is read with every non-integer
number as a ``Decimal`` (``float`` fields still get floats, untyped values inside it get
``Decimal``), and accepts what JSON validation accepts, strict models included. In untyped
(dict) records non-integer numbers are ``float`` by default; ``parse_event(...,
decimals=True)`` (``Receiver(..., decimals=True)``) makes them ``Decimal``. Everything
else is parsed by pydantic-core straight from the bytes.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Collection, Mapping
from datetime import datetime
from decimal import Decimal
from functools import reduce
from typing import Annotated, Any, Generic, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from typing_extensions import TypeVar

from fluxbase_receiver.errors import InvalidPayload

__all__ = [
    "OPERATIONS",
    "DeleteEvent",
    "EventFilter",
    "InsertEvent",
    "Operation",
    "TestEvent",
    "UpdateEvent",
    "WebhookEvent",
    "parse_event",
]

Operation: TypeAlias = Literal["INSERT", "UPDATE", "DELETE", "TEST"]
OPERATIONS: tuple[str, ...] = ("INSERT", "UPDATE", "DELETE", "TEST")

RecordT = TypeVar("RecordT", default=dict[str, Any])

_DEFAULT_OPERATIONS = frozenset(("INSERT", "UPDATE", "DELETE"))


class EventFilter:
    """Which events a handler or route takes: a table pattern and operations.

    ``table`` is ``"*"`` (any), ``"users"`` (any schema), ``"auth.users"`` or ``"auth.*"``.
    ``operations`` default to INSERT, UPDATE and DELETE: TEST events pass only a filter
    that names ``"TEST"``. Raises ``ValueError`` for an unknown operation or a bad pattern.
    """

    __slots__ = ("operations", "table")

    def __init__(self, table: str = "*", *operations: str) -> None:
        wanted = frozenset(op.upper() for op in operations) or _DEFAULT_OPERATIONS
        unknown = wanted.difference(OPERATIONS)
        if unknown:
            raise ValueError(f"unknown operation(s) {sorted(unknown)}; use {list(OPERATIONS)}")
        if not table or table.count(".") > 1:
            raise ValueError(
                f"table must be '*', 'name', 'schema.name' or 'schema.*', not {table!r}"
            )
        self.table = table
        self.operations = wanted

    def __repr__(self) -> str:
        return f"EventFilter({self.table!r}, {', '.join(map(repr, sorted(self.operations)))})"

    def matches(self, schema: str, table: str, operation: str) -> bool:
        """True when an ``operation`` on ``schema.table`` passes the filter."""
        if operation not in self.operations:
            return False
        if self.table == "*":
            return True
        wanted_schema, dot, wanted_table = self.table.rpartition(".")
        if not dot:
            return wanted_table == table
        return wanted_schema == schema and wanted_table in ("*", table)

    def accepts(self, event: WebhookEvent) -> bool:
        """True when ``event`` passes the filter."""
        return self.matches(event.schema_name, event.table, event.event)


class _Event(BaseModel):
    """Fields every Fluxbase event carries. Unknown fields are kept in ``model_extra``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, serialize_by_alias=True)

    table: str
    schema_name: str = Field(default="public", alias="schema")
    timestamp: datetime | None = None
    webhook_id: str | None = None
    id: str | None = None
    """Stable event id (sent by this package's sender; absent from a Fluxbase server)."""

    @property
    def qualified_table(self) -> str:
        """``"<schema>.<table>"``, e.g. ``"public.users"``."""
        return f"{self.schema_name}.{self.table}"


class InsertEvent(_Event, Generic[RecordT]):
    """A row was inserted: ``record`` is the new row."""

    event: Literal["INSERT"]
    record: RecordT
    old_record: RecordT | None = None

    @property
    def row(self) -> RecordT:
        """The row the event is about: the inserted one."""
        return self.record


class UpdateEvent(_Event, Generic[RecordT]):
    """A row was updated: ``record`` is the new row, ``old_record`` the row before."""

    event: Literal["UPDATE"]
    record: RecordT
    old_record: RecordT | None = None

    @property
    def row(self) -> RecordT:
        """The row the event is about: the updated one."""
        return self.record

    @property
    def changes(self) -> dict[str, tuple[Any, Any]]:
        """Columns whose values differ, as ``{column: (old, new)}``.

        Columns only in the new row count as changed from ``None``; without
        ``old_record`` every column of the new row is reported.
        """
        new = _as_dict(self.record)
        old = _as_dict(self.old_record) if self.old_record is not None else {}
        changed = {
            column: (old.get(column), value)
            for column, value in new.items()
            if column not in old or old[column] != value
        }
        changed.update((c, (v, None)) for c, v in old.items() if c not in new)
        return changed


class DeleteEvent(_Event, Generic[RecordT]):
    """A row was deleted.

    A Fluxbase server puts the deleted row in ``record`` and may omit ``old_record``;
    the documentation has both equal. ``row`` gives the deleted row either way.
    """

    event: Literal["DELETE"]
    record: RecordT | None = None
    old_record: RecordT | None = None

    @model_validator(mode="after")
    def _has_a_row(self) -> DeleteEvent[RecordT]:
        if self.record is None and self.old_record is None:
            raise ValueError("a DELETE event needs record or old_record")
        return self

    @property
    def row(self) -> RecordT:
        """The deleted row."""
        row = self.old_record if self.old_record is not None else self.record
        assert row is not None  # guaranteed by validation
        return row


class TestEvent(_Event):
    """Sent by the server's "test webhook" endpoint (table ``test``, record ``{"test": true}``)."""

    __test__ = False  # not a pytest test class

    event: Literal["TEST"]
    record: dict[str, Any] = Field(default_factory=dict)
    old_record: dict[str, Any] | None = None

    @property
    def row(self) -> dict[str, Any]:
        """The test record."""
        return self.record


WebhookEvent: TypeAlias = Annotated[
    InsertEvent[Any] | UpdateEvent[Any] | DeleteEvent[Any] | TestEvent,
    Field(discriminator="event"),
]
"""Any Fluxbase event; ``event.event`` tells which."""


def _as_dict(record: Any) -> dict[str, Any]:
    if isinstance(record, BaseModel):
        return record.model_dump()
    return dict(record)


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}
_NUMBERS: dict[Any, tuple[bool, bool]] = {}


def event_type(model: type[Any] | None = None, operations: Collection[str] = OPERATIONS) -> Any:
    """The event type for records ``model`` (``None``: plain dicts) and ``operations``: one
    class, or their union discriminated on ``event``."""
    record: Any = dict[str, Any] if model is None else model
    classes: dict[str, Any] = {
        "INSERT": InsertEvent[record],
        "UPDATE": UpdateEvent[record],
        "DELETE": DeleteEvent[record],
        "TEST": TestEvent,
    }
    members = [cls for operation, cls in classes.items() if operation in operations]
    if len(members) == 1:
        return members[0]
    return Annotated[reduce(operator.or_, members), Field(discriminator="event")]


def event_adapter(model: type[Any] | None = None) -> TypeAdapter[Any]:
    """The cached validator for events whose records are ``model`` (``None``: plain dicts)."""
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        adapter = _ADAPTERS[model] = TypeAdapter(event_type(model))
    return adapter


def _numbers(model: type[Any]) -> tuple[bool, bool]:
    """Whether ``model`` has a ``Decimal`` field anywhere, and whether anything in it is
    strict (cached per model)."""
    found = _NUMBERS.get(model)
    if found is None:
        schema = event_adapter(model).core_schema
        found = _NUMBERS[model] = (_has(schema, "type", "decimal"), _has(schema, "strict", True))
    return found


def _has(schema: Any, key: str, value: object) -> bool:
    """True when a core schema (or any schema nested in it) has ``key`` set to ``value``."""
    if isinstance(schema, dict):
        return schema.get(key) == value or any(_has(v, key, value) for v in schema.values())
    if isinstance(schema, (list, tuple)):
        return any(_has(item, key, value) for item in schema)
    return False


def describe_validation_error(error: ValidationError, limit: int = 3) -> str:
    """A short, input-free description of a validation error (safe to send back)."""
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:limit]:
        location = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{location}: {item['msg']}")
    more = error.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def parse_event(
    body: bytes | bytearray | str | Mapping[str, Any],
    model: type[Any] | None = None,
    *,
    decimals: bool = False,
) -> WebhookEvent:
    """Parse a Fluxbase event from raw JSON (bytes or str) or an already-decoded mapping.

    ``model`` types the records (a pydantic model, dataclass or TypedDict). JSON is parsed
    directly by pydantic-core, except when numbers must stay exact: ``decimals=True``, or a
    ``model`` with a ``Decimal`` field (see the module docs). Raises :class:`InvalidPayload`.
    """
    adapter = _ADAPTERS.get(model) or event_adapter(model)
    try:
        if not isinstance(body, (bytes, bytearray, str)):
            event: WebhookEvent = adapter.validate_python(body)
        elif decimals or (model is not None and _numbers(model)[0]):
            if model is not None and _numbers(model)[1]:
                adapter.validate_json(body)  # a strict model: JSON's rules decide what passes
            event = adapter.validate_python(_exact_json(body), strict=False)
        else:
            event = adapter.validator.validate_json(body)  # TypeAdapter.validate_json, unwrapped
    except ValidationError as error:
        if error.errors()[0]["type"] == "json_invalid":
            raise InvalidPayload("body is not valid JSON") from None
        raise InvalidPayload(
            f"not a valid Fluxbase event: {describe_validation_error(error)}"
        ) from None
    return event


def _exact_json(body: bytes | bytearray | str) -> Any:
    """``body`` decoded with every non-integer number as an exact ``Decimal``."""
    try:
        text = body if isinstance(body, str) else body.decode("utf-8")
        return json.loads(text, parse_float=Decimal)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deep, huge integer
        raise InvalidPayload("body is not valid JSON") from None
