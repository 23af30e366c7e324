"""Generated bad requests, vanished clients and idle connections against ``listen``.

One ``listen`` process serves the module. It must answer every complete request below
500 with a JSON ``error``/``message`` body for each 4xx, keep a bounded number of threads
and flat memory, treat clients that vanish as quiet events, and end with an empty stderr.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from fluxbase_receiver.cli.listen import LISTEN_WORKERS
from tests.cli.commands import Live
from tests.robustness.raw_http import (
    CORPUS,
    GARBAGE_LENGTHS,
    RawRequest,
    bad_requests,
    check,
    send,
    still_up,
)
from tests.servers import free_port

SECRET = "listen-s3cr3t"
EXAMPLES = 120
PATH = "/webhooks/fluxbase"


@dataclass
class Listening:
    live: Live
    url: str

    def status(self, field: str) -> int:
        """A number from ``/proc/<pid>/status`` (``Threads``, ``VmRSS`` in kB)."""
        for line in Path(f"/proc/{self.live.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == field:
                return int(value.split()[0])
        raise KeyError(field)


@pytest.fixture(scope="module")
def listening() -> Iterator[Listening]:
    port = free_port()
    live = Live(["--secret", SECRET, "--port", str(port)])
    try:
        live.wait_for("listening on")
        yield Listening(live, f"http://127.0.0.1:{port}")
    finally:
        live.kill()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=bad_requests(SECRET))
def test_no_request_is_a_server_error(listening: Listening, request: RawRequest) -> None:
    check(send(listening.url, request), request)


@pytest.mark.parametrize("declared", GARBAGE_LENGTHS)
def test_a_content_length_that_is_not_one_number_is_a_json_refusal(
    listening: Listening, declared: str
) -> None:
    request = RawRequest("POST", (("Content-Length", declared),), b"{}", "garbage")
    answer = send(listening.url, request)
    assert answer is not None
    huge = declared.isdigit() and declared.isascii()
    assert answer.status == (413 if huge else 400)
    assert answer.content_type == "application/json"
    assert b'"error"' in answer.body


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "TRACE", "PURGE", "BREW"])
def test_every_method_is_answered_405(listening: Listening, method: str) -> None:
    answer = send(listening.url, RawRequest(method, (), b"", "none"))
    assert answer is not None
    assert answer.status == 405


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset instead of an orderly shutdown."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"POST /webhooks/fluxbase HTTP/1.1\r\n",
        b"POST /webhooks/fluxbase HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",
        b"POST /webhooks/fluxbase HTTP/1.1\r\nContent-Length: 100\r\n\r\n",
    ],
    ids=["nothing", "request-line", "part-of-the-body", "headers-only"],
)
def test_a_client_that_vanishes_is_no_traceback(listening: Listening, sent: bytes) -> None:
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", int(listening.url.rsplit(":", 1)[1]))) as sock:
            sock.sendall(sent)
            reset(sock)
    still_up(listening.url)


def test_idle_connections_do_not_each_get_a_thread(listening: Listening) -> None:
    port = int(listening.url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4 * LISTEN_WORKERS)]
    try:
        for sock in idle:
            sock.sendall(b"POST / HTTP/1.1\r\n")
        threads = listening.status("Threads")
    finally:
        for sock in idle:
            sock.close()
    # the pool, the main and accepting threads, and the claims' heartbeat (alive for a
    # moment after an earlier request): 32 idle connections add none
    assert threads <= LISTEN_WORKERS + 3
    still_up(listening.url)


def test_memory_stays_flat_while_bad_requests_repeat(listening: Listening) -> None:
    def replay() -> int:
        for request in CORPUS:
            check(send(listening.url, request), request)
        return listening.status("VmRSS")

    for _ in range(3):
        before = replay()
    for _ in range(20):
        after = replay()
    assert after - before < 4_096


def test_it_stops_with_an_empty_stderr(listening: Listening) -> None:
    still_up(listening.url)
    code, stderr = listening.live.interrupt()
    assert code == 0
    assert stderr == ""
    assert not any("Traceback" in line for line in listening.live.drain())
