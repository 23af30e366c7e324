"""Loopback receivers for the sender tests, built from this package.

Each is the core :class:`Receiver` behind the Starlette adapter's endpoint, served
by uvicorn, with a script of canned answers (a status, headers, a hang) given before
the real pipeline answers, and records of every request and every handled event.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
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
