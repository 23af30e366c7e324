"""Property tests for the header readers of the WSGI and ASGI adapters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fluxbase_receiver import Receiver, sign_payload
from fluxbase_receiver.adapters.starlette import scope_headers
from fluxbase_receiver.adapters.wsgi import environ_headers
from tests.adapters.conftest import SECRET

names = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,8}(-[A-Za-z0-9]{1,8}){0,2}", fullmatch=True)
values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"))
headers = st.dictionaries(names, values, max_size=8)


def wsgi_environ(pairs: dict[str, str]) -> dict[str, str]:
    """The environ a WSGI server builds (PEP 3333): HTTP_ keys, two without the prefix."""
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "wsgi.url_scheme": "http"}
    for name, value in pairs.items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    return environ


@given(headers)
def test_environ_headers_gives_back_every_header(pairs: dict[str, str]) -> None:
    got = {name.lower(): value for name, value in environ_headers(wsgi_environ(pairs))}
    expected = {name.lower().replace("_", "-"): value for name, value in pairs.items()}
    assert got == expected


@given(headers)
def test_scope_headers_gives_back_every_header(pairs: dict[str, str]) -> None:
    scope = {"headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in pairs.items()]}
    assert dict(scope_headers(scope)) == {k.lower(): v for k, v in pairs.items()}


@given(body=st.binary(max_size=256), case=st.sampled_from([str.lower, str.upper, str.title]))
def test_a_signature_read_from_either_side_verifies(body: bytes, case: object) -> None:
    name = case("X-Fluxbase-Signature")  # type: ignore[operator]
    signature = {name: sign_payload(body, SECRET)}
    receiver = Receiver(SECRET)
    receiver.verify(body, environ_headers(wsgi_environ(signature)))
    scope = {"headers": [(name.lower().encode(), signature[name].encode())]}
    receiver.verify(body, scope_headers(scope))
