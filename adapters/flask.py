"""Flask: a one-line registration on an app or Blueprint, and a view decorator.

Usage::

    import os

    from flask import Flask

    from fluxbase_receiver import Receiver
    from fluxbase_receiver.adapters.flask import FluxbaseWebhooks, webhook_view

    app = Flask(__name__)
    receiver = Receiver(secret=os.environ["FLUXBASE_WEBHOOK_SECRET"])

    @receiver.on("orders", "INSERT")
    def on_order(event): ...

    FluxbaseWebhooks(app, receiver)  # POST /webhooks/fluxbase (or .../fluxbase/) runs them

With an application factory or a Blueprint::

    webhooks = FluxbaseWebhooks(None, receiver, url="/fluxbase")
    webhooks.init_app(blueprint)

Or decorate your own view, which is handed the verified (typed) event and may return any
Flask response (``None`` answers ``{"ok": true}``); methods the route does not list get
Flask's own 405. ``webhook_view`` filters like ``receiver.on``: a table pattern and
operations (default INSERT, UPDATE, DELETE; TEST only when named). Any other event is
answered ``200 {"ok": true, "skipped": true}`` without running the view (the receiver's
own handlers still run, and the claim is settled as for any event), so the sender does
not retry it. End the rule with a slash and ``strict_slashes=False`` so the URL works
with and without one::

    @app.post("/webhooks/orders/", strict_slashes=False)
    @webhook_view(receiver, "orders", "INSERT", "UPDATE", model=Order)
    def orders(event: InsertEvent[Order] | UpdateEvent[Order]):
        ...

The body is read through werkzeug and stays cached on the request (``request.get_data()``
still works), at most to the smaller of ``receiver.max_body_bytes`` and Flask's
``MAX_CONTENT_LENGTH``. ``FluxbaseWebhooks`` takes its URL with or without a trailing
slash (a sender counts a 404 as a failed delivery), answers 405 itself for other methods and
takes the ``respond`` / ``deadline`` / ``workers`` options of
:class:`~fluxbase_receiver.adapters.wsgi.FluxbaseWSGIMiddleware`.

With ``webhook_view`` the view runs under the idempotency claim, after the receiver's
registered handlers: the claim is completed when both succeed and released when either
raises (the view's exception answers 500 and is logged), so a redelivery runs them again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec

try:
    from flask import Blueprint, Flask, Response, request
    from flask.typing import ResponseReturnValue
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "fluxbase_receiver.adapters.flask needs Flask: pip install 'fluxbase-receiver[flask]'"
    ) from error

from fluxbase_receiver._logcontext import REQUEST_PATH
from fluxbase_receiver.adapters._common import Respond, skipped, view_failed
from fluxbase_receiver.adapters.wsgi import (
    WSGIWebhookEndpoint,
    environ_request_headers,
    read_body,
    to_response,
)
from fluxbase_receiver.events import EventFilter
from fluxbase_receiver.receiver import Outcome, Receiver, check_model

__all__ = ["FluxbaseWebhooks", "webhook_view"]

P = ParamSpec("P")
View = Callable[Concatenate[Any, P], ResponseReturnValue | None]

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
"""Routed to the webhook view so it answers 405 in the webhook's JSON shape itself."""


class FluxbaseWebhooks:
    """Registers the webhook endpoint on a Flask app or Blueprint (now, or in ``init_app``)."""

    def __init__(
        self,
        app: Flask | Blueprint | None,
        receiver: Receiver,
        *,
        url: str = "/webhooks/fluxbase",
        endpoint: str = "fluxbase_webhook",
        respond: Respond = "after_handlers",
        deadline: float | None = None,
        workers: int = 4,
    ) -> None:
        self.receiver = receiver
        self.url = url
        self.endpoint = endpoint
        self._webhook = WSGIWebhookEndpoint(
            receiver, respond=respond, deadline=deadline, workers=workers
        )
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"<FluxbaseWebhooks url={self.url!r}>"

    def init_app(self, app: Flask | Blueprint) -> None:
        """Add the webhook URL rule to ``app`` (matching the URL with or without a trailing
        slash, never redirecting)."""
        app.add_url_rule(
            self.url.rstrip("/") + "/",
            self.endpoint,
            self._view,
            methods=METHODS,
            provide_automatic_options=False,
            strict_slashes=False,
        )

    def _view(self) -> ResponseReturnValue:
        current = request._get_current_object()  # type: ignore[attr-defined]
        path = REQUEST_PATH.set(current.path)  # for refusal records
        try:
            headers = environ_request_headers(current.environ)  # read once for every step
            body = read_body(current, self.receiver, headers)
            outcome = self._webhook.answer(body, headers) if isinstance(body, bytes) else body
        finally:
            REQUEST_PATH.reset(path)
        return to_response(outcome, Response)


def webhook_view(
    receiver: Receiver, table: str = "*", *operations: str, model: type[Any] | None = None
) -> Callable[[View[P]], Callable[P, ResponseReturnValue]]:
    """Decorate a view that takes the verified event (records typed as ``model``) first.

    ``table`` and ``operations`` select the events the view runs for, as in
    :meth:`Receiver.on`; any other event answers ``200 {"ok": true, "skipped": true}``.
    """
    route = EventFilter(table, *operations)
    if model is not None:
        check_model(model)

    def decorate(view: View[P]) -> Callable[P, ResponseReturnValue]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
            current = request._get_current_object()  # type: ignore[attr-defined]
            path = REQUEST_PATH.set(current.path)  # for refusal records
            try:
                headers = environ_request_headers(current.environ)  # read once for every step
                body = read_body(current, receiver, headers)
                if isinstance(body, Outcome):
                    return to_response(body, Response)
                admitted = receiver.admit(body, headers, model=model, route=route)
                if isinstance(admitted, Outcome):
                    return to_response(admitted, Response)
                if not route.accepts(admitted.event):  # the receiver's handlers run; the view not
                    outcome = receiver.process(admitted)
                    return to_response(skipped(admitted.event) if outcome.ok else outcome, Response)
                ok = False
                try:
                    outcome = receiver.process(admitted, settle=False)
                    if not outcome.ok:
                        return to_response(outcome, Response)
                    try:
                        result = view(admitted.event, *args, **kwargs)
                    except Exception as error:
                        return to_response(view_failed(admitted.event, error), Response)
                    ok = True
                    return to_response(outcome, Response) if result is None else result
                finally:
                    receiver.settle(admitted, ok)
            finally:
                REQUEST_PATH.reset(path)

        return wrapper

    return decorate
