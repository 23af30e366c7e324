"""The shared answer pieces and the WSGI middleware's environ body reader, checked against
the core's encoding and werkzeug's own ``Request`` reading of the same environ."""

from __future__ import annotations

import io
import json
from http import HTTPStatus
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.wrappers import Request
from werkzeug.wsgi import get_content_length

from fluxbase_receiver import Receiver
from fluxbase_receiver.adapters._common import STATUS_LINES
from fluxbase_receiver.adapters.wsgi import (
    _content_length,
    environ_headers,
    read_body,
    read_environ_body,
)
from fluxbase_receiver.receiver import Outcome
from tests.adapters.conftest import SECRET

LIMIT = 64

bodies = st.one_of(
    st.dictionaries(st.text(max_size=5), st.one_of(st.booleans(), st.integers(), st.text())),
    st.sampled_from([{"ok": True}, {"ok": 1}, {"ok": False}, {"ok": True, "duplicate": True}]),
)


@given(bodies)
def test_answers_are_compact_json_of_the_body(body: dict[str, Any]) -> None:
    expected = json.dumps(body, separators=(",", ":")).encode("utf-8")
    assert Outcome(200, body).body_bytes() == expected


def test_status_lines_match_http_status() -> None:
    for status in (200, 202, 400, 401, 405, 409, 413, 415, 500):
        assert STATUS_LINES[status] == f"{status} {HTTPStatus(status).phrase}"


class BrokenInput:
    """A ``wsgi.input`` whose connection dropped."""

    def read(self, size: int = -1) -> bytes:
        raise OSError("connection reset")


def environ(
    body: bytes | None,
    length: str | None,
    *,
    terminated: bool = False,
    chunked: bool = False,
    method: str = "POST",
) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/webhooks/fluxbase",
        "wsgi.url_scheme": "http",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "CONTENT_TYPE": "application/json",
        "wsgi.input": BrokenInput() if body is None else io.BytesIO(body),
    }
    if length is not None:
        env["CONTENT_LENGTH"] = length
    if terminated:
        env["wsgi.input_terminated"] = True
    if chunked:
        env["HTTP_TRANSFER_ENCODING"] = "chunked"
    return env


def answer(result: bytes | Outcome) -> tuple[int, bytes]:
    return (200, result) if isinstance(result, bytes) else (result.status, result.body_bytes())


CASES = {
    "declared length": (b"x" * 10, "10", {}),
    "exactly the limit": (b"x" * LIMIT, str(LIMIT), {}),
    "declared over the limit": (b"x" * 100, "100", {}),
    "longer than declared": (b"x" * 20, "10", {}),
    "shorter than declared": (b"x" * 5, "10", {}),
    "no length, not terminated": (b"x" * 10, None, {}),
    "no length, terminated": (b"x" * 10, None, {"terminated": True}),
    "terminated over the limit": (b"x" * 100, None, {"terminated": True}),
    "terminated, short of its length": (b"x" * 5, "10", {"terminated": True}),
    "chunked with a length": (b"x" * 10, "10", {"chunked": True}),
    "chunked, terminated": (b"x" * 10, "10", {"chunked": True, "terminated": True}),
    "invalid length": (b"x" * 10, "ten", {}),
    "negative length": (b"x" * 10, "-3", {}),
    "empty": (b"", "0", {}),
    "read error": (None, "10", {}),
    "read error, terminated": (None, None, {"terminated": True}),
    "not POST": (b"", None, {"method": "GET"}),
}


@pytest.mark.parametrize(("body", "length", "options"), CASES.values(), ids=CASES.keys())
def test_environ_reader_matches_the_request_reader(
    body: bytes | None, length: str | None, options: dict[str, Any]
) -> None:
    receiver = Receiver(SECRET, max_body_bytes=LIMIT)
    direct = environ(body, length, **options)
    through_werkzeug = environ(body, length, **options)
    got = read_environ_body(direct, receiver, environ_headers(direct))
    expected = read_body(Request(through_werkzeug), receiver, environ_headers(through_werkzeug))
    assert answer(got) == answer(expected)


LENGTHS = [None, "", "0", "10", "007", " 10", "1_0", "+5", "-3", "\u0663", "ten"]


@pytest.mark.parametrize("declared", LENGTHS)
@pytest.mark.parametrize("encoding", [None, "chunked", "gzip"])
def test_the_endpoint_reads_the_length_as_werkzeug(
    declared: str | None, encoding: str | None
) -> None:
    env: dict[str, Any] = {}
    if declared is not None:
        env["CONTENT_LENGTH"] = declared
    if encoding is not None:
        env["HTTP_TRANSFER_ENCODING"] = encoding
    assert _content_length(env) == get_content_length(env)
