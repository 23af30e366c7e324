"""Hypothesis strategies for Fluxbase webhooks, for property tests of handlers and receivers.

>>> from hypothesis import given
>>> from fluxbase_receiver.testing import strategies as fst
>>> @given(fst.signed_requests())
... def test_my_app_accepts_every_event(request): ...

Needs Hypothesis (``pip install 'fluxbase-receiver[testing]'``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

try:
    from hypothesis import strategies as st
except ModuleNotFoundError as missing:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "fluxbase_receiver.testing.strategies needs Hypothesis: "
        "pip install 'fluxbase-receiver[testing]'"
    ) from missing

from fluxbase_receiver.testing import OMIT, encode_event, go_timestamp, make_event, sign_event

__all__ = [
    "SignedRequest",
    "events",
    "go_timestamps",
    "json_values",
    "numeric_literals",
    "records",
    "secrets",
    "signed_requests",
    "table_names",
]

_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
"""Any Unicode text that can be encoded as UTF-8 (no lone surrogates)."""


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Any JSON value: null, booleans, integers (far beyond 64 bits), finite floats that
    round-trip, Unicode strings, and nested lists and objects (up to ``max_leaves``)."""
    scalars = st.none() | st.booleans() | _TEXT | st.floats(allow_nan=False, allow_infinity=False)
    integers = st.integers(-(2**64), 2**64) | st.integers(-(10**30), 10**30)
    return st.recursive(
        scalars | integers,
        lambda children: (
            st.lists(children, max_size=5) | st.dictionaries(_TEXT, children, max_size=5)
        ),
        max_leaves=max_leaves,
    )


def numeric_literals(max_digits: int = 40) -> st.SearchStrategy[str]:
    """JSON number literals as PostgreSQL ``numeric`` columns send them: up to
    ``max_digits`` digits before and after the point (trailing zeros kept, far beyond a
    float's precision), sometimes an exponent. Never ``-0`` (``numeric`` has no negative zero)."""
    whole = rf"(0|[1-9][0-9]{{0,{max_digits - 1}}})"
    pattern = rf"-?{whole}(\.[0-9]{{1,{max_digits}}})?([eE][+-]?[0-9]{{1,3}})?"
    return st.from_regex(pattern, fullmatch=True).filter(lambda literal: literal != "-0")


def records(max_columns: int = 8) -> st.SearchStrategy[dict[str, Any]]:
    """A row as a JSON object: Unicode column names, any JSON values (nulls, nesting,
    large integers), often with an ``id`` column."""
    row = st.dictionaries(_TEXT, json_values(max_leaves=8), max_size=max_columns)
    ids = st.integers(1, 2**63 - 1) | st.uuids().map(str)
    return st.one_of(row, st.builds(lambda r, i: {"id": i, **r}, row, ids))


def table_names() -> st.SearchStrategy[str]:
    """Table or schema names: PostgreSQL-style identifiers and arbitrary Unicode names."""
    identifiers = st.from_regex(r"[a-z_][a-z0-9_]{0,30}", fullmatch=True)
    return identifiers | st.text(
        st.characters(codec="utf-8", exclude_characters="."), min_size=1, max_size=20
    )


@st.composite
def go_timestamps(draw: st.DrawFn) -> str:
    """RFC 3339 timestamps as a Go server writes them: nine fractional digits (or fewer,
    trailing zeros trimmed, or none) and ``Z`` or any ``±hh:mm`` offset."""
    moment = draw(
        st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1))
    ).replace(tzinfo=UTC)
    minutes = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59) | st.just(0))
    local = moment.astimezone(timezone(timedelta(minutes=minutes)))
    text = go_timestamp(local, nanoseconds=draw(st.integers(0, 999_999_999)))
    digits = draw(st.integers(0, 9))
    head, _, fraction = text.partition(".")
    zone = fraction[9:]
    kept = fraction[:digits].rstrip("0") if digits < 9 else fraction[:9]
    return f"{head}.{kept}{zone}" if kept else f"{head}{zone}"


@st.composite
def _event(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    table = "test" if kind == "TEST" else draw(table_names())
    record: Any = {"test": True} if kind == "TEST" else draw(records())
    old_record: Any = OMIT
    if kind == "INSERT":
        old_record = draw(st.sampled_from([OMIT, None]))
    elif kind == "UPDATE":
        old_record = draw(st.sampled_from([OMIT, None]) | records())
    elif kind == "DELETE":
        shape = draw(st.sampled_from(["record", "both", "old_record"]))
        old_record = OMIT if shape == "record" else record
        record = OMIT if shape == "old_record" else record
    extra = draw(
        st.dictionaries(
            st.text(st.characters(codec="utf-8"), min_size=1, max_size=12).filter(
                lambda key: key not in _FIELDS
            ),
            json_values(max_leaves=4),
            max_size=2,
        )
    )
    return make_event(
        kind,
        table=table,
        schema=draw(st.just("public") | table_names()),
        record=record,
        old_record=old_record,
        timestamp=draw(go_timestamps() | st.just(OMIT)),
        webhook_id=draw(st.uuids().map(str) | st.just(OMIT)),
        **extra,
    )


_FIELDS = frozenset(
    ("event", "table", "schema", "record", "old_record", "timestamp", "webhook_id", "id")
)
_KINDS = ("INSERT", "UPDATE", "DELETE", "TEST")


def events(
    kind: str | Sequence[str] | None = None, *, as_bytes: bool = False
) -> st.SearchStrategy[Any]:
    """Event payloads as a Fluxbase server sends them, as dicts (or body ``bytes``).

    ``kind``: one of INSERT, UPDATE, DELETE, TEST, several, or ``None`` for all.
    Covers the wire variants: INSERT with ``old_record`` absent or ``null``; DELETE with
    only ``record``, only ``old_record`` or both; ``webhook_id`` or ``timestamp``
    missing; Go timestamps with up to nine fractional digits and offsets; unknown extra
    fields; Unicode table and schema names.
    """
    kinds = _KINDS if kind is None else (kind,) if isinstance(kind, str) else tuple(kind)
    unknown = {k.upper() for k in kinds}.difference(_KINDS)
    if unknown:
        raise ValueError(f"unknown event kind(s) {sorted(unknown)}; use {list(_KINDS)}")
    payloads = st.one_of([_event(k.upper()) for k in kinds])
    return payloads.map(encode_event) if as_bytes else payloads


def secrets() -> st.SearchStrategy[str]:
    """Webhook secrets: non-empty Unicode text (used as its UTF-8 bytes)."""
    return st.text(st.characters(codec="utf-8"), min_size=1, max_size=64)


@dataclasses.dataclass(frozen=True)
class SignedRequest:
    """A signed webhook request and what it was signed with."""

    body: bytes
    headers: dict[str, str]
    secret: str = dataclasses.field(repr=False)
    timestamp: int
    """The signed unix time (pass it as the receiver's clock to verify)."""
    payload: dict[str, Any] | None = None
    """The event payload, when the body was built from one."""


@st.composite
def _signed(
    draw: st.DrawFn,
    payloads: st.SearchStrategy[Any],
    secret_strategy: st.SearchStrategy[str],
    timestamps: st.SearchStrategy[int],
) -> SignedRequest:
    payload = draw(payloads)
    secret = draw(secret_strategy)
    timestamp = draw(timestamps)
    body, headers = sign_event(payload, secret, timestamp=timestamp)
    return SignedRequest(
        body, headers, secret, timestamp, payload if isinstance(payload, dict) else None
    )


def signed_requests(
    payloads: st.SearchStrategy[Any] | None = None,
    *,
    secret: st.SearchStrategy[str] | None = None,
    timestamps: st.SearchStrategy[int] | None = None,
) -> st.SearchStrategy[SignedRequest]:
    """Correctly signed requests (:class:`SignedRequest`) with a Fluxbase server's headers.

    ``payloads`` default to :func:`events` (dicts, or raw ``bytes`` bodies to sign as
    they are), ``secret`` to :func:`secrets`, ``timestamps`` to unix seconds from 1970
    to 2200 (verify with ``now=request.timestamp``).
    """
    return _signed(
        events() if payloads is None else payloads,
        secrets() if secret is None else secret,
        st.integers(0, 7_258_118_400) if timestamps is None else timestamps,
    )
