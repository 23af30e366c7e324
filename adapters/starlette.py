"""Starlette and any ASGI application: an endpoint for ``Route`` and an ASGI middleware.

Usage::

    import os

    from starlette.applications import Starlette
    from starlette.routing import Route

    from fluxbase_receiver import Receiver, WebhookEvent
    from fluxbase_receiver.adapters.starlette import webhook_routes

    receiver = Receiver(secret=os.environ["FLUXBASE_WEBHOOK_SECRET"])

    @receiver.on("orders", "INSERT", "UPDATE")
    async def on_order(event: WebhookEvent) -> None:
        ...

    app = Starlette(routes=webhook_routes("/webhooks/fluxbase", receiver))

or in front of any ASGI application (every other path passes through)::

    app = FluxbaseASGIMiddleware(app, receiver, path="/webhooks/fluxbase")

Both take the path with and without a trailing slash: a URL configured as
``/webhooks/fluxbase/`` reaches the handlers instead of Starlette's 307 redirect, which a
sender counts as a failed delivery. (A plain ``Route(path, webhook_endpoint(receiver))``
matches ``path`` alone.) The endpoint is an ASGI application, so a route sends it every
method and it answers 405 itself for anything but POST.

The body is streamed: a declared ``Content-Length`` over ``receiver.max_body_bytes`` is
refused without reading past the first chunk the server hands over, and any other body
with 413 as soon as it passes the limit, without buffering the rest. Async handlers are
awaited; sync handlers run in a worker thread (register them with ``threaded=False`` to run
inline).

Respond quickly: ``respond="immediately"`` answers 202 right after verify + idempotency
claim and runs the handlers after the response is sent; ``deadline=2.0`` answers 202 once
the handlers take longer than 2 s and lets them finish. Background failures are logged and
release the claim, but the sender already got a 2xx and will not retry: work is lost if the
process dies (or a handler fails) before the handlers end. Use a durable queue when that
matters.
"""

from __future__ import annotations

import logging

try:
    from starlette.requests import ClientDisconnect
    from starlette.routing import Route
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "fluxbase_receiver.adapters.starlette needs Starlette: "
        "pip install 'fluxbase-receiver[starlette]'"
    ) from error

from fluxbase_receiver._logcontext import REQUEST_PATH
from fluxbase_receiver.adapters._common import (
    READ_HEADERS,
    Respond,
    check_respond,
    path_variants,
    response_headers,
    too_large,
)
from fluxbase_receiver.receiver import (
    Admitted,
    Headers,
    Outcome,
    Receiver,
    RequestHeaders,
    accepted,
)

__all__ = [
    "FluxbaseASGIMiddleware",
    "WebhookEndpoint",
    "read_body",
    "scope_headers",
    "scope_request_headers",
    "send_outcome",
    "webhook_endpoint",
    "webhook_routes",
]

logger = logging.getLogger(__name__)


def scope_headers(scope: Scope) -> list[tuple[str, str]]:
    """The request headers of an ASGI ``scope`` as ``(name, value)`` strings."""
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]


_READ_NAMES = {name.encode("latin-1"): name for name in READ_HEADERS}


def scope_request_headers(scope: Scope) -> RequestHeaders:
    """The request headers of an ASGI ``scope`` that the receiver reads, decoded and
    lowercased in one pass, a repeated header's values joined with ``", "`` (what
    :func:`~fluxbase_receiver.receiver.request_headers` gives for :func:`scope_headers`,
    without the headers the receiver does not read)."""
    headers = RequestHeaders()
    for raw_name, raw_value in scope["headers"]:
        name = _READ_NAMES.get(raw_name) or _READ_NAMES.get(raw_name.lower())
        if name is not None:
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


async def read_body(
    receive: Receive, method: str, headers: Headers, receiver: Receiver
) -> bytes | Outcome:
    """The body, read message by message; the 405/413/415 refusal instead when there is one.

    Reading stops at the first chunk past ``receiver.max_body_bytes``: the rest of an
    oversized upload is never read. Raises ``ClientDisconnect`` if the client goes away.
    """
    refusal = receiver.precheck(method, headers)
    if refusal is not None:
        return refusal
    return await _read(receive, await receive(), receiver.max_body_bytes)


async def _read(receive: Receive, message: Message, limit: int) -> bytes | Outcome:
    """The body that ``message`` starts, read on up to ``limit``; the 413 refusal past it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        message = await receive()


async def send_outcome(send: Send, outcome: Outcome) -> None:
    """Answer with ``outcome``: its status, ``application/json`` and its JSON body."""
    answer = outcome.body_bytes()
    headers = _headers(outcome, answer)
    await send({"type": "http.response.start", "status": outcome.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


_HEADERS: dict[tuple[int, int], tuple[tuple[bytes, bytes], ...]] = {}


def _headers(outcome: Outcome, answer: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """The raw response headers for ``outcome`` answering ``answer``: :func:`response_headers`
    (which depend on the status alone) and the length, encoded once per status and length."""
    key = (outcome.status, len(answer))
    headers = _HEADERS.get(key)
    if headers is None:
        pairs = [*response_headers(outcome).items(), ("Content-Length", str(len(answer)))]
        headers = tuple((name.lower().encode(), value.encode()) for name, value in pairs)
        if len(_HEADERS) < 256:
            _HEADERS[key] = headers
    return headers


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
        self._after_handlers = respond == "after_handlers"

    def __repr__(self) -> str:
        return f"<WebhookEndpoint respond={self.respond!r} deadline={self.deadline!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        REQUEST_PATH.set(scope["path"])  # for refusal records, in this request's task
        receiver = self.receiver
        method = scope["method"]
        headers = scope_request_headers(scope)
        message = await receive()
        body = message.get("body", b"")
        if message.get("more_body") or not body or len(body) > receiver.max_body_bytes:
            # not the whole body at once: refuse what can be refused before reading on
            refusal = receiver.precheck(method, headers)
            if refusal is None:
                try:
                    body = await _read(receive, message, receiver.max_body_bytes)
                except ClientDisconnect:
                    logger.info("webhook client disconnected before sending the whole body")
                    return
                refusal = body if isinstance(body, Outcome) else None
            if refusal is not None:
                await send_outcome(send, refusal)
                return
        if self._after_handlers:  # the core runs every check on a whole body (405, 413, 415...)
            outcome = await receiver.handle_async(body, headers, method, deadline=self.deadline)
            await send_outcome(send, outcome)
            return
        admitted = await receiver.admit_async(body, headers, method)
        if isinstance(admitted, Outcome):
            await send_outcome(send, admitted)
            return
        await send_outcome(send, accepted(admitted.event))
        await self._process(admitted)  # after the answer, as a Starlette background task

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


def webhook_routes(
    path: str,
    receiver: Receiver,
    *,
    respond: Respond = "after_handlers",
    deadline: float | None = None,
) -> list[Route]:
    """Routes for ``path`` with and without a trailing slash, sharing one endpoint."""
    endpoint = WebhookEndpoint(receiver, respond=respond, deadline=deadline)
    return [Route(variant, endpoint) for variant in sorted(path_variants(path))]


class FluxbaseASGIMiddleware:
    """Receives webhooks on ``path`` (with or without a trailing slash) and passes every
    other request to ``app``."""

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
        self._paths = path_variants(path)
        self.endpoint = WebhookEndpoint(receiver, respond=respond, deadline=deadline)
        self._answer = self.endpoint.__call__  # called bound: cheaper than through the instance

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self._paths:
            await self._answer(scope, receive, send)
        else:
            await self.app(scope, receive, send)
