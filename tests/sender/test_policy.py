"""The retry policy's parts: Retry-After parsing and jittered exponential backoff."""

from __future__ import annotations

import random
from email.utils import formatdate

from hypothesis import given
from hypothesis import strategies as st

from fluxbase_receiver import parse_event
from fluxbase_receiver.sender.capture import new_event, wire_body
from fluxbase_receiver.sender.delivery import parse_retry_after
from fluxbase_receiver.sender.policy import RetryPolicy


@given(st.integers(min_value=0, max_value=10**9))
def test_retry_after_seconds(seconds: int) -> None:
    assert parse_retry_after(str(seconds)) == seconds
    assert parse_retry_after(f" {seconds} ") == seconds


@given(st.integers(min_value=0, max_value=10**6), st.floats(min_value=1e9, max_value=2e9))
def test_retry_after_http_date(ahead: int, now: float) -> None:
    header = formatdate(int(now) + ahead, usegmt=True)
    wait = parse_retry_after(header, now=now)
    assert wait is not None and abs(wait - max(0.0, int(now) + ahead - now)) < 1e-6


@given(st.text(max_size=40).filter(lambda t: not t.strip().isdigit()))
def test_unreadable_retry_after_is_ignored_or_a_non_negative_wait(value: str) -> None:
    wait = parse_retry_after(value)
    assert wait is None or wait >= 0


@given(
    st.integers(min_value=1, max_value=200),
    st.floats(min_value=0.001, max_value=86_400),
    st.floats(min_value=1, max_value=86_400),
    st.integers(),
)
def test_backoff_is_full_jitter_under_an_exponential_ceiling(
    failures: int, base: float, cap: float, seed: int
) -> None:
    delay = RetryPolicy(max_backoff_seconds=cap, rng=random.Random(seed)).backoff(failures, base)
    assert 0 <= delay <= min(cap, base * 2.0 ** min(failures - 1, 60))


@given(
    st.sampled_from(["INSERT", "UPDATE", "DELETE"]),
    st.dictionaries(st.text(max_size=10), st.none() | st.integers() | st.text(max_size=20)),
    st.text(max_size=36),
)
def test_every_wire_body_parses_as_the_same_event(
    operation: str, record: dict[str, object], webhook_id: str
) -> None:
    captured = new_event(operation, "orders", record, record, "public", 1_700_000_000.5)
    event = parse_event(wire_body(captured, webhook_id))
    assert (event.event, event.table, event.schema_name) == (operation, "orders", "public")
    assert event.record == record and event.old_record == record
    assert event.id == captured.id and event.webhook_id == webhook_id
    assert event.timestamp is not None and event.timestamp.timestamp() == 1_700_000_000.5
