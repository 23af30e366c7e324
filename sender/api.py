"""The HTTP management API at ``/api/v1/webhooks``, answering as the Fluxbase server does.

A drop-in for Fluxbase's webhooks API: the official TypeScript SDK
(``client.management.webhooks.*``) and code written against the Fluxbase server work
unchanged. Answers are the server's shapes, with our extra fields beside them::

    GET    /api/v1/webhooks                           list, newest first
    POST   /api/v1/webhooks                           create (201)
    GET    /api/v1/webhooks/{id}                      get
    PATCH  /api/v1/webhooks/{id}   (or PUT)           update the fields given (200)
    DELETE /api/v1/webhooks/{id}                      delete (200)
    POST   /api/v1/webhooks/{id}/test                 send a test event now
    GET    /api/v1/webhooks/{id}/deliveries           history (?limit=50&offset=0)
    POST   /api/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver   queue again (201)
    GET    /openapi.json                              this API's OpenAPI document

Every request needs a service key, given as ``Authorization: Bearer <key>``,
``apikey: <key>``, ``X-Service-Key: <key>`` or ``Authorization: ServiceKey <key>``.
Read-only keys may only ``GET`` (403 names the scope a write needs). Errors are
``{"error": <sentence>, "code": <UPPER_SNAKE>}`` plus detail fields (``errors`` lists
``{"field", "message"}`` for a refused body). Secrets are never returned, except once in
the answer to a create that let the server generate one.

    app = management_app(sender, service_key=os.environ["FLUXBASE_SERVICE_KEY"])
"""

from __future__ import annotations

import hmac
import os
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import from_json
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from fluxbase_receiver.errors import SenderError
from fluxbase_receiver.sender.capture import check_identifier
from fluxbase_receiver.sender.models import (
    MASK,
    Delivery,
    NotFound,
    Webhook,
    WebhookValidationError,
)
from fluxbase_receiver.sender.openapi import openapi_document
from fluxbase_receiver.sender.sender import Sender

__all__ = ["APIError", "management_app"]

PREFIX = "/api/v1/webhooks"
MAX_BODY = 64 * 1024
MAX_LIMIT = 1000
WRITE_SCOPE = "webhooks:write"

READ_ONLY_FIELDS = frozenset(
    {"id", "created_at", "updated_at", "created_by", "disabled_reason", "success", "message"}
)
"""Fields a client may send back from a ``GET`` answer: ignored on create and update."""
WHOLE_NUMBER_FIELDS = ("max_retries", "timeout_seconds", "retry_backoff_seconds")
_DIGITS = re.compile(r"[0-9]{1,9}")
_SAFE_METHODS = frozenset({"GET", "HEAD"})


class APIError(SenderError):
    """A refusal of the management API: ``status``, ``code`` and detail fields."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        /,
        *,
        headers: Mapping[str, str] | None = None,
        **detail: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers
        self.detail = detail

    def response(self) -> JSONResponse:
        """The error as the Fluxbase server answers it."""
        body = {"error": str(self), "code": self.code, **self.detail}
        return JSONResponse(body, self.status, headers=self.headers)


class _TestSend(BaseModel):
    """The optional body of a test send (an empty body sends Fluxbase's TEST event)."""

    model_config = ConfigDict(extra="forbid")

    event: str = "TEST"
    table: str = "test"
    record: Any = None
    old_record: Any = None
    schema_name: str = Field(default="public", alias="schema")

    @field_validator("table", "schema_name")
    @classmethod
    def _identifier(cls, value: str, info: ValidationInfo) -> str:
        return check_identifier("schema" if info.field_name == "schema_name" else "table", value)


def management_app(
    sender: Sender,
    service_key: str | Sequence[str] | None = None,
    *,
    read_only_keys: Sequence[str] = (),
    cors_origins: Sequence[str] = (),
) -> Starlette:
    """The management API for ``sender``.

    ``service_key`` (one key or several; default: ``FLUXBASE_SERVICE_KEY``) may do
    everything, ``read_only_keys`` may only read. ``cors_origins`` allows browser calls
    from those origins (``["*"]`` for any); CORS is off by default.
    """
    if service_key is None:
        service_key = os.environ.get("FLUXBASE_SERVICE_KEY") or ()
    write_keys = [service_key] if isinstance(service_key, str) else list(service_key)
    keys = {key: True for key in write_keys} | {key: False for key in read_only_keys}
    if not keys:
        raise ValueError("a service key is required: pass service_key or set FLUXBASE_SERVICE_KEY")
    if any(len(key) < 16 for key in keys):
        raise ValueError("service keys must be at least 16 characters")

    async def list_webhooks(request: Request) -> Response:
        found = await run_in_threadpool(sender.webhooks.list)
        return JSONResponse([_webhook_view(w) for w in reversed(found)])

    async def create_webhook(request: Request) -> Response:
        fields = _webhook_fields(await _json_object(request), creating=True)
        created = await run_in_threadpool(sender.webhooks.create, fields)
        answer = _webhook_view(created)
        if "secret" not in fields:
            answer["secret"] = created.secret.get_secret_value()
        return JSONResponse(answer, 201)

    async def get_webhook(request: Request) -> Response:
        webhook = await run_in_threadpool(sender.webhooks.get, _path_id(request, "webhook_id"))
        return JSONResponse(_webhook_view(webhook))

    async def update_webhook(request: Request) -> Response:
        webhook_id = _path_id(request, "webhook_id")
        fields = _webhook_fields(await _json_object(request), creating=False)

        def apply() -> Webhook:
            headers = fields.get("headers")
            if isinstance(headers, dict) and MASK in headers.values():
                kept = sender.webhooks.get(webhook_id).headers
                fields["headers"] = {
                    n: kept.get(n, v) if v == MASK else v for n, v in headers.items()
                }
            return sender.webhooks.update(webhook_id, fields)

        updated = await run_in_threadpool(apply)
        message = {"success": True, "message": "Webhook updated successfully"}
        return JSONResponse(message | _webhook_view(updated))

    async def delete_webhook(request: Request) -> Response:
        await run_in_threadpool(sender.webhooks.delete, _path_id(request, "webhook_id"))
        return JSONResponse({"success": True, "message": "Webhook deleted successfully"})

    async def test_webhook(request: Request) -> Response:
        webhook_id = _path_id(request, "webhook_id")
        body = await _read_body(request)
        try:
            options = _TestSend.model_validate(_parse_object(body) if body.strip() else {})
            result = await sender.webhooks.test_async(
                webhook_id,
                event=options.event,
                table=options.table,
                record=options.record,
                old_record=options.old_record,
                schema=options.schema_name,
            )
        except ValidationError as error:
            raise _invalid_body(WebhookValidationError.from_pydantic(error).errors) from None
        except ValueError as error:
            raise _invalid_body([{"field": "event", "message": str(error)}]) from None
        detail: dict[str, Any] = {
            "status_code": result.status_code,
            "response_body": result.response_body,
            "delivery_id": result.delivery_id,
        }
        if result.success:
            answer = {"success": True, "message": "Test webhook sent successfully", **detail}
            return JSONResponse(answer)
        if result.status_code is None:
            reason = result.error or "the test webhook could not be sent"
        else:
            reason = f"HTTP {result.status_code}: {(result.response_body or '')[:500]}"
        raise APIError(
            502,
            "WEBHOOK_TEST_FAILED",
            reason,
            success=False,
            message="Test webhook failed",
            **detail,
        )

    async def list_deliveries(request: Request) -> Response:
        webhook_id = _path_id(request, "webhook_id")
        limit = min(_query_int(request, "limit", 50, minimum=1), MAX_LIMIT)
        offset = _query_int(request, "offset", 0, minimum=0)
        found = await run_in_threadpool(sender.webhooks.get_deliveries, webhook_id, limit, offset)
        return JSONResponse([_delivery_view(d) for d in found])

    async def redeliver(request: Request) -> Response:
        webhook_id = _path_id(request, "webhook_id")
        delivery_id = _path_id(request, "delivery_id")

        def queue_again() -> Delivery:
            if sender.get_delivery(delivery_id).webhook_id != webhook_id:
                raise NotFound(f"webhook {webhook_id} has no delivery {delivery_id}")
            return sender.redeliver(delivery_id)

        return JSONResponse(_delivery_view(await run_in_threadpool(queue_again)), 201)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    one = PREFIX + "/{webhook_id}"
    routes = [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route(PREFIX, list_webhooks, methods=["GET"]),
        Route(PREFIX, create_webhook, methods=["POST"]),
        Route(one, get_webhook, methods=["GET"]),
        Route(one, update_webhook, methods=["PATCH"]),
        Route(one, update_webhook, methods=["PUT"]),
        Route(one, delete_webhook, methods=["DELETE"]),
        Route(one + "/test", test_webhook, methods=["POST"]),
        Route(one + "/deliveries", list_deliveries, methods=["GET"]),
        Route(one + "/deliveries/{delivery_id}/redeliver", redeliver, methods=["POST"]),
    ]
    middleware = [Middleware(_Gate, keys={k.encode(): w for k, w in keys.items()})]
    if cors_origins:
        cors = Middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            allow_headers=["authorization", "apikey", "x-service-key", "content-type"],
        )
        middleware.insert(0, cors)
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            APIError: _api_error,
            WebhookValidationError: _validation_error,
            NotFound: _not_found,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    app.router.redirect_slashes = False
    return app


class _Gate:
    """Service-key check for every request, and trailing slashes served without a redirect."""

    def __init__(self, app: ASGIApp, keys: dict[bytes, bool]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope = dict(scope, path=path.rstrip("/") or "/")
        refusal = self._refusal(Headers(scope=scope), scope["method"])
        if refusal is not None:
            await refusal.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, headers: Headers, method: str) -> APIError | None:
        given = list(_credentials(headers))
        if not given:
            return APIError(
                401,
                "UNAUTHORIZED",
                "Authentication required: send a service key as Authorization: Bearer <key>,"
                " apikey, X-Service-Key or Authorization: ServiceKey <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        can_write: bool | None = None
        for credential in given:
            for key, writes in self.keys.items():
                if hmac.compare_digest(credential, key):
                    can_write = bool(can_write) or writes
        if can_write is None:
            return APIError(
                401,
                "INVALID_SERVICE_KEY",
                "Invalid service key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not can_write and method not in _SAFE_METHODS:
            return APIError(
                403,
                "INSUFFICIENT_PERMISSIONS",
                "Insufficient permissions",
                required_scope=WRITE_SCOPE,
            )
        return None


def _credentials(headers: Headers) -> Iterator[bytes]:
    """Every key the request presents, in any of the headers the Fluxbase server reads."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "servicekey") and value.strip():
        yield value.strip().encode("latin-1")
    for name in ("apikey", "x-service-key"):
        if headers.get(name, "").strip():
            yield headers[name].strip().encode("latin-1")


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, APIError)
    return error.response()


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, WebhookValidationError)
    return _invalid_body(error.errors).response()


async def _not_found(request: Request, error: Exception) -> Response:
    text = str(error)
    return APIError(404, "NOT_FOUND", text[:1].upper() + text[1:]).response()


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(error.status_code, "BAD_REQUEST")
    return APIError(error.status_code, code, error.detail, headers=error.headers).response()


async def _server_error(request: Request, error: Exception) -> Response:
    return APIError(500, "INTERNAL_ERROR", "Internal server error").response()


def _invalid_body(errors: list[dict[str, str]]) -> APIError:
    """400 for a refused body: ``MISSING_REQUIRED_FIELD`` when that is all that is wrong."""
    missing = [e for e in errors if e["message"].endswith(" is required")]
    if missing and len(missing) == len(errors):
        return APIError(400, "MISSING_REQUIRED_FIELD", missing[0]["message"], errors=errors)
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return APIError(400, "INVALID_REQUEST_BODY", f"Invalid request body: {summary}", errors=errors)


def _path_id(request: Request, name: str) -> str:
    """A path id in canonical UUID form, or 400 ``INVALID_ID``."""
    value: str = request.path_params[name]
    try:
        return str(uuid.UUID(value))
    except ValueError:
        kind = "webhook" if name == "webhook_id" else "delivery"
        raise APIError(400, "INVALID_ID", f"Invalid {kind} ID: expected a UUID") from None


def _query_int(request: Request, name: str, default: int, *, minimum: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    if not _DIGITS.fullmatch(value) or int(value) < minimum:
        raise APIError(
            400,
            "INVALID_QUERY_PARAMETER",
            f"{name} must be a whole number from {minimum} to 999999999",
            parameter=name,
        )
    return int(value)


async def _read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it passes :data:`MAX_BODY`."""
    too_large = APIError(413, "PAYLOAD_TOO_LARGE", f"Request body exceeds {MAX_BODY} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_object(request: Request) -> dict[str, Any]:
    return _parse_object(await _read_body(request))


def _parse_object(body: bytes) -> dict[str, Any]:
    """A JSON object from ``body`` (nesting is capped by the parser), or 400."""
    try:
        data = from_json(body, allow_inf_nan=False)
    except ValueError as error:
        field = {"field": "body", "message": f"not valid JSON ({error})"}
        raise _invalid_body([field]) from None
    if not isinstance(data, dict):
        raise _invalid_body([{"field": "body", "message": "must be a JSON object"}])
    return data


def _webhook_fields(body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """Webhook fields from a request body: read-only fields dropped, Fluxbase's rules checked."""
    fields = {key: value for key, value in body.items() if key not in READ_ONLY_FIELDS}
    errors: list[dict[str, str]] = []
    if "is_active" in fields:
        active = fields.pop("is_active")
        if "enabled" in fields and fields["enabled"] != active:
            errors.append({"field": "is_active", "message": "is_active and enabled disagree"})
        fields["enabled"] = active
    if creating:
        for name, label in (("name", "Name"), ("url", "URL")):
            if fields.get(name) in (None, ""):
                errors.append({"field": name, "message": f"{label} is required"})
    for name in WHOLE_NUMBER_FIELDS:
        value = fields.get(name)
        if isinstance(value, float) and value.is_integer():
            fields[name] = int(value)
        elif name in fields and (isinstance(value, bool) or not isinstance(value, int)):
            errors.append({"field": name, "message": "must be a whole number"})
    if errors:
        raise _invalid_body(errors)
    return fields


def _webhook_view(webhook: Webhook) -> dict[str, Any]:
    """A webhook as the Fluxbase server shows it: no secret, no empty description.

    Custom header values are masked (write-only); a masked value sent back in an
    update keeps the stored one.
    """
    data: dict[str, Any] = webhook.model_dump(mode="json", exclude={"secret"})
    for optional in ("description", "disabled_reason"):
        if data[optional] is None:
            del data[optional]
    data["is_active"] = webhook.enabled
    return data


def _delivery_view(delivery: Delivery) -> dict[str, Any]:
    """A delivery with the server's field names (``status_code``, ``attempt``) beside ours."""
    data: dict[str, Any] = delivery.model_dump(mode="json", by_alias=True)
    data["status_code"] = delivery.response_status
    data["attempt"] = delivery.attempts
    return data
