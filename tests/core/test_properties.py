"""Property tests of the core: signing, tampering, garbage input, event round trips."""

from __future__ import annotations

import json
import string
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from fluxbase_receiver import (
    InvalidSignature,
    MalformedSignature,
    Receiver,
    parse_event,
    parse_signature_header,
    sign_payload,
    verify_signature,
)
from fluxbase_receiver.testing import sign_event
from fluxbase_receiver.testing import strategies as fst
from fluxbase_receiver.testing.strategies import SignedRequest

SECRET = "property-secret"
TIMESTAMPS = st.integers(0, 10**12)

EVENT_FIELDS = {"event", "table", "schema", "record", "old_record", "timestamp", "webhook_id"}


@given(body=st.binary(max_size=2048), secret=fst.secrets(), timestamp=TIMESTAMPS)
def test_sign_then_verify_round_trips(body: bytes, secret: str, timestamp: int) -> None:
    verify_signature(body, sign_payload(body, secret, timestamp), secret, now=timestamp)


@given(body=st.binary(max_size=512), secrets=st.lists(fst.secrets(), min_size=1, max_size=4))
def test_any_of_several_signatures_passes(body: bytes, secrets: list[str]) -> None:
    header = sign_payload(body, secrets, 1_700_000_000)
    for secret in secrets:
        verify_signature(body, header, secret, now=1_700_000_000)


@given(body=st.binary(min_size=1, max_size=512), data=st.data())
def test_any_single_byte_change_to_the_body_is_refused(body: bytes, data: st.DataObject) -> None:
    header = sign_payload(body, SECRET, 1_700_000_000)
    index = data.draw(st.integers(0, len(body) - 1))
    replacement = data.draw(st.integers(0, 255).filter(lambda b: b != body[index]))
    changed = body[:index] + bytes([replacement]) + body[index + 1 :]
    with pytest.raises(InvalidSignature):
        verify_signature(changed, header, SECRET, now=1_700_000_000)


@given(body=st.binary(max_size=256), timestamp=TIMESTAMPS, data=st.data())
def test_any_single_digit_change_to_the_timestamp_is_refused(
    body: bytes, timestamp: int, data: st.DataObject
) -> None:
    digits = sign_payload(body, SECRET, timestamp).split(",")[0].removeprefix("t=")
    index = data.draw(st.integers(0, len(digits) - 1))
    replacement = data.draw(st.sampled_from(string.digits).filter(lambda d: d != digits[index]))
    forged_t = digits[:index] + replacement + digits[index + 1 :]
    signature = sign_payload(body, SECRET, timestamp).split(",")[1]
    with pytest.raises(InvalidSignature):
        verify_signature(body, f"t={forged_t},{signature}", SECRET, tolerance=None)


@given(body=st.binary(max_size=256), data=st.data())
def test_any_single_character_change_to_the_signature_is_refused(
    body: bytes, data: st.DataObject
) -> None:
    header = sign_payload(body, SECRET, 1_700_000_000)
    t_part, v1 = header.split(",v1=")
    index = data.draw(st.integers(0, len(v1) - 1))
    other = data.draw(st.characters().filter(lambda c: c.lower() != v1[index]))
    forged = f"{t_part},v1={v1[:index]}{other}{v1[index + 1 :]}"
    with pytest.raises((InvalidSignature, MalformedSignature)):
        verify_signature(body, forged, SECRET, now=1_700_000_000)


@given(st.text())
def test_parse_signature_header_raises_only_malformed_signature(text: str) -> None:
    try:
        timestamp, signatures = parse_signature_header(text)
    except MalformedSignature:
        return
    assert timestamp.isdigit()
    assert signatures


HEADER_NAMES = st.sampled_from(
    ["Content-Type", "X-Fluxbase-Signature", "X-Webhook-Signature", "Content-Length"]
) | st.text(min_size=1, max_size=20)
HEADER_VALUES = (
    st.text(max_size=80)
    | st.just("application/json")
    | st.builds(lambda t, v: f"t={t},v1={v}", st.integers(0, 10**12), st.text(max_size=70))
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=1024) | fst.events(as_bytes=True),
    headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=5),
    method=st.sampled_from(["POST", "GET", "PUT", "post"]) | st.text(max_size=8),
    legacy=st.booleans(),
)
def test_garbage_never_raises_and_never_passes(
    body: bytes, headers: dict[str, str], method: str, legacy: bool
) -> None:
    receiver = Receiver(SECRET, allow_legacy_signature=legacy)
    ran: list[Any] = []
    receiver.on("*", "INSERT", "UPDATE", "DELETE", "TEST")(ran.append)
    outcome = receiver.handle(body, headers, method)
    assert not outcome.ok
    assert outcome.status in (400, 401, 405, 413, 415)
    assert ran == []
    assert json.loads(outcome.body_bytes())["error"] == outcome.body["error"]


@given(fst.signed_requests(), st.booleans())
def test_every_signed_request_is_accepted_and_deduplicated_by_its_id(
    request: SignedRequest, with_id: bool
) -> None:
    receiver = Receiver(request.secret, clock=lambda: request.timestamp)
    ran: list[Any] = []
    receiver.on("*", "INSERT", "UPDATE", "DELETE", "TEST")(ran.append)
    headers = {**request.headers, "X-Fluxbase-Event-Id": "evt-1"} if with_id else request.headers
    first = receiver.handle(request.body, headers)
    again = receiver.handle(request.body, headers)
    assert (first.status, again.status) == (200, 200)
    kind = json.loads(request.body)["event"]
    # Without an id a repeat may be a real new change: it runs again (at-least-once).
    once = with_id and kind != "TEST"
    assert [event.event for event in ran] == [kind] * (1 if once else 2)
    assert again.body.get("duplicate") is (True if once else None)


@given(fst.signed_requests(secret=st.just(SECRET)), st.integers(301, 10**6), st.booleans())
def test_signatures_outside_the_tolerance_are_refused(
    request: SignedRequest, skew: int, future: bool
) -> None:
    now = request.timestamp + (-skew if future else skew)
    receiver = Receiver(SECRET, clock=lambda: now)
    outcome = receiver.handle(request.body, request.headers)
    assert (outcome.status, outcome.body["error"]) == (401, "timestamp_outside_tolerance")


@given(fst.events())
def test_events_round_trip_through_parse_event_and_model_dump_json(payload: dict[str, Any]) -> None:
    event = parse_event(json.dumps(payload).encode())
    assert event.event == payload["event"]
    assert event.table == payload["table"]
    assert event.schema_name == payload["schema"]
    assert event.record == payload.get("record", event.record)
    assert event.old_record == payload.get("old_record")
    assert event.webhook_id == payload.get("webhook_id")
    for key in payload.keys() - EVENT_FIELDS:
        assert event.model_extra is not None
        assert event.model_extra[key] == payload[key]
    again = parse_event(event.model_dump_json().encode())
    assert again == event


@given(fst.events(as_bytes=True))
def test_go_encoded_bodies_parse_to_the_same_event_as_plain_json(body: bytes) -> None:
    assert parse_event(body) == parse_event(json.dumps(json.loads(body)))


class Measured(BaseModel):
    exact: Decimal
    approximate: float
    values: list[Decimal]


@given(literal=fst.numeric_literals(), others=st.lists(fst.numeric_literals(), max_size=3))
def test_any_decimal_literal_reaches_a_decimal_field_digit_for_digit(
    literal: str, others: list[str]
) -> None:
    record = f'{{"exact":{literal},"approximate":{literal},"values":[{",".join(others)}]}}'
    body = b'{"event":"INSERT","table":"m","record":' + record.encode() + b"}"
    event = parse_event(body, Measured)
    assert isinstance(event.record, Measured)
    assert event.record.exact.as_tuple() == Decimal(literal).as_tuple()
    assert [v.as_tuple() for v in event.record.values] == [Decimal(o).as_tuple() for o in others]
    assert event.record.approximate == float(literal)


@given(literal=fst.numeric_literals(), integer=st.integers(-(10**60), 10**60))
def test_dict_records_read_decimals_exactly_when_asked(literal: str, integer: int) -> None:
    body = f'{{"event":"UPDATE","table":"m","record":{{"n":{literal},"i":{integer}}}}}'.encode()
    exact = parse_event(body, decimals=True).row
    plain = parse_event(body).row
    assert exact["i"] == plain["i"] == integer and type(exact["i"]) is type(plain["i"]) is int
    if type(plain["n"]) is int:  # an integer literal stays an int either way
        assert exact["n"] == plain["n"] == int(literal)
    else:
        assert exact["n"].as_tuple() == Decimal(literal).as_tuple()
        assert plain["n"] == float(literal)


def measured_body(literal: str) -> bytes:
    record = f'{{"exact":{literal},"approximate":{literal},"values":[{literal}]}}'
    return b'{"event":"INSERT","table":"m","record":' + record.encode() + b"}"


@given(literal=fst.numeric_literals(), secret=fst.secrets())
def test_handlers_of_a_decimal_model_get_exact_numbers(literal: str, secret: str) -> None:
    body, headers = sign_event(measured_body(literal), secret, timestamp=1_700_000_000)
    receiver = Receiver(secret, clock=lambda: 1_700_000_000)
    seen: list[Any] = []
    receiver.on("m", model=Measured)(seen.append)
    assert receiver.handle(body, headers).status == 200
    assert seen[0].record.exact.as_tuple() == Decimal(literal).as_tuple()
