"""AWS Lambda: one handler for API Gateway REST (payload 1.0), HTTP API (2.0), Function URLs
and Application Load Balancers.

Usage (``lambda_function.py``)::

    import os

    from fluxbase_receiver import Receiver
    from fluxbase_receiver.adapters.aws_lambda import lambda_handler

    receiver = Receiver(secret=os.environ["FLUXBASE_WEBHOOK_SECRET"], idempotency=store)

    @receiver.on("orders")
    def on_order(event): ...

    handler = lambda_handler(receiver)

The source is told from the event itself: ALB events carry ``requestContext.elb``, 2.0
events (HTTP API, Function URL) ``requestContext.http``; everything else with an
``httpMethod`` is API Gateway REST / HTTP API payload 1.0. Base64 bodies are decoded to the
exact bytes that were signed, headers match case-insensitively (single or multi-value), and
a missing ``isBase64Encoded`` means a plain text body. The answer has the shape the source
expects: ``statusDescription`` for ALB, ``multiValueHeaders`` when the request used them.

The handler answers whatever path the event carries, ``/webhooks/fluxbase`` or
``/webhooks/fluxbase/``; route both to the function (API Gateway, ALB rules) so a URL
configured either way is delivered instead of answered 404 by AWS.

Lambda cannot answer early and finish handlers in the background: the execution
environment is frozen as soon as the handler returns, so unfinished work would stall until
a later invocation or be lost. Handlers run before the answer; keep them within the
sender's timeout (30 s by default) and hand longer work to a queue. Concurrent invocations
run in separate environments: give the receiver a shared idempotency store (Redis,
PostgreSQL) so duplicates are caught across them.

This module needs nothing beyond the core.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fluxbase_receiver._logcontext import REQUEST_PATH
from fluxbase_receiver.adapters._common import STATUS_LINES, response_headers
from fluxbase_receiver.errors import InvalidPayload
from fluxbase_receiver.receiver import Headers, Outcome, Receiver

__all__ = ["LambdaRequest", "lambda_handler", "read_event"]

LambdaHandler = Callable[[Mapping[str, Any], Any], dict[str, Any]]


@dataclass(slots=True)
class LambdaRequest:
    """The parts of a Lambda HTTP event the receiver needs, and how to answer it."""

    method: str
    headers: Headers
    """The event's ``headers`` mapping, or ``(name, value)`` pairs from ``multiValueHeaders``."""
    body: bytes | Outcome
    """The exact body bytes, or the 400 refusal for a body marked base64 that is not."""
    is_alb: bool
    multi_value: bool

    def respond(self, outcome: Outcome) -> dict[str, Any]:
        """The response document for ``outcome`` in the shape this event's source expects."""
        headers = response_headers(outcome)
        response: dict[str, Any] = {
            "statusCode": outcome.status,
            "body": outcome.body_bytes().decode("utf-8"),
            "isBase64Encoded": False,
        }
        if self.multi_value:
            response["multiValueHeaders"] = {name: [value] for name, value in headers.items()}
        else:
            response["headers"] = headers
        if self.is_alb:
            response["statusDescription"] = STATUS_LINES[outcome.status]
        return response


def read_event(event: Mapping[str, Any]) -> LambdaRequest:
    """Read an API Gateway (1.0 or 2.0), Function URL or ALB event.

    Raises ``ValueError`` for an event that is none of these (a wiring mistake).
    """
    context = event.get("requestContext") or {}
    if "http" in context:
        method = context["http"]["method"]
    elif "httpMethod" in event:
        method = event["httpMethod"]
    else:
        raise ValueError("not an API Gateway, Lambda Function URL or ALB HTTP event")
    multi = event.get("multiValueHeaders")
    headers: Headers
    if multi:
        headers = [(name, value) for name, values in multi.items() for value in values or ()]
    else:
        headers = event.get("headers") or {}
    return LambdaRequest(method, headers, _body(event), "elb" in context, bool(multi))


def _body(event: Mapping[str, Any]) -> bytes | Outcome:
    raw: str = event.get("body") or ""
    if not event.get("isBase64Encoded"):
        return raw.encode("utf-8")
    try:
        return binascii.a2b_base64(raw, strict_mode=True)  # base64.b64decode(validate=True)
    except (binascii.Error, ValueError):  # not base64, or not ASCII
        return Outcome.refuse(InvalidPayload("body is marked base64 but is not valid base64"))


def lambda_handler(receiver: Receiver) -> LambdaHandler:
    """The Lambda handler ``handler(event, context)`` that receives webhooks with ``receiver``."""

    def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        path = REQUEST_PATH.set(event.get("rawPath") or event.get("path"))  # for refusal records
        try:
            request = read_event(event)
            body = request.body
            if isinstance(body, Outcome):
                return request.respond(body)
            return request.respond(receiver.handle(body, request.headers, request.method))
        finally:
            REQUEST_PATH.reset(path)

    return handler
