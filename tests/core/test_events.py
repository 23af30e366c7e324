"""Typed parsing of every payload variant a Fluxbase server (or its docs) produces."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict

from fluxbase_receiver import (
    DeleteEvent,
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
