"""Typed parsing of every payload variant a Fluxbase server (or its docs) produces."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from pydantic import BaseModel, ConfigDict
from typing_extensions import TypedDict

from fluxbase_receiver import (
    DeleteEvent,
    EventFilter,
    InsertEvent,
    InvalidPayload,
    TestEvent,
    UpdateEvent,
    parse_event,
)
from tests.servers import load_vectors


class Order(BaseModel):
    id: int
    status: str
    total: float
    note: str | None = None


def body(**fields: Any) -> bytes:
    base: dict[str, Any] = {"table": "orders", "schema": "public"}
    base.update(fields)
    return json.dumps(base).encode()


@pytest.mark.parametrize("case", load_vectors(), ids=lambda c: c["name"])
def test_every_vector_body_parses(case: dict[str, Any]) -> None:
    event = parse_event(case["body"].encode())
    assert event.event == json.loads(case["body"])["event"]


def test_insert_with_old_record_absent_or_null() -> None:
    for extra in ({}, {"old_record": None}):
        event = parse_event(body(event="INSERT", record={"id": 1}, **extra))
        assert isinstance(event, InsertEvent)
        assert event.record == {"id": 1}
        assert event.old_record is None
        assert event.row == {"id": 1}


def test_delete_go_shape_and_docs_shape_give_the_same_row() -> None:
    go = parse_event(body(event="DELETE", record={"id": 7}))
    docs = parse_event(body(event="DELETE", record={"id": 7}, old_record={"id": 7}))
    only_old = parse_event(body(event="DELETE", record=None, old_record={"id": 7}))
    for event in (go, docs, only_old):
        assert isinstance(event, DeleteEvent)
        assert event.row == {"id": 7}


def test_delete_without_any_row_is_invalid() -> None:
    with pytest.raises(InvalidPayload, match="record or old_record"):
        parse_event(body(event="DELETE"))


def test_test_event_from_the_server_test_endpoint() -> None:
    event = parse_event(
        b'{"event":"TEST","table":"test","schema":"public","record":{"test":true},"timestamp":"2025-11-02T10:30:03Z"}'
    )
    assert isinstance(event, TestEvent)
    assert event.record == {"test": True}
    assert event.qualified_table == "public.test"


def test_go_timestamps_with_nanoseconds_and_offsets() -> None:
    event = parse_event(
        body(event="INSERT", record={}, timestamp="2025-11-02T10:30:01.123456789+05:30")
    )
    assert event.timestamp == datetime(
        2025, 11, 2, 10, 30, 1, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))
    )
    assert (
        parse_event(body(event="INSERT", record={}, timestamp="2025-11-02T10:30:01Z")).timestamp
        is not None
    )


def test_missing_optional_fields_and_unknown_extra_fields_are_kept() -> None:
    raw = b'{"event":"UPDATE","table":"t","record":{"a":1},"region":"eu","attempt":{"n":2}}'
    event = parse_event(raw)
    assert event.webhook_id is None and event.timestamp is None and event.id is None
    assert event.schema_name == "public"
    assert event.model_extra == {"region": "eu", "attempt": {"n": 2}}
    again = json.loads(event.model_dump_json())
    assert again["region"] == "eu" and again["schema"] == "public"


def test_serialisation_uses_the_wire_names_and_round_trips() -> None:
    for case in load_vectors():
        event = parse_event(case["body"].encode())
        dumped = event.model_dump_json()
        assert '"schema"' in dumped and "schema_name" not in dumped
        assert parse_event(dumped) == event


def test_generic_records_validate_as_the_model() -> None:
    raw = body(
        event="UPDATE",
        record={"id": 42, "status": "shipped", "total": 19.99},
        old_record={"id": 42, "status": "paid", "total": 19.99},
    )
    event = parse_event(raw, Order)
    assert isinstance(event, UpdateEvent)
    assert event.record == Order(id=42, status="shipped", total=19.99)
    assert isinstance(event.old_record, Order)
    assert event.changes == {"status": ("paid", "shipped")}
    assert UpdateEvent[Order].model_validate_json(raw).record.status == "shipped"


def test_generic_records_accept_dataclasses_and_typeddicts() -> None:
    @dataclass
    class Item:
        id: int

    class ItemDict(TypedDict):
        id: int

    raw = body(event="INSERT", record={"id": "5"})
    assert parse_event(raw, Item).record == Item(id=5)
    assert parse_event(raw, ItemDict).record == {"id": 5}


def test_record_not_matching_the_model_is_invalid_payload() -> None:
    with pytest.raises(InvalidPayload) as caught:
        parse_event(body(event="INSERT", record={"id": "not a number"}), Order)
    assert "record" in str(caught.value)
    assert "not a number" not in str(caught.value)  # inputs are never echoed


def test_test_events_parse_even_when_a_model_is_given() -> None:
    event = parse_event(b'{"event":"TEST","table":"test","record":{"test":true}}', Order)
    assert isinstance(event, TestEvent)


def test_changes_reports_added_removed_and_changed_columns() -> None:
    event = parse_event(
        body(
            event="UPDATE", record={"a": 1, "b": 2, "c": None}, old_record={"a": 1, "b": 3, "d": 4}
        )
    )
    assert isinstance(event, UpdateEvent)
    assert event.changes == {"b": (3, 2), "c": (None, None), "d": (4, None)}
    no_old = parse_event(body(event="UPDATE", record={"a": 1}))
    assert isinstance(no_old, UpdateEvent)
    assert no_old.changes == {"a": (None, 1)}


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "not a valid Fluxbase event"),
        (b"null", "not a valid Fluxbase event"),
        (
            b'{"event":"TRUNCATE","table":"t","record":{}}',
            "does not match any of the expected tags",
        ),
        (b'{"event":"insert","table":"t","record":{}}', "does not match"),
        (b'{"table":"t","record":{}}', "event"),
        (b'{"event":"INSERT","record":{}}', "table"),
        (b'{"event":"INSERT","table":"t"}', "record"),
        (b'{"event":"INSERT","table":"t","record":[1]}', "record"),
        (b'{"event":"INSERT","table":"t","record":{},"timestamp":"yesterday"}', "timestamp"),
    ],
)
def test_invalid_payloads(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidPayload, match=message):
        parse_event(raw)


def test_parse_accepts_str_and_mapping() -> None:
    payload = {"event": "INSERT", "table": "t", "record": {"x": "é"}}
    assert parse_event(json.dumps(payload)) == parse_event(payload)
    assert parse_event(bytearray(json.dumps(payload).encode())).record == {"x": "é"}


class Line(BaseModel):
    sku: str
    price: Decimal


class Invoice(BaseModel):
    id: int
    total: Decimal
    rate: float
    lines: list[Line] = []
    meta: dict[str, Any] = {}


def numeric_body(record: str) -> bytes:
    """An INSERT whose record is the raw JSON text ``record`` (numbers written as given)."""
    return b'{"event":"INSERT","table":"invoices","record":' + record.encode() + b"}"


@pytest.mark.parametrize(
    "literal",
    [
        "12345678901234567890.123456789012",
        "99999999999999999.99",
        "0.10",
        "1.50",
        "-0.000000000000000000000000001",
        "1e400",
        "3.00E-2",
        "123456789012345678901234567890",
    ],
)
def test_decimal_fields_get_every_digit(literal: str) -> None:
    raw = numeric_body(
        f'{{"id":1,"total":{literal},"rate":{literal},"lines":[{{"sku":"a","price":{literal}}}]}}'
    )
    record = parse_event(raw, Invoice).record
    assert isinstance(record, Invoice)
    assert record.total.as_tuple() == Decimal(literal).as_tuple()  # digit for digit
    assert record.lines[0].price.as_tuple() == Decimal(literal).as_tuple()
    assert record.rate == float(literal)  # float fields still get floats


def test_decimal_fields_of_dataclasses_and_typeddicts_are_exact() -> None:
    @dataclass
    class Price:
        amount: Decimal

    class PriceDict(TypedDict):
        amount: Decimal

    raw = numeric_body('{"amount":99999999999999999.99}')
    assert parse_event(raw, Price).record == Price(Decimal("99999999999999999.99"))
    assert parse_event(raw, PriceDict).record == {"amount": Decimal("99999999999999999.99")}


def test_dict_records_keep_integers_exact_and_floats_by_default() -> None:
    raw = numeric_body('{"big":123456789012345678901234567890,"price":12.50,"meta":{"r":0.1}}')
    plain = parse_event(raw).row
    assert plain == {"big": 123456789012345678901234567890, "price": 12.5, "meta": {"r": 0.1}}
    assert type(plain["price"]) is float
    exact = parse_event(raw, decimals=True).row
    assert exact["big"] == 123456789012345678901234567890 and type(exact["big"]) is int
    assert str(exact["price"]) == "12.50"
    assert exact["meta"] == {"r": Decimal("0.1")}


def test_untyped_values_inside_a_decimal_model_are_decimal() -> None:
    raw = numeric_body('{"id":1,"total":1,"rate":2,"meta":{"ratio":0.25,"n":3}}')
    record = parse_event(raw, Invoice).record
    assert isinstance(record, Invoice)
    assert record.meta == {"ratio": Decimal("0.25"), "n": 3}


def test_strict_models_with_decimal_fields_accept_what_json_accepts() -> None:
    class Strict(BaseModel):
        model_config = ConfigDict(strict=True)
        at: datetime
        key: UUID
        amount: Decimal
        count: int

    record = '{"at":"2025-11-02T10:30:00Z","key":"%s","amount":1.50,"count":%s}'
    key = "550e8400-e29b-41d4-a716-446655440000"
    parsed = parse_event(numeric_body(record % (key, "3")), Strict).record
    assert isinstance(parsed, Strict)
    assert (parsed.at.year, str(parsed.key), str(parsed.amount), parsed.count) == (
        2025,
        key,
        "1.50",
        3,
    )
    with pytest.raises(InvalidPayload, match=r"record\.count"):
        parse_event(numeric_body(record % (key, '"3"')), Strict)  # strict: no str for an int


def test_models_without_decimal_fields_are_parsed_as_before() -> None:
    raw = body(event="INSERT", record={"id": 1, "status": "new", "total": 0.1})
    record = parse_event(raw, Order).record
    assert isinstance(record, Order) and record.total == 0.1


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"\xff\xfe", b"\xef\xbb\xbf{}", b"[" * 100_000 + b"]" * 100_000, b"NaN!"],
)
def test_invalid_json_on_the_exact_path(raw: bytes) -> None:
    with pytest.raises(InvalidPayload, match="not valid JSON"):
        parse_event(raw, decimals=True)
    with pytest.raises(InvalidPayload, match="not valid JSON"):
        parse_event(raw, Invoice)


def test_exact_path_validates_like_the_plain_one() -> None:
    with pytest.raises(InvalidPayload, match=r"record\.total"):
        parse_event(numeric_body('{"id":1,"total":"lots","rate":1}'), Invoice)
    with pytest.raises(InvalidPayload, match="not a valid Fluxbase event"):
        parse_event(b'{"event":"INSERT","record":{}}', decimals=True)
    payload = json.loads(body(event="UPDATE", record={"x": 1.5}, old_record={"x": 2}))
    assert parse_event(payload, decimals=True) == parse_event(json.dumps(payload))


@pytest.mark.parametrize(
    "pattern, operations, matching, not_matching",
    [
        ("*", (), ["public.a.INSERT", "auth.b.DELETE"], ["public.a.TEST"]),
        ("users", ("insert",), ["public.users.INSERT", "auth.users.INSERT"], ["a.users.UPDATE"]),
        ("auth.users", (), ["auth.users.UPDATE"], ["public.users.UPDATE", "auth.other.UPDATE"]),
        ("auth.*", ("DELETE",), ["auth.x.DELETE"], ["public.x.DELETE", "auth.x.INSERT"]),
        ("*", ("TEST",), ["public.test.TEST"], ["public.a.INSERT"]),
    ],
)
def test_event_filter_matches_tables_and_operations(
    pattern: str, operations: tuple[str, ...], matching: list[str], not_matching: list[str]
) -> None:
    selected = EventFilter(pattern, *operations)
    for route in matching:
        assert selected.matches(*route.split("."))
    for route in not_matching:
        assert not selected.matches(*route.split("."))


def test_event_filter_accepts_events_and_refuses_bad_patterns() -> None:
    event = parse_event(body(event="INSERT", table="orders", schema="shop", record={}))
    assert EventFilter("shop.orders").accepts(event)
    assert not EventFilter("orders", "UPDATE").accepts(event)
    test = parse_event(b'{"event":"TEST","table":"test","record":{"test":true}}')
    assert not EventFilter().accepts(test) and EventFilter("*", "TEST").accepts(test)
    assert repr(EventFilter("u", "UPDATE", "INSERT")) == "EventFilter('u', 'INSERT', 'UPDATE')"
    with pytest.raises(ValueError, match="unknown operation"):
        EventFilter("users", "TRUNCATE")
    for bad in ("", "a.b.c"):
        with pytest.raises(ValueError, match="table must be"):
            EventFilter(bad)
