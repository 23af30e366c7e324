"""Hostile receivers: every odd or malicious answer ends in a correct delivery record.

Each receiver is a raw TCP server on 127.0.0.1 writing exactly the bytes a scenario
needs. The sender's memory is measured with ``tracemalloc`` while it delivers: a
huge, endless or compressed-bomb answer must not be held beyond the stored cap.
"""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fluxbase_receiver.sender import Delivery, Sender
from fluxbase_receiver.sender.delivery import MAX_STORED_BODY
from tests.sender.conftest import make_webhook
from tests.sender.receivers import RawServer, Reply
from tests.sender.stores import unique_schema

MEMORY_CEILING = 8 * 1024 * 1024
"""Peak bytes the sender may allocate while delivering one hostile answer."""

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"


def answer(*parts: bytes, pause: float = 0.0) -> Reply:
    """A reply writing ``parts`` one after the other, ``pause`` seconds apart."""

    async def reply(writer: asyncio.StreamWriter) -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)

    return reply


def chunked(pieces: list[bytes]) -> list[bytes]:
    """``pieces`` framed with HTTP/1.1 chunked transfer coding."""
    frames = [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces]
    return [HEAD + b"Transfer-Encoding: chunked\r\n\r\n", *frames, b"0\r\n\r\n"]


async def endless(writer: asyncio.StreamWriter) -> None:
    """64 MiB of body behind a Content-Length that says so, as fast as it is read."""
    size = 64 * 1024 * 1024
    writer.write(HEAD + b"Content-Length: %d\r\n\r\n" % size)
    block = b"x" * 65536
    for _ in range(size // len(block)):
        writer.write(block)
        await writer.drain()


def gzip_bomb() -> bytes:
    """64 MiB of ``A`` compressed to a few tens of KiB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"A" * (1024 * 1024)
    return b"".join([*(packer.compress(block) for _ in range(64)), packer.flush()])


async def bomb(writer: asyncio.StreamWriter) -> None:
    payload = gzip_bomb()
    writer.write(
        HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload
    )
    await writer.drain()


async def silent(writer: asyncio.StreamWriter) -> None:
    """Reads the request and never answers."""
    await asyncio.sleep(3600)


@dataclass(frozen=True)
class Scenario:
    reply: Reply
    status: str
    response_status: int | None
    body: str | None
    error: str | None


SMALL = "r" * 1000
SCENARIOS = {
    "huge answer": Scenario(endless, "success", 200, "x" * MAX_STORED_BODY, None),
    "chunked answer": Scenario(
        answer(*chunked([SMALL[i : i + 100].encode() for i in range(0, 1000, 100)]), pause=0.01),
        "success",
        200,
        SMALL,
        None,
    ),
    "trickled answer": Scenario(
        answer(
            HEAD + b"Content-Length: 200\r\n\r\n",
            *(b"t" for _ in range(200)),
            pause=0.001,
        ),
        "success",
        200,
        "t" * 200,
        None,
    ),
    "trickled chunked answer": Scenario(
        answer(*chunked([b"c"] * 150), pause=0.001),
        "success",
        200,
        "c" * 150,
        None,
    ),
    "huge chunked answer": Scenario(
        answer(*chunked([b"z" * 4096] * 256)), "success", 200, "z" * MAX_STORED_BODY, None
    ),
    "gzip bomb": Scenario(bomb, "success", 200, "A" * MAX_STORED_BODY, None),
    "small gzip answer": Scenario(
        answer(
            HEAD
            + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
            % len(gzip.compress(SMALL.encode()))
            + gzip.compress(SMALL.encode())
        ),
        "success",
        200,
        SMALL,
        None,
    ),
    "never answers": Scenario(silent, "failed", None, None, "timed out after 1 s"),
    "closes without answering": Scenario(
        answer(), "failed", None, None, "connection closed by the receiver"
    ),
    "closes mid-answer": Scenario(
        answer(HEAD + b"Content-Length: 1000\r\n\r\n" + b"p" * 10),
        "failed",
        200,
        "p" * 10,
        "answer cut off",
    ),
    "closes mid-chunk": Scenario(
        answer(HEAD + b"Transfer-Encoding: chunked\r\n\r\n64\r\n" + b"q" * 40),
        "failed",
        200,
        "q" * 40,
        "answer cut off",
    ),
    "not HTTP": Scenario(
        answer(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), "failed", None, None, "invalid answer"
    ),
    "huge headers": Scenario(
        answer(HEAD + b"X-Pad: " + b"h" * 200_000 + b"\r\nContent-Length: 0\r\n\r\n"),
        "failed",
        None,
        None,
        "invalid answer",
    ),
    "error with huge body": Scenario(
        answer(b"HTTP/1.1 500 Oops\r\nContent-Length: 1048576\r\n\r\n" + b"e" * 1048576),
        "failed",
        500,
        "e" * MAX_STORED_BODY,
        "receiver answered 500",
    ),
}


@pytest.fixture
def sender(tmp_path: Path) -> Iterator[Sender]:
    with Sender(f"sqlite:///{tmp_path}/app.db", allow_private_networks=True) as instance:
        yield instance


@pytest.fixture(params=["sqlite", "postgresql"])
def any_sender(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sender]:
    """A sender on each store."""
    if request.param == "sqlite":
        with Sender(f"sqlite:///{tmp_path}/app.db", allow_private_networks=True) as instance:
            yield instance
        return
    url = request.getfixturevalue("postgres_url")
    instance = Sender(url, schema=unique_schema(), allow_private_networks=True)
    try:
        yield instance
    finally:
        instance._call(instance.store.drop())  # type: ignore[attr-defined]
        instance.close()


def deliver_once(sender: Sender, reply: Reply) -> tuple[Delivery, int, RawServer]:
    """One attempt against a server answering with ``reply``; the record and peak memory."""
    with RawServer(reply) as server:
        webhook = make_webhook(
            sender, f"http://127.0.0.1:{server.port}/hook", max_retries=0, timeout_seconds=1
        )
        sender.emit("INSERT", "orders", {"id": 1})
        tracemalloc.start()
        try:
            sender.deliver_pending()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    (delivery,) = sender.webhooks.get_deliveries(webhook.id)
    return delivery, peak, server


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_hostile_answer_ends_in_a_correct_record_with_bounded_memory(
    sender: Sender, name: str
) -> None:
    scenario = SCENARIOS[name]
    delivery, peak, server = deliver_once(sender, scenario.reply)

    assert len(server.requests) == 1
    assert (delivery.status, delivery.attempts) == (scenario.status, 1)
    assert delivery.response_status == scenario.response_status
    assert delivery.response_body == scenario.body
    if scenario.error is None:
        assert delivery.error is None
    else:
        assert delivery.error is not None and delivery.error.startswith(scenario.error)
    (attempt,) = sender.get_attempts(delivery.id)
    assert attempt.outcome == ("success" if scenario.status == "success" else "failed")
    assert peak < MEMORY_CEILING, f"{name}: {peak} bytes at peak"


def test_an_answer_with_nul_bytes_is_recorded_on_every_store(any_sender: Sender) -> None:
    """A NUL cannot be stored as text in PostgreSQL: it is recorded as U+FFFD, once."""
    reply = answer(HEAD + b"Content-Length: 7\r\n\r\nok\x00\x00end")
    delivery, _, server = deliver_once(any_sender, reply)
    assert len(server.requests) == 1
    assert (delivery.status, delivery.attempts) == ("success", 1)
    assert delivery.response_body == "ok\ufffd\ufffdend"
    assert any_sender.next_due() is None
