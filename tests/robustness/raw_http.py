"""Bad webhook requests written byte by byte, sent over a raw socket, and the checks on the answer.

A generated :class:`RawRequest` may lie about its body (a garbage, doubled or too large
``Content-Length``), carry non-ASCII header bytes, any method, any content type, signature
headers that are missing, malformed, stale, or signed over another body, and bodies that
are random bytes, unsigned events, deep nesting or over the receiver's limit.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from hypothesis import strategies as st

from fluxbase_receiver import sign_payload
from fluxbase_receiver.testing.strategies import events

MAX_BODY = 65_536
"""The ``max_body_bytes`` of every receiver under test (small: oversized bodies stay cheap)."""
METHODS = ("POST", "GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "PURGE")
FRAMINGS = ("exact", "exact", "exact", "chunked", "truncated", "garbage", "none")
GARBAGE_LENGTHS = (
    "abc",
    "-1",
    "+5",
    "1e3",
    "0x10",
    " ",
    "5, 5",
    "²",
    "\xb3",
    "99999999999999999999999",
    "9" * 5000,
)
TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&'*+^`|~"
TOKEN = st.text(TOKEN_CHARS, min_size=1, max_size=20)
"""Header names."""
LATIN1 = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60
)
"""Header values: printable Latin-1, so non-ASCII bytes too."""


@dataclass(frozen=True)
class RawRequest:
    """One request as bytes on the wire, and what a correct server must do with it."""

    method: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    framing: str
    """``exact``, ``chunked``, ``truncated`` (fewer bytes than declared), ``garbage``
    (a ``Content-Length`` that is not one number) or ``none`` (no body framing)."""

    @property
    def complete(self) -> bool:
        """Whether the server can tell where the request ends, so it must answer. A server
        may read a garbage ``Content-Length`` as a number (``5, 5`` is 5) and wait for a
        body that never comes: the client ends its side, and no answer is fine."""
        return self.framing in ("exact", "chunked", "none")

    @property
    def length_beyond_int(self) -> bool:
        """A ``Content-Length`` with more digits than ``int()`` converts (4300)."""
        return any(name == "Content-Length" and len(value) > 4_300 for name, value in self.headers)

    @property
    def plain_http(self) -> bool:
        """Well-formed HTTP/1.1 that any server hands to the application."""
        return self.framing in ("exact", "chunked", "none") and all(
            value.isascii() for _, value in self.headers
        )

    def encode(self, host: str, path: str) -> bytes:
        lines = [f"{self.method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        body = self.body
        if self.framing == "exact":
            lines.append(f"Content-Length: {len(body)}")
        elif self.framing == "truncated":
            lines.append(f"Content-Length: {len(body) + 10}")
        elif self.framing == "chunked":
            lines.append("Transfer-Encoding: chunked")
            body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
        elif self.framing == "none":
            body = b""
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("latin-1") + body


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


CUT_OFF = Answer(0, "", b"")
"""The server closed the connection before it took the whole request (refusing it early);
an answer it sent may be lost in the reset."""


def send(url: str, request: RawRequest, path: str = "/webhooks/fluxbase") -> Answer | None:
    """Send ``request``; the answer, :data:`CUT_OFF`, or ``None`` when the server read the
    whole request and closed without an answer."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        try:
            sock.sendall(request.encode(parts.netloc, path))
            if not request.complete:
                sock.shutdown(socket.SHUT_WR)  # nothing more comes
            cut_off = False
        except OSError:
            cut_off = True
        response = http.client.HTTPResponse(sock, method=request.method)
        try:
            response.begin()
            body = response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return CUT_OFF if cut_off else None
        return Answer(response.status, response.getheader("Content-Type", ""), body)


def check(answer: Answer | None, request: RawRequest, ours: bool = True) -> None:
    """No 5xx, no traceback, and a JSON ``error``/``message`` body for each 4xx of ours.

    ``ours`` is False for answers the framework gives itself (FastAPI's own 405).
    """
    if answer is None:
        assert not request.complete, f"no answer to a complete request: {request!r}"
        return
    if answer is CUT_OFF:
        return
    assert answer.status < 500, (answer, request)
    assert b"Traceback" not in answer.body
    if 400 <= answer.status < 500 and ours and request.plain_http and request.method != "HEAD":
        assert answer.content_type.startswith("application/json"), (answer, request)
        document = json.loads(answer.body)
        assert isinstance(document.get("error"), str), answer
        assert isinstance(document.get("message"), str), answer


def still_up(url: str, path: str = "/webhooks/fluxbase") -> None:
    """The server still answers (a GET of the webhook path is refused with 405)."""
    answer = send(url, RawRequest("GET", (), b"", "none"), path)
    assert answer is not None and answer.status == 405


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@st.composite
def bad_requests(draw: st.DrawFn, secret: str) -> RawRequest:
    """Requests a webhook endpoint must refuse (or, rarely, accept) without a server error."""
    body = draw(
        st.one_of(
            st.binary(max_size=2_000),
            events(as_bytes=True),
            st.integers(1_000, 50_000).map(deep),
            st.just(b'{"event": "INSERT", "table": "t", "record": {"id": ' + b"9" * 5_000 + b"}}"),
            st.just(b"x" * (MAX_BODY + 1)),
            st.binary(min_size=1, max_size=200).map(lambda tail: b'{"event": "INSERT"' + tail),
        )
    )
    now = int(time.time())
    signature = draw(
        st.one_of(
            st.none(),
            st.just(sign_payload(body, secret)),  # correct: the body itself is what is bad
            st.just(sign_payload(body, secret, now - 3_600)),  # stale
            st.just(sign_payload(body + b" ", secret)),  # another body
            st.just(sign_payload(body, "not-" + secret)),  # another secret
            st.just(f"t={now},v1={'0' * 64}"),
            LATIN1,
        )
    )
    headers: list[tuple[str, str]] = []
    if signature is not None:
        headers.append(("X-Fluxbase-Signature", signature))
    content_type = draw(
        st.one_of(
            st.just("application/json"),
            st.none(),
            st.sampled_from(
                [
                    "text/plain",
                    "application/json; charset=utf-8",
                    "application/cloudevents+json",
                    "multipart/form-data; boundary=x",
                    "application/x-www-form-urlencoded",
                    "",
                    "APPLICATION/JSON",
                    "application/jsonx",
                ]
            ),
            LATIN1,
        )
    )
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    if draw(st.booleans()):
        headers.append(("X-Webhook-Signature", draw(st.one_of(LATIN1, st.just("0" * 64)))))
    headers += draw(st.lists(st.tuples(TOKEN.map("X-".__add__), LATIN1), max_size=4))
    framing = draw(st.sampled_from(FRAMINGS))
    if framing == "garbage":
        headers.append(("Content-Length", draw(st.sampled_from(GARBAGE_LENGTHS))))
    method = draw(st.one_of(st.just("POST"), st.sampled_from(METHODS)))
    return RawRequest(method, tuple(headers), body, framing)


CORPUS_SECRET = "corpus-secret"
"""Signs :data:`CORPUS`; the receivers under test use other secrets, so none of it is accepted."""
CORPUS = [
    RawRequest("POST", (("Content-Type", "application/json"),), b"\x00\xff" * 500, "exact"),
    RawRequest("POST", (("X-Fluxbase-Signature", "t=1,v1=00"),), b"{}", "exact"),
    RawRequest(
        "POST",
        (("X-Fluxbase-Signature", sign_payload(b"x" * 10, CORPUS_SECRET)),),
        b"x" * (MAX_BODY + 1),
        "exact",
    ),
    RawRequest("POST", (), deep(20_000), "exact"),
    RawRequest("POST", (("Content-Length", "abc"),), b"{}", "garbage"),
    RawRequest("POST", (("X-Note", "café"),), b'{"event": "INSERT"}', "chunked"),
    RawRequest("POST", (), b'{"event": "INSERT", "table": "t"}', "truncated"),
    RawRequest("PUT", (), b"", "none"),
    RawRequest("POST", (("Content-Type", "text/plain"),), b"hello", "exact"),
]
"""A fixed mix of bad requests, replayed to measure memory."""


class ErrorRecords(logging.Handler):
    """Collects ERROR records from every logger (server tracebacks land there)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records]
