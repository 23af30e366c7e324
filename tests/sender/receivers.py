"""Loopback receivers for the sender tests, built from this package.

Each is the core :class:`Receiver` behind the Starlette adapter's endpoint, served
by uvicorn, with a script of canned answers (a status, headers, a hang) given before
the real pipeline answers, and records of every request and every handled event.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from fluxbase_receiver import Receiver, WebhookEvent
from fluxbase_receiver.adapters.starlette import webhook_endpoint
from tests.servers import run_asgi

SECRET = "whsec-test-secret"


@dataclass(frozen=True)
class Answer:
    """A canned answer, given instead of running the pipeline."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    hang: float = 0.0


@dataclass
class Seen:
    """One request as received."""

    headers: dict[str, str]
    body: bytes


class ScriptedReceiver:
    """A receiver whose first answers can be scripted and whose handler can fail."""

    def __init__(self, secret: str = SECRET, *, handler_delay: float = 0.0) -> None:
        self.receiver = Receiver(secret, processing_ttl=2.0)
        self.script: list[Answer] = []
        self.fail_next = 0
        self.handler_delay = handler_delay
        self.requests: list[Seen] = []
        self.events: list[WebhookEvent] = []
        self.handled: Counter[str] = Counter()
        self.endpoint = webhook_endpoint(self.receiver)

        @self.receiver.on("*", "INSERT", "UPDATE", "DELETE", "TEST")
        async def record(event: WebhookEvent) -> None:
            if self.fail_next > 0:
                self.fail_next -= 1
                raise RuntimeError("refused on purpose")
            if self.handler_delay:
                await asyncio.sleep(self.handler_delay)
            self.events.append(event)
            self.handled[event.id or ""] += 1

        self.app = Starlette(routes=[Route("/hook", self)])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        body = await request.body()
        self.requests.append(Seen(dict(request.headers), body))
        if self.script:
            answer = self.script.pop(0)
            if answer.hang:
                await asyncio.sleep(answer.hang)
            response = Response(answer.body, answer.status, answer.headers)
            await response(scope, receive, send)
            return

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        await self.endpoint(scope, replay, send)


@contextmanager
def serving(target: ScriptedReceiver) -> Iterator[str]:
    """Serve ``target`` on a free loopback port; yield its webhook URL."""
    with run_asgi(target.app) as base:
        yield f"{base}/hook"


Reply = Callable[[asyncio.StreamWriter], Awaitable[None]]
"""What a :class:`RawServer` writes back once it has read a request."""


async def answer_ok(writer: asyncio.StreamWriter) -> None:
    """A plain ``200 OK``."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    await writer.drain()


class RawServer:
    """A TCP server on a loopback address that reads HTTP requests and answers with ``reply``.

    Counts every connection and keeps every request head, so a test can prove that
    nothing reached it. Runs its own event loop in a thread.
    """

    def __init__(self, reply: Reply = answer_ok, host: str = "127.0.0.1") -> None:
        self.reply = reply
        self.host = host
        self.port = 0
        self.connections = 0
        self.requests: list[bytes] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            self.requests.append(head)
            await self.reply(writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the server is shutting down
        finally:
            writer.close()

    def __enter__(self) -> RawServer:
        self._thread.start()
        start = asyncio.start_server(self._handle, self.host, 0)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *_: object) -> None:
        async def shut() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
