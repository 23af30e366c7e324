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

    FluxbaseWebhooks(app, receiver)  # POST /webhooks/fluxbase runs the handlers

With an application factory or a Blueprint::

    webhooks = FluxbaseWebhooks(None, receiver, url="/fluxbase")
    webhooks.init_app(blueprint)

Or decorate your own view, which is handed the verified (typed) event and may return any
Flask response (``None`` answers ``{"ok": true}``); methods the route does not list get
Flask's own 405::

    @app.post("/webhooks/orders")
    @webhook_view(receiver, model=Order)
    def orders(event: InsertEvent[Order] | UpdateEvent[Order] | DeleteEvent[Order]):
        ...

The body is read through werkzeug and stays cached on the request (``request.get_data()``
still works), at most to the smaller of ``receiver.max_body_bytes`` and Flask's
``MAX_CONTENT_LENGTH``. ``FluxbaseWebhooks`` answers 405 itself for other methods and
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

from fluxbase_receiver.adapters._common import (
    Respond,
    require,
    settle,
    view_failed,
    without_claim,
)

require("flask", "flask", "Flask", "flask")

from flask import Blueprint, Flask, Response, request  # noqa: E402
from flask.typing import ResponseReturnValue  # noqa: E402

from fluxbase_receiver.adapters.wsgi import (  # noqa: E402
    WSGIWebhookEndpoint,
    environ_headers,
    read_body,
    to_response,
)
from fluxbase_receiver.errors import InvalidPayload  # noqa: E402
from fluxbase_receiver.events import parse_event  # noqa: E402
from fluxbase_receiver.receiver import Outcome, Receiver  # noqa: E402

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
        """Add the webhook URL rule to ``app``."""
        app.add_url_rule(
            self.url, self.endpoint, self._view, methods=METHODS, provide_automatic_options=False
        )

    def _view(self) -> ResponseReturnValue:
        current = request._get_current_object()  # type: ignore[attr-defined]
        headers = environ_headers(current.environ)
        body = read_body(current, self.receiver, headers)
        outcome = self._webhook.answer(body, headers) if isinstance(body, bytes) else body
        return to_response(outcome, Response)


def webhook_view(
    receiver: Receiver, *, model: type[Any] | None = None
) -> Callable[[View[P]], Callable[P, ResponseReturnValue]]:
    """Decorate a view that takes the verified event (records typed as ``model``) first."""

    def decorate(view: View[P]) -> Callable[P, ResponseReturnValue]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
            current = request._get_current_object()  # type: ignore[attr-defined]
            headers = environ_headers(current.environ)
            body = read_body(current, receiver, headers)
            if isinstance(body, Outcome):
                return to_response(body, Response)
            admitted = receiver.admit(body, headers)
            if isinstance(admitted, Outcome):
                return to_response(admitted, Response)
            try:
                event = admitted.event if model is None else parse_event(body, model)
            except InvalidPayload as error:
                settle(receiver, admitted, ok=False)
                return to_response(Outcome.refuse(error, admitted.event), Response)
            outcome = receiver.process(without_claim(admitted))
            if not outcome.ok:
                settle(receiver, admitted, ok=False)
                return to_response(outcome, Response)
            try:
                result = view(event, *args, **kwargs)
            except Exception as error:
                settle(receiver, admitted, ok=False)
                return to_response(view_failed(admitted.event, error), Response)
            settle(receiver, admitted, ok=True)
            return to_response(outcome, Response) if result is None else result

        return wrapper

    return decorate
