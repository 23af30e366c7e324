"""The adapters' narrow header readers give the receiver what the full readers give it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fluxbase_receiver import request_headers
from fluxbase_receiver.adapters._common import READ_HEADERS
from fluxbase_receiver.adapters.starlette import scope_headers, scope_request_headers
from fluxbase_receiver.adapters.wsgi import environ_headers, environ_request_headers
from tests.adapters.test_headers import wsgi_environ

cases = st.sampled_from([str.lower, str.upper, str.title])
names = st.sampled_from([*READ_HEADERS, "host", "user-agent", "x-fluxbase-delivery-attempt"])
values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"))
pairs = st.lists(st.tuples(names, cases, values), max_size=10)


def read_only(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name in READ_HEADERS}


@given(pairs)
def test_scope_request_headers_are_the_read_ones_of_every_header(
    raw: list[tuple[str, object, str]],
) -> None:
    scope = {
        "headers": [
            (case(name).encode(), value.encode("latin-1"))  # type: ignore[operator]
            for name, case, value in raw
        ]
    }
    expected = read_only(request_headers(scope_headers(scope)))
    assert scope_request_headers(scope) == expected


@given(pairs)
def test_wsgi_headers_are_the_read_ones_of_every_header(
    raw: list[tuple[str, object, str]],
) -> None:
    environ = wsgi_environ({case(name): value for name, case, value in raw})  # type: ignore[operator]
    expected = read_only(request_headers(environ_headers(environ)))
    assert environ_request_headers(environ) == expected
