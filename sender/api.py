"""The HTTP management API at ``/api/v1/webhooks``: a Starlette app over a :class:`Sender`.

Every request needs ``Authorization: Bearer <service key>``. Routes mirror the
Fluxbase SDK calls (``FluxbaseClient(url, api_key).webhooks.*``)::

    GET    /api/v1/webhooks                      list
    POST   /api/v1/webhooks                      create (201)
    GET    /api/v1/webhooks/{id}                 get
    PATCH  /api/v1/webhooks/{id}  (or PUT)       update (fields given change)
    DELETE /api/v1/webhooks/{id}                 delete (204)
    POST   /api/v1/webhooks/{id}/test            test send ({event, table, record, ...})
    GET    /api/v1/webhooks/{id}/deliveries      history (?limit=50&offset=0)

Secrets are never returned, except once in the answer to a create that let the
server generate one. Errors are ``{"error": code, "message": text}`` (plus
``"errors"`` with field messages on 422).

    app = management_app(sender, service_key=os.environ["FLUXBASE_SERVICE_KEY"])
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fluxbase_receiver.errors import WebhookError
from fluxbase_receiver.sender.models import Webhook, WebhookValidationError
from fluxbase_receiver.sender.sender import Sender

__all__ = ["management_app"]

PREFIX = "/api/v1/webhooks"
MAX_BODY = 64 * 1024
_TEST_FIELDS = frozenset({"event", "table", "record", "old_record", "schema"})

Endpoint = Callable[[Request, bytes], Any]


class _Refused(WebhookError):
    """A request the API refuses (bad JSON, bad query, body too large, bad credentials)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def management_app(sender: Sender, service_key: str) -> Starlette:
    """The management API for ``sender``, guarded by the bearer ``service_key``."""
    if len(service_key) < 16:
        raise ValueError("service_key must be at least 16 characters")
    expected = f"Bearer {service_key}".encode()

    def guarded(endpoint: Endpoint) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            try:
                given = request.headers.get("authorization", "").encode()
                if not hmac.compare_digest(given, expected):
                    raise _Refused(401, "unauthorized", "a valid bearer service key is required")
                body = await _read_body(request)
                result = await run_in_threadpool(endpoint, request, body)
            except WebhookValidationError as error:
                refusal = {"error": error.code, "message": str(error), "errors": error.errors}
                return JSONResponse(refusal, error.status)
            except WebhookError as error:
                headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
                refusal = {"error": error.code, "message": str(error)}
                return JSONResponse(refusal, error.status, headers)
            if isinstance(result, Response):
                return result
            return JSONResponse(result)

        return handle

    def list_or_create(request: Request, body: bytes) -> Any:
        if request.method == "GET":
            return [_public(w) for w in sender.webhooks.list()]
        fields = _json_object(body)
        created = sender.webhooks.create(fields)
        answer = _public(created)
        if "secret" not in fields:
            answer["secret"] = created.secret.get_secret_value()
        return JSONResponse(answer, 201)

    def one(request: Request, body: bytes) -> Any:
        webhook_id = request.path_params["webhook_id"]
        if request.method == "GET":
            return _public(sender.webhooks.get(webhook_id))
        if request.method == "DELETE":
            sender.webhooks.delete(webhook_id)
            return Response(status_code=204)
        return _public(sender.webhooks.update(webhook_id, _json_object(body)))

    def test(request: Request, body: bytes) -> Any:
        fields = _json_object(body) if body.strip() else {}
        unknown = set(fields) - _TEST_FIELDS
        if unknown:
            raise _Refused(400, "bad_request", f"unknown test fields {sorted(unknown)}")
        try:
            result = sender.webhooks.test(request.path_params["webhook_id"], **fields)
        except ValueError as error:
            raise _Refused(400, "bad_request", str(error)) from None
        return result.model_dump(mode="json")

    def deliveries(request: Request, body: bytes) -> Any:
        limit = _query_int(request, "limit", 50)
        offset = _query_int(request, "offset", 0)
        found = sender.webhooks.get_deliveries(request.path_params["webhook_id"], limit, offset)
        return [_dump(d) for d in found]

    return Starlette(
        routes=[
            Route(PREFIX, guarded(list_or_create), methods=["GET", "POST"]),
            Route(
                PREFIX + "/{webhook_id}", guarded(one), methods=["GET", "PATCH", "PUT", "DELETE"]
            ),
            Route(PREFIX + "/{webhook_id}/test", guarded(test), methods=["POST"]),
            Route(PREFIX + "/{webhook_id}/deliveries", guarded(deliveries), methods=["GET"]),
        ]
    )


def _public(webhook: Webhook) -> dict[str, Any]:
    """A webhook as JSON, without its secret."""
    return _dump(webhook, exclude={"secret"})


def _dump(model: BaseModel, exclude: set[str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude=exclude)
    return data


async def _read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it passes :data:`MAX_BODY`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise _Refused(413, "payload_too_large", f"body exceeds {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _Refused(413, "payload_too_large", f"body exceeds {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _Refused(400, "bad_request", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _Refused(400, "bad_request", "body must be a JSON object")
    return data


def _query_int(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    if not value.isdigit():
        raise _Refused(400, "bad_request", f"{name} must be a non-negative integer")
    return int(value)
