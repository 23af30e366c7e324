"""Starlette and any ASGI application: an endpoint for ``Route`` and an ASGI middleware.

Usage::

    import os

    from starlette.applications import Starlette
    from starlette.routing import Route

    from fluxbase_receiver import Receiver, WebhookEvent
    from fluxbase_receiver.adapters.starlette import webhook_endpoint

    receiver = Receiver(secret=os.environ["FLUXBASE_WEBHOOK_SECRET"])

    @receiver.on("orders", "INSERT", "UPDATE")
    async def on_order(event: WebhookEvent) -> None:
        ...

    app = Starlette(routes=[Route("/webhooks/fluxbase", webhook_endpoint(receiver))])

or in front of any ASGI application (every other path passes through)::

    app = FluxbaseASGIMiddleware(app, receiver, path="/webhooks/fluxbase")

The endpoint is an ASGI application, so ``Route`` sends it every method and it answers
405 itself for anything but POST. The body is streamed: a declared ``Content-Length`` over
``receiver.max_body_bytes`` is refused before reading, and any other body with 413 as soon
as it passes the limit, without buffering the rest. Async handlers are awaited; sync
handlers run in a worker thread (register them with ``threaded=False`` to run inline).

Respond quickly: ``respond="immediately"`` answers 202 right after verify + idempotency
claim and runs the handlers after the response is sent; ``deadline=2.0`` answers 202 once
the handlers take longer than 2 s and lets them finish. Background failures are logged and
release the claim, but the sender already got a 2xx and will not retry: work is lost if the
process dies (or a handler fails) before the handlers end. Use a durable queue when that
matters.
"""

from __future__ import annotations

import logging

from fluxbase_receiver.adapters._common import (
    Respond,
    check_respond,
    require,
    response_headers,
    too_large,
)

require("starlette", "starlette", "Starlette", "starlette")

from starlette.background import BackgroundTask  # noqa: E402
from starlette.requests import ClientDisconnect, Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.types import ASGIApp, Receive, Scope, Send  # noqa: E402

from fluxbase_receiver.receiver import Admitted, Outcome, Receiver, accepted  # noqa: E402

__all__ = [
    "FluxbaseASGIMiddleware",
    "WebhookEndpoint",
    "read_body",
    "to_response",
    "webhook_endpoint",
]

logger = logging.getLogger("fluxbase_receiver")


def to_response(outcome: Outcome, background: BackgroundTask | None = None) -> Response:
    """The Starlette response for an :class:`Outcome` (JSON body, its status)."""
    return Response(
        outcome.body_bytes(), outcome.status, response_headers(outcome), background=background
    )


async def read_body(request: Request, receiver: Receiver) -> bytes | Outcome:
    """The body, read chunk by chunk; the 405/413/415 refusal instead when there is one.

    Reading stops at the first chunk past ``receiver.max_body_bytes``: the rest of an
    oversized upload is never read. Raises ``ClientDisconnect`` if the client goes away.
    """
    refusal = receiver.precheck(request.method, request.headers)
    if refusal is not None:
        return refusal
    limit = receiver.max_body_bytes
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class WebhookEndpoint:
    """An ASGI application that receives Fluxbase webhooks with ``receiver``."""

    def __init__(
        self,
        receiver: Receiver,
        *,
        respond: Respond = "after_handlers",
        deadline: float | None = None,
    ) -> None:
        check_respond(respond, deadline)
        self.receiver = receiver
        self.respond = respond
        self.deadline = deadline

    def __repr__(self) -> str:
        return f"<WebhookEndpoint respond={self.respond!r} deadline={self.deadline!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            body = await read_body(request, self.receiver)
        except ClientDisconnect:
            logger.info("webhook client disconnected before sending the whole body")
            return
        response = (
            await self.answer(body, request) if isinstance(body, bytes) else to_response(body)
        )
        await response(scope, receive, send)

    async def answer(self, body: bytes, request: Request) -> Response:
        """Run the pipeline on a body that was read whole."""
        receiver = self.receiver
        if self.respond == "after_handlers":
            outcome = await receiver.handle_async(body, request.headers, deadline=self.deadline)
            return to_response(outcome)
        admitted = await receiver.admit_async(body, request.headers)
        if isinstance(admitted, Outcome):
            return to_response(admitted)
        return to_response(accepted(admitted.event), BackgroundTask(self._process, admitted))

    async def _process(self, admitted: Admitted) -> None:
        try:
            await self.receiver.process_async(admitted)
        except Exception:
            logger.exception("background webhook processing failed")


def webhook_endpoint(
    receiver: Receiver, *, respond: Respond = "after_handlers", deadline: float | None = None
) -> WebhookEndpoint:
    """The ASGI endpoint for ``Route(path, webhook_endpoint(receiver))``."""
    return WebhookEndpoint(receiver, respond=respond, deadline=deadline)


class FluxbaseASGIMiddleware:
    """Receives webhooks on ``path`` and passes every other request to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        receiver: Receiver,
        *,
        path: str = "/webhooks/fluxbase",
        respond: Respond = "after_handlers",
        deadline: float | None = None,
    ) -> None:
        self.app = app
        self.path = path
        self.endpoint = WebhookEndpoint(receiver, respond=respond, deadline=deadline)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            await self.endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)
