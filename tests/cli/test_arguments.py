"""The command's value parsers and the escaping of untrusted text, over any input."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxbase_receiver.cli import arguments
from fluxbase_receiver.cli.terminal import printable, printable_lines


@given(st.text())
def test_printable_leaves_nothing_a_terminal_would_act_on(text: str) -> None:
    shown = printable(text)
    assert shown.isprintable()
    assert (shown == text) == text.isprintable()


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\n")), min_size=1))
def test_printable_lines_keeps_the_line_breaks_only(lines: list[str]) -> None:
    shown = printable_lines("\n".join(lines))
    assert shown.split("\n") == [printable(line) for line in lines]


def accepted(parse: Callable[[str], Any], text: str) -> Any:
    """The parsed value, or ``None`` when the parser refused ``text`` with a clear error."""
    try:
        return parse(text)
    except argparse.ArgumentTypeError as error:
        assert str(error)
        return None


@given(st.one_of(st.text(), st.integers().map(str)))
def test_port_and_count_take_only_their_range(text: str) -> None:
    port = accepted(arguments.port, text)
    assert port is None or 0 <= port <= 65_535
    count = accepted(arguments.count, text)
    assert count is None or 1 <= count <= 10_000


@given(st.one_of(st.text(), st.floats().map(str)))
def test_seconds_are_positive_and_at_most_a_day(text: str) -> None:
    value = accepted(arguments.seconds, text)
    assert value is None or 0 < value <= arguments.MAX_SECONDS


@given(st.one_of(st.text(), st.floats().map(str), st.datetimes().map(lambda d: d.isoformat())))
def test_since_is_a_finite_time_or_a_clear_error(text: str) -> None:
    value = accepted(arguments.since, text)
    assert value is None or math.isfinite(value)


@given(st.text())
def test_urls_and_origins_are_checked_without_crashing(text: str) -> None:
    for parse in (arguments.url, arguments.origin):
        value = accepted(parse, text)
        assert value is None or value == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2023-11-14T22:13:20Z", 1_700_000_000), ("1700000000", 1_700_000_000)],
)
def test_since_reads_iso_and_unix_times(text: str, expected: float) -> None:
    assert arguments.since(text) == expected


@pytest.mark.parametrize("origin", ["*", "https://app.example", "http://127.0.0.1:3000"])
def test_origins(origin: str) -> None:
    assert arguments.origin(origin) == origin
