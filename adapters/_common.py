"""Pieces every adapter shares: the respond options, response headers, the answers for a
cut-short body and for a view or route function that failed, and running handlers after an
early answer.
Claims are settled with the core's ``Receiver.settle`` / ``Receiver.settle_async``."""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Literal, TypeAlias

from fluxbase_receiver._logcontext import REQUEST_PATH, event_context
from fluxbase_receiver.errors import HandlerError, InvalidPayload, PayloadTooLarge
from fluxbase_receiver.events import WebhookEvent
from fluxbase_receiver.receiver import (
    EVENT_ID_HEADER,
    Admitted,
    Headers,
    Outcome,
    Receiver,
    accepted,
)
from fluxbase_receiver.signature import LEGACY_SIGNATURE_HEADER, SIGNATURE_HEADER

logger = logging.getLogger(__name__)

Respond: TypeAlias = Literal["after_handlers", "immediately"]
"""When to answer: after the handlers ran (default), or right after verify + claim (202)."""

JSON = "application/json"

READ_HEADERS = tuple(
    name.lower()
    for name in (
        "Content-Type",
        "Content-Length",
        SIGNATURE_HEADER,
        LEGACY_SIGNATURE_HEADER,
        EVENT_ID_HEADER,
    )
)
"""The request headers ``Receiver`` reads, by lowercase name: an adapter passes only these."""

STATUS_LINES: dict[int, str] = {
    status.value: f"{status.value} {status.phrase}" for status in HTTPStatus
}
"""``"200 OK"`` and the like, by status code."""


def check_respond(respond: Respond, deadline: float | None) -> None:
    """Refuse option combinations that cannot work."""
    if respond not in ("after_handlers", "immediately"):
        raise ValueError(f"respond must be 'after_handlers' or 'immediately', not {respond!r}")
    if deadline is not None and (respond == "immediately" or deadline <= 0):
        raise ValueError("deadline needs respond='after_handlers' and a positive number of seconds")


def path_variants(path: str) -> frozenset[str]:
    """``path`` without and with a trailing slash (``/hooks`` and ``/hooks/``): a webhook URL
    configured either way must reach the handler, never a 404 or a redirect."""
    bare = path.rstrip("/")
    return frozenset((bare or "/", bare + "/"))


def skipped(event: WebhookEvent) -> Outcome:
    """The 200 answer for an event a single-route adapter's filter does not take."""
    return Outcome(200, {"ok": True, "skipped": True}, event)


def too_large(limit: int) -> Outcome:
    """The 413 refusal for a body that passed ``limit`` while it was being read."""
    path = REQUEST_PATH.get()
    logger.warning(
        "webhook refused with 413 at %s: payload_too_large",
        path or "?",
        extra=event_context(None, status=413, reason="payload_too_large", path=path),
    )
    return Outcome.refuse(PayloadTooLarge(f"body exceeds {limit} bytes"))


def cut_short() -> Outcome:
    """The 400 refusal for a body that ended early or could not be read."""
    return Outcome.refuse(InvalidPayload("the body ended before its Content-Length"))


def response_headers(outcome: Outcome) -> dict[str, str]:
    """``Content-Type: application/json``, plus ``Allow: POST`` on a 405."""
    if outcome.status == 405:
        return {"Content-Type": JSON, "Allow": "POST"}
    return {"Content-Type": JSON}


def view_failed(event: WebhookEvent, error: Exception) -> Outcome:
    """The 500 answer when the view or route function that handles the event raised."""
    logger.error(
        "webhook view failed for %s on %s",
        event.event,
        event.qualified_table,
        exc_info=(type(error), error, error.__traceback__),
        extra=event_context(event, status=500),
    )
    return Outcome.refuse(HandlerError("the webhook view failed", (error,)), event)


_BACKGROUND: set[asyncio.Task[None]] = set()


async def answer_async(
    receiver: Receiver,
    body: bytes,
    headers: Headers,
    respond: Respond,
    deadline: float | None,
) -> Outcome:
    """The core's answer for an async adapter, as ``respond`` asks: after the handlers (202
    past ``deadline``), or right after the claim with the handlers run in a task of the
    running event loop (their failures are logged and release the claim)."""
    if respond == "after_handlers":
        return await receiver.handle_async(body, headers, deadline=deadline)
    admitted = await receiver.admit_async(body, headers)
    if isinstance(admitted, Outcome):
        return admitted
    task = asyncio.get_running_loop().create_task(_process(receiver, admitted))
    _BACKGROUND.add(task)  # the loop keeps only a weak reference
    task.add_done_callback(_BACKGROUND.discard)
    return accepted(admitted.event)


async def _process(receiver: Receiver, admitted: Admitted) -> None:
    try:
        await receiver.process_async(admitted)
    except Exception:
        logger.exception("background webhook processing failed")
