"""Django: a CSRF-exempt webhook view, its URL patterns, and a view decorator.

Usage (``urls.py``)::

    from fluxbase_receiver.adapters.django import webhook_urls

    from .webhooks import receiver  # a Receiver with its handlers registered

    urlpatterns = [
        *webhook_urls("webhooks/fluxbase", receiver),  # with and without the trailing slash
    ]

Under an ASGI server (uvicorn, daphne) pass ``asynchronous=True`` for an async view: async
handlers are awaited, sync ones run in a worker thread (a sync view would be serialised
with every other sync view in Django's one thread). ``webhook_endpoint(receiver)`` is the
view itself, for your own ``path(...)``; it answers 405 for anything but POST.

Or decorate your own view, sync or async, which gets the request and the verified (typed)
event and may return any response (``None`` answers ``{"ok": true}``). ``webhook_view``
filters like ``receiver.on``: a table pattern and operations (default INSERT, UPDATE,
DELETE; TEST only when named); any other event is answered ``200 {"ok": true, "skipped":
true}`` without running the view (the receiver's own handlers still run, and the claim is
settled as for any event)::

    @webhook_view(receiver, "orders", "INSERT", "UPDATE", model=Order)
    def orders(request: HttpRequest, event: InsertEvent[Order] | UpdateEvent[Order]):
        ...

    urlpatterns = [path("webhooks/orders", orders), path("webhooks/orders/", orders)]

The view runs under the idempotency claim, after the receiver's handlers: the claim is
completed when both succeed and released when either raises (the view's exception answers
500 and is logged), so a redelivery runs them again. Every view here is CSRF-exempt: the
signature authenticates the request.

The body is Django's ``request.body`` (still readable by the view), so
``DATA_UPLOAD_MAX_MEMORY_SIZE`` applies as well as ``receiver.max_body_bytes`` (the smaller
wins). A declared ``Content-Length`` over the limit is refused before reading. Under WSGI
Django reads a body without ``Content-Length`` (chunked) as empty; this adapter reads it
from the server's stream instead, at most limit + 1 bytes. Under ASGI Django buffers the
whole upload before any view runs; keep ``DATA_UPLOAD_MAX_MEMORY_SIZE`` set (Django's
default is 2.5 MiB) so no more than that is read into memory.

Respond quickly (async views under ASGI only): ``respond="immediately"`` answers 202 right
after verify + idempotency claim and runs the handlers after the answer; ``deadline=2.0``
answers 202 once the handlers take longer than 2 s and lets them finish. Background
failures are logged and release the claim, but the sender already got a 2xx and will not
retry: work is lost if the process dies (or a handler fails) before the handlers end.
Under WSGI there is no event loop left to finish them, so these views answer after the
handlers there.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

try:
    from django.conf import settings
    from django.core.exceptions import RequestDataTooBig
    from django.core.handlers.asgi import ASGIRequest
    from django.http import HttpRequest, HttpResponse, UnreadablePostError
    from django.urls import URLPattern, path
    from django.views.decorators.csrf import csrf_exempt
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "fluxbase_receiver.adapters.django needs Django: pip install 'fluxbase-receiver[django]'"
    ) from error

from fluxbase_receiver._logcontext import REQUEST_PATH
from fluxbase_receiver.adapters._common import (
    Respond,
    answer_async,
    check_respond,
    cut_short,
    path_variants,
    response_headers,
    skipped,
    too_large,
    view_failed,
)
from fluxbase_receiver.events import EventFilter
from fluxbase_receiver.receiver import (
    Headers,
    Outcome,
    Receiver,
    check_model,
)

__all__ = [
    "read_body",
    "request_headers",
    "to_response",
    "webhook_endpoint",
    "webhook_urls",
    "webhook_view",
]

View: TypeAlias = Callable[..., Any]
"""A Django view: ``view(request, *args, **kwargs)``, returning a response or awaitable one."""

_FRAMING = ("Content-Type", "Content-Length")


def request_headers(request: HttpRequest) -> list[tuple[str, str]]:
    """The request headers as ``(name, value)`` pairs (an empty framing header left out)."""
    items: list[tuple[str, str]] = list(request.headers.items())
    return [(name, value) for name, value in items if value or name not in _FRAMING]


def to_response(outcome: Outcome) -> HttpResponse:
    """The response for an :class:`Outcome` (JSON body, its status)."""
    return HttpResponse(
        outcome.body_bytes(), status=outcome.status, headers=response_headers(outcome)
    )


def read_body(request: HttpRequest, receiver: Receiver, headers: Headers) -> bytes | Outcome:
    """The body (``request.body``); the 405/413/415 refusal, or 400 for an unreadable body.

    The limit is the smaller of ``receiver.max_body_bytes`` and Django's
    ``DATA_UPLOAD_MAX_MEMORY_SIZE``. ``headers`` are the request's (:func:`request_headers`).
    """
    refusal = receiver.precheck(request.method or "GET", headers)
    if refusal is not None:
        return refusal
    own: int | None = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    limit = receiver.max_body_bytes if own is None else min(own, receiver.max_body_bytes)
    meta = request.META
    try:
        if "wsgi.input_terminated" in meta and not meta.get("CONTENT_LENGTH"):
            body: bytes = meta["wsgi.input"].read(limit + 1)  # Django would read nothing
        else:
            body = request.body
    except RequestDataTooBig:
        return too_large(limit)
    except (UnreadablePostError, OSError):
        return cut_short()
    return too_large(limit) if len(body) > limit else body


def webhook_endpoint(
    receiver: Receiver,
    *,
    asynchronous: bool = False,
    respond: Respond = "after_handlers",
    deadline: float | None = None,
) -> View:
    """The CSRF-exempt view that receives Fluxbase webhooks with ``receiver``: sync, or
    async with ``asynchronous=True`` (which ``respond`` and ``deadline`` need)."""
    check_respond(respond, deadline)
    if not asynchronous:
        if respond != "after_handlers" or deadline is not None:
            raise ValueError("respond='immediately' and deadline need asynchronous=True")

        def fluxbase_webhook(request: HttpRequest) -> HttpResponse:
            path = REQUEST_PATH.set(request.path)  # named in refusal records
            try:
                headers = request_headers(request)
                body = read_body(request, receiver, headers)
                if isinstance(body, Outcome):
                    return to_response(body)
                return to_response(receiver.handle(body, headers))
            finally:
                REQUEST_PATH.reset(path)

        return csrf_exempt(fluxbase_webhook)

    async def fluxbase_webhook_async(request: HttpRequest) -> HttpResponse:
        path = REQUEST_PATH.set(request.path)  # named in refusal records
        try:
            headers = request_headers(request)
            body = read_body(request, receiver, headers)
            if isinstance(body, Outcome):
                return to_response(body)
            if not isinstance(request, ASGIRequest):  # no loop outlives this request: answer after
                return to_response(await receiver.handle_async(body, headers))
            return to_response(await answer_async(receiver, body, headers, respond, deadline))
        finally:
            REQUEST_PATH.reset(path)

    return csrf_exempt(fluxbase_webhook_async)


def webhook_urls(
    route: str,
    receiver: Receiver,
    *,
    name: str = "fluxbase_webhook",
    asynchronous: bool = False,
    respond: Respond = "after_handlers",
    deadline: float | None = None,
) -> list[URLPattern]:
    """URL patterns for ``route`` (``"webhooks/fluxbase"``) with and without a trailing
    slash, sharing one :func:`webhook_endpoint` (the first is named ``name``)."""
    view = webhook_endpoint(receiver, asynchronous=asynchronous, respond=respond, deadline=deadline)
    variants = sorted(variant[1:] for variant in path_variants("/" + route.strip("/")))
    return [
        path(variant, view, name=name if index == 0 else None)
        for index, variant in enumerate(variants)
    ]


def webhook_view(
    receiver: Receiver, table: str = "*", *operations: str, model: type[Any] | None = None
) -> Callable[[View], View]:
    """Decorate a sync or async view that takes the request and the verified event (records
    typed as ``model``) first; the result is CSRF-exempt.

    ``table`` and ``operations`` select the events the view runs for, as in
    :meth:`Receiver.on`; any other event answers ``200 {"ok": true, "skipped": true}``.
    """
    route = EventFilter(table, *operations)
    if model is not None:
        check_model(model)

    def decorate(view: View) -> View:
        if inspect.iscoroutinefunction(view):
            return csrf_exempt(functools.wraps(view)(_async_wrapper(receiver, route, model, view)))
        return csrf_exempt(functools.wraps(view)(_sync_wrapper(receiver, route, model, view)))

    return decorate


def _sync_wrapper(
    receiver: Receiver, route: EventFilter, model: type[Any] | None, view: View
) -> Callable[..., HttpResponse]:
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        path = REQUEST_PATH.set(request.path)  # named in refusal records
        try:
            headers = request_headers(request)
            body = read_body(request, receiver, headers)
            if isinstance(body, Outcome):
                return to_response(body)
            admitted = receiver.admit(body, headers, model=model, route=route)
            if isinstance(admitted, Outcome):
                return to_response(admitted)
            if not route.accepts(admitted.event):  # the receiver's handlers run; the view not
                outcome = receiver.process(admitted)
                return to_response(skipped(admitted.event) if outcome.ok else outcome)
            ok = False
            try:
                outcome = receiver.process(admitted, settle=False)
                if not outcome.ok:
                    return to_response(outcome)
                try:
                    result = view(request, admitted.event, *args, **kwargs)
                except Exception as error:
                    return to_response(view_failed(admitted.event, error))
                ok = True
                return to_response(outcome) if result is None else result
            finally:
                receiver.settle(admitted, ok)
        finally:
            REQUEST_PATH.reset(path)

    return wrapper


def _async_wrapper(
    receiver: Receiver,
    route: EventFilter,
    model: type[Any] | None,
    view: Callable[..., Awaitable[Any]],
) -> Callable[..., Awaitable[HttpResponse]]:
    async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        path = REQUEST_PATH.set(request.path)  # named in refusal records
        try:
            headers = request_headers(request)
            body = read_body(request, receiver, headers)
            if isinstance(body, Outcome):
                return to_response(body)
            admitted = await receiver.admit_async(body, headers, model=model, route=route)
            if isinstance(admitted, Outcome):
                return to_response(admitted)
            if not route.accepts(admitted.event):  # the receiver's handlers run; the view not
                outcome = await receiver.process_async(admitted)
                return to_response(skipped(admitted.event) if outcome.ok else outcome)
            ok = False
            try:
                outcome = await receiver.process_async(admitted, settle=False)
                if not outcome.ok:
                    return to_response(outcome)
                try:
                    result = await view(request, admitted.event, *args, **kwargs)
                except Exception as error:
                    return to_response(view_failed(admitted.event, error))
                ok = True
                return to_response(outcome) if result is None else result
            finally:
                await receiver.settle_async(admitted, ok)
        finally:
            REQUEST_PATH.reset(path)

    return wrapper
