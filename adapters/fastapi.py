"""FastAPI: a plain route for the receiver's handlers, or a dependency that yields the
verified, typed event to your route function.

The receiver's handlers (registered with ``receiver.on``) on a plain route::

    import os

    from fastapi import FastAPI

    from fluxbase_receiver import Receiver, WebhookEvent
    from fluxbase_receiver.adapters.fastapi import add_webhook_route

    app = FastAPI()
    receiver = Receiver(secret=os.environ["FLUXBASE_WEBHOOK_SECRET"])

    @receiver.on("orders", "INSERT", "UPDATE")
    async def on_order(event: WebhookEvent) -> None:
        ...

    add_webhook_route(app, "/webhooks/fluxbase", receiver)  # an app or an APIRouter

The route takes the path with and without a trailing slash (the second hidden from the
OpenAPI document), is documented like any FastAPI route (the event body, the signature
header, every answer) and sends its requests straight to the Starlette endpoint
(:class:`~fluxbase_receiver.adapters.starlette.WebhookEndpoint`): it answers exactly as
the Starlette adapter does (405 in the webhook's JSON shape too) and takes its ``respond``
and ``deadline`` options. FastAPI's request handling does not run for it, so neither do
dependencies: this is the fast form, adding less to a request than a bare FastAPI endpoint
costs by itself.

The dependency, for a route function of yours that takes the event::

    import os
    from typing import Annotated

    from fastapi import FastAPI
    from pydantic import BaseModel

    from fluxbase_receiver import InsertEvent, Receiver, UpdateEvent
    from fluxbase_receiver.adapters.fastapi import FluxbaseWebhook, install_exception_handler

    class Order(BaseModel):
        id: int
        status: str

    app = FastAPI()
    install_exception_handler(app)  # refusals answer {"error": ..., "message": ...}
    receiver = Receiver(secret=os.environ["FLUXBASE_WEBHOOK_SECRET"])
    webhook = FluxbaseWebhook(receiver, "orders", "INSERT", "UPDATE", model=Order)
    OrderEvent = Annotated[InsertEvent[Order] | UpdateEvent[Order], webhook.depends]

    @webhook.post(app, "/webhooks/fluxbase")  # app.post(...) for the path with and without "/"
    async def orders(event: OrderEvent) -> dict[str, bool]:
        ...
        return {"ok": True}

The table pattern and operations filter like ``receiver.on`` (default INSERT, UPDATE and
DELETE; TEST only when named). Any other event is answered ``200 {"ok": true, "skipped":
true}`` without running the route function (the receiver's own handlers still run, and
the claim is settled as for any event), so the sender does not retry it.
``webhook.post(app_or_router, path)`` registers the route for ``path`` and, hidden from
the OpenAPI document, ``path + "/"``: a URL configured with a trailing slash reaches the
route instead of a 307 redirect, which a sender counts as a failed delivery.

Refusals (400, 401, 409, 413, 415), a duplicate and a skipped event are raised as
:class:`WebhookAnswered` before the route function runs; with
:func:`install_exception_handler` they answer exactly as the other adapters do. FastAPI
answers 405 itself for methods the route does not list (``{"detail": "Method Not Allowed"}``).

Idempotency: the route function is a handler. The receiver's registered handlers run first;
the claim is completed when they and the route function succeed, and released when any of
them raises (a route function's exception answers 500 without its text and is logged), so a
redelivery runs them again. This happens when the route function ends, before the response
is sent (the dependency registers the settling on the request's function-scoped exit stack,
as a ``Depends(..., scope="function")`` dependency with ``yield`` would, for less).

The dependency costs more than the plain route: FastAPI's own ``Depends`` machinery (solving
the dependency, its exit stack) adds about as much as the core's whole work per request
(0.7x to 1.1x of it on the machines measured) by itself, before the dependency does
anything (``python bench/adapters.py`` prints it). Use it when the route function needs
the event; otherwise use :func:`add_webhook_route`, which also answers early
(``respond="immediately"``, ``deadline``) when asked.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, TypeVar, cast

try:
    from anyio import CancelScope
    from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
    from fastapi.params import Depends as DependsParam
    from fastapi.routing import APIRoute
    from pydantic import TypeAdapter
    from starlette.requests import ClientDisconnect
    from starlette.responses import Response
    from starlette.types import Receive, Scope, Send
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "fluxbase_receiver.adapters.fastapi needs FastAPI: pip install 'fluxbase-receiver[fastapi]'"
    ) from error

from fluxbase_receiver._logcontext import REQUEST_PATH
from fluxbase_receiver.adapters._common import (
    Respond,
    path_variants,
    response_headers,
    skipped,
    view_failed,
)
from fluxbase_receiver.adapters.starlette import (
    WebhookEndpoint,
    read_body,
    scope_request_headers,
)
from fluxbase_receiver.errors import InvalidPayload
from fluxbase_receiver.events import OPERATIONS, EventFilter, WebhookEvent, event_type
from fluxbase_receiver.receiver import Admitted, Outcome, Receiver, check_model
from fluxbase_receiver.signature import SIGNATURE_HEADER

__all__ = [
    "FluxbaseWebhook",
    "WebhookAnswered",
    "WebhookRoute",
    "add_webhook_route",
    "install_exception_handler",
    "openapi_for",
]

RouteFunction = TypeVar("RouteFunction", bound=Callable[..., Any])

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    "required": ["error", "message"],
}
_ANSWERS = {
    200: (
        'Handled; or a duplicate of a completed event (`{"ok": true, "duplicate": true}`, '
        "nothing ran); or an event this route does not take "
        '(`{"ok": true, "skipped": true}`, the route function did not run).'
    ),
    202: (
        "Accepted before the work finished (a route function may answer 202 itself, e.g. "
        "after queueing the event). A sender counts any 2xx as delivered."
    ),
}
_REFUSALS = {
    400: "The body is not JSON, or not a valid Fluxbase event.",
    401: f"The {SIGNATURE_HEADER} header is missing, malformed, stale or does not match.",
    409: "The same event is being handled right now; retry later.",
    413: "The body is larger than the receiver's limit.",
    415: "A Content-Type other than JSON was sent.",
    500: "A handler raised (the message does not include the exception).",
}

_ROUTE_ANSWERS = {
    200: 'Handled; or a duplicate of a completed event (`{"ok": true, "duplicate": true}`, '
    "nothing ran).",
}
_EARLY_ANSWER = {
    202: 'Accepted (`{"ok": true, "accepted": true}`): answered before the handlers finished. '
    "A sender counts any 2xx as delivered.",
}
_ROUTE_REFUSALS = {**_REFUSALS, 405: "A method other than POST."}


class WebhookAnswered(HTTPException):
    """The webhook was answered before the route function ran: a refusal or a duplicate."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.status, outcome.body)
        self.outcome = outcome


async def _answer(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WebhookAnswered)  # registered for this class only
    outcome = exc.outcome
    return Response(outcome.body_bytes(), outcome.status, response_headers(outcome))


def install_exception_handler(app: FastAPI) -> None:
    """Answer :class:`WebhookAnswered` with the core's status and JSON body."""
    app.add_exception_handler(WebhookAnswered, _answer)


class WebhookRoute(APIRoute):
    """A route FastAPI documents like its own whose requests go straight to the receiver's
    ASGI endpoint (:class:`~fluxbase_receiver.adapters.starlette.WebhookEndpoint`), past
    FastAPI's request handling: no dependencies run for it. Methods other than POST reach
    the endpoint too, which answers them 405 in the webhook's JSON shape."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await cast(_Documented, self.endpoint).webhook(scope, receive, send)


class _Documented:
    # The endpoint a WebhookRoute is documented by, never called: no parameters, a name
    # and a description for OpenAPI, and the ASGI endpoint that answers instead.

    __name__ = "receive_fluxbase_webhook"
    __doc__ = (
        "A Fluxbase database webhook: the signed event is verified, deduplicated and handed "
        "to the receiver's handlers."
    )

    def __init__(self, webhook: WebhookEndpoint) -> None:
        self.webhook = webhook

    async def __call__(self) -> None:  # pragma: no cover - WebhookRoute.handle answers
        raise RuntimeError("a webhook route answers through its ASGI endpoint")


def add_webhook_route(
    router: FastAPI | APIRouter,
    path: str,
    receiver: Receiver,
    *,
    respond: Respond = "after_handlers",
    deadline: float | None = None,
    **options: Any,
) -> None:
    """Receive webhooks on ``path`` (with and without a trailing slash, the second hidden
    from OpenAPI) with the handlers registered by ``receiver.on``, as a plain route: no
    dependency, and the answers, body and header documented in OpenAPI.

    ``respond`` and ``deadline`` are the Starlette endpoint's; ``options`` go to the route
    (``tags``, ``summary``, ``operation_id``...).
    """
    documented = _Documented(WebhookEndpoint(receiver, respond=respond, deadline=deadline))
    early = respond == "immediately" or deadline is not None
    openapi = _openapi(
        event_type(None, OPERATIONS),
        {**_ROUTE_ANSWERS, **(_EARLY_ANSWER if early else {})},
        _ROUTE_REFUSALS,
    )
    target = router.router if isinstance(router, FastAPI) else router
    shown = options.pop("include_in_schema", True)
    variants = sorted(path_variants(path), key=lambda variant: (variant != path, variant))
    for variant in variants:
        target.add_api_route(
            variant,
            documented,
            methods=["POST"],
            route_class_override=WebhookRoute,
            include_in_schema=shown and variant == variants[0],
            **openapi,
            **options,
        )


class FluxbaseWebhook:
    """The dependency: verifies, parses (records as ``model``), claims, runs the receiver's
    handlers, then gives the event to the route function and settles the claim when the
    route function ends."""

    def __init__(
        self,
        receiver: Receiver,
        table: str = "*",
        *operations: str,
        model: type[Any] | None = None,
    ) -> None:
        if model is not None:
            check_model(model)
        self.receiver = receiver
        self.route = EventFilter(table, *operations)
        """The events the route function runs for (as in ``receiver.on``)."""
        self.model = model
        self._async_store = receiver.store is not None and inspect.iscoroutinefunction(
            receiver.store.complete
        )
        self.depends: DependsParam = Depends(self)
        """``Depends(webhook)``, for the route function's parameters or ``dependencies``."""
        self.openapi: dict[str, Any] = openapi_for(model, self.route)
        """``responses`` and ``openapi_extra`` for the route decorator (``**webhook.openapi``)."""

    def __repr__(self) -> str:
        model = getattr(self.model, "__name__", None)
        return f"<FluxbaseWebhook {self.route!r} model={model!r}>"

    def post(
        self, router: FastAPI | APIRouter, path: str, **options: Any
    ) -> Callable[[RouteFunction], RouteFunction]:
        """Register the decorated route function with ``router.post`` for ``path`` with and
        without a trailing slash (the second hidden from OpenAPI), with ``**self.openapi``."""
        documented, *hidden = sorted(path_variants(path), key=lambda v: (v != path, v))

        def register(func: RouteFunction) -> RouteFunction:
            router.post(documented, **self.openapi, **options)(func)
            for variant in hidden:
                router.post(variant, **self.openapi, **options, include_in_schema=False)(func)
            return func

        return register

    async def __call__(self, request: Request) -> WebhookEvent:
        REQUEST_PATH.set(request.scope["path"])  # for refusal records, in this request's task
        receiver = self.receiver
        headers = scope_request_headers(request.scope)
        try:
            body = await read_body(request.receive, request.method, headers, receiver)
        except ClientDisconnect:  # nobody to answer; no server error either
            raise WebhookAnswered(
                Outcome.refuse(InvalidPayload("the body never arrived"))
            ) from None
        if isinstance(body, Outcome):
            raise WebhookAnswered(body)
        admitted = await receiver.admit_async(body, headers, model=self.model, route=self.route)
        if isinstance(admitted, Outcome):
            raise WebhookAnswered(admitted)
        if not self.route.accepts(admitted.event):  # the receiver's handlers run; the route not
            outcome = await receiver.process_async(admitted)
            raise WebhookAnswered(skipped(admitted.event) if outcome.ok else outcome)
        try:
            outcome = await receiver.process_async(admitted, settle=False)
        except BaseException:
            await receiver.settle_async(admitted, ok=False)
            raise
        if not outcome.ok:
            await receiver.settle_async(admitted, ok=False)
            raise WebhookAnswered(outcome)
        function_exits: AsyncExitStack = request.scope["fastapi_function_astack"]
        function_exits.push_async_exit(_Settle(receiver, admitted, self._async_store))
        return admitted.event


class _Settle:
    """Settles a claim when the route function that took its event ends: completed when it
    returned, released when it raised (an exception other than ``HTTPException`` answers
    500 without its text, and is logged). An async store is awaited shielded from
    cancellation, so a cancelled request still settles its claim."""

    def __init__(self, receiver: Receiver, admitted: Admitted, shielded: bool) -> None:
        self.receiver = receiver
        self.admitted = admitted
        self.shielded = shielded

    async def __call__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        failed = None
        if isinstance(error, Exception) and not isinstance(error, HTTPException):
            failed = WebhookAnswered(view_failed(self.admitted.event, error))
        if self.shielded:
            with CancelScope(shield=True):
                await self.receiver.settle_async(self.admitted, ok=error is None)
        else:  # nothing to await: settled at once
            await self.receiver.settle_async(self.admitted, ok=error is None)
        if failed is not None:
            raise failed from None
        return False


def openapi_for(model: type[Any] | None = None, route: EventFilter | None = None) -> dict[str, Any]:
    """Route decorator arguments documenting the webhook: its body (the events ``route``
    takes, records typed as ``model``), header and answers."""
    operations = (route or EventFilter()).operations
    return _openapi(event_type(model, operations), _ANSWERS, _REFUSALS)


def _openapi(events: Any, answers: dict[int, str], refusals: dict[int, str]) -> dict[str, Any]:
    """``responses`` and ``openapi_extra`` for a webhook route taking ``events``."""
    schema = TypeAdapter(events).json_schema()
    defs = schema.pop("$defs", {})
    responses: dict[int | str, dict[str, Any]] = {
        status: {"description": text} for status, text in answers.items()
    }
    responses.update(
        (status, {"description": text, "content": {"application/json": {"schema": _ERROR_SCHEMA}}})
        for status, text in sorted(refusals.items())
    )
    return {
        "responses": responses,
        "openapi_extra": {
            "parameters": [
                {
                    "name": SIGNATURE_HEADER,
                    "in": "header",
                    "required": True,
                    "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<body>'>",
                    "schema": {"type": "string"},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _inline(schema, defs, ())}},
            },
        },
    }


def _inline(node: Any, defs: dict[str, Any], expanding: tuple[str, ...]) -> Any:
    """``node`` with every ``#/$defs/...`` reference replaced by its definition
    (the union's ``discriminator`` mapping names ``$defs`` too, so it is dropped)."""
    if isinstance(node, list):
        return [_inline(item, defs, expanding) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: value for key, value in node.items() if key != "discriminator"}  # refs $defs
    ref = node.get("$ref", "")
    if ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in expanding:  # a recursive model: stop here
            return {"type": "object"}
        return _inline(defs[name], defs, (*expanding, name))
    return {key: _inline(value, defs, expanding) for key, value in node.items()}
