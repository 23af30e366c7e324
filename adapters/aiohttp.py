"""aiohttp: a request handler for the router, and a middleware.

Usage::

    import os

    from aiohttp import web

    from fluxbase_receiver import Receiver, WebhookEvent
    from fluxbase_receiver.adapters.aiohttp import webhook_routes

    receiver = Receiver(secret=os.environ["FLUXBASE_WEBHOOK_SECRET"])

    @receiver.on("orders", "INSERT", "UPDATE")
    async def on_order(event: WebhookEvent) -> None:
        ...

    app = web.Application()
    app.add_routes(webhook_routes("/webhooks/fluxbase", receiver))  # with and without "/"

or in front of the application's own routes (every other path passes through)::

    app = web.Application(middlewares=[webhook_middleware(receiver, path="/webhooks/fluxbase")])

``webhook_handler(receiver)`` is the handler itself, for ``app.router.add_route("*", path,
...)``. It answers 405 for anything but POST; routes and middleware take the path with and
without a trailing slash (a sender counts a 404 as a failed delivery).

The body is streamed: a declared ``Content-Length`` over ``receiver.max_body_bytes`` is
refused before reading, and any other body with 413 as soon as it passes the limit,
without reading the rest. (aiohttp's own ``client_max_size`` applies to ``request.read()``,
which this adapter does not call.) Async handlers are awaited; sync handlers run in a
worker thread (register them with ``threaded=False`` to run inline).

Respond quickly: ``respond="immediately"`` answers 202 right after verify + idempotency
claim and runs the handlers in a task after the answer; ``deadline=2.0`` answers 202 once
the handlers take longer than 2 s and lets them finish. Background failures are logged and
release the claim, but the sender already got a 2xx and will not retry: work is lost if the
process dies (or a handler fails) before the handlers end.
"""

from __future__ import annotations

import logging

try:
    from aiohttp import web
    from aiohttp.http_exceptions import HttpProcessingError
    from aiohttp.typedefs import Handler, Middleware
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "fluxbase_receiver.adapters.aiohttp needs aiohttp: pip install 'fluxbase-receiver[aiohttp]'"
    ) from error

from fluxbase_receiver._logcontext import REQUEST_PATH
from fluxbase_receiver.adapters._common import (
    Respond,
    answer_async,
    check_respond,
    cut_short,
    path_variants,
    response_headers,
    too_large,
)
from fluxbase_receiver.receiver import Headers, Outcome, Receiver

__all__ = [
    "read_body",
    "to_response",
    "webhook_handler",
    "webhook_middleware",
    "webhook_routes",
]

logger = logging.getLogger(__name__)


def to_response(outcome: Outcome) -> web.Response:
    """The response for an :class:`Outcome` (JSON body, its status)."""
    return web.Response(
        body=outcome.body_bytes(), status=outcome.status, headers=response_headers(outcome)
    )


async def read_body(request: web.Request, receiver: Receiver, headers: Headers) -> bytes | Outcome:
    """The body, read chunk by chunk; the 405/413/415 refusal instead when there is one.

    Reading stops at the first chunk past ``receiver.max_body_bytes``: the rest of an
    oversized upload is never read. A body cut short (the client went away) is a 400.
    """
    refusal = receiver.precheck(request.method, headers, request.content_length)
    if refusal is not None:
        return refusal
    limit = receiver.max_body_bytes
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                return too_large(limit)
            chunks.append(chunk)
    except (ConnectionError, HttpProcessingError):
        logger.info("webhook client disconnected before sending the whole body")
        return cut_short()
    return b"".join(chunks)


def webhook_handler(
    receiver: Receiver, *, respond: Respond = "after_handlers", deadline: float | None = None
) -> Handler:
    """The handler that receives Fluxbase webhooks with ``receiver``, for
    ``app.router.add_route("*", path, webhook_handler(receiver))``."""
    check_respond(respond, deadline)

    async def fluxbase_webhook(request: web.Request) -> web.StreamResponse:
        path = REQUEST_PATH.set(request.path)  # named in refusal records
        try:
            headers = list(request.headers.items())
            body = await read_body(request, receiver, headers)
            if isinstance(body, Outcome):
                return to_response(body)
            return to_response(await answer_async(receiver, body, headers, respond, deadline))
        finally:
            REQUEST_PATH.reset(path)

    return fluxbase_webhook


def webhook_routes(
    path: str,
    receiver: Receiver,
    *,
    respond: Respond = "after_handlers",
    deadline: float | None = None,
) -> list[web.RouteDef]:
    """Routes (every method) for ``path`` with and without a trailing slash, sharing one
    handler, for ``app.add_routes``."""
    handler = webhook_handler(receiver, respond=respond, deadline=deadline)
    return [web.route("*", variant, handler) for variant in sorted(path_variants(path))]


def webhook_middleware(
    receiver: Receiver,
    *,
    path: str = "/webhooks/fluxbase",
    respond: Respond = "after_handlers",
    deadline: float | None = None,
) -> Middleware:
    """A middleware that receives webhooks on ``path`` (with or without a trailing slash)
    and passes every other request on."""
    webhook = webhook_handler(receiver, respond=respond, deadline=deadline)
    paths = path_variants(path)

    @web.middleware
    async def fluxbase_webhooks(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in paths:
            return await webhook(request)
        return await handler(request)

    return fluxbase_webhooks
