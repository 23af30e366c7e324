"""The OpenAPI 3.1 document of the management API (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from fluxbase_receiver.sender.models import CAPTURED_OPERATIONS

__all__ = ["openapi_document"]

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    described = {
        400: "Bad input (INVALID_ID, INVALID_REQUEST_BODY, MISSING_REQUIRED_FIELD, ...)",
        401: "No service key, or not a valid one",
        403: "A read-only key tried to write",
        404: "No such webhook or delivery",
        413: "Body larger than 64 KiB",
    }
    return {str(s): _json(_ref("Error"), described[s]) for s in (401, 403, *statuses)}


_WEBHOOK_FIELDS: dict[str, Any] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": {"type": ["string", "null"], "maxLength": 2000},
    "url": {"type": "string", "format": "uri", "maxLength": 2048},
    "secret": {"type": "string", "minLength": 1, "writeOnly": True},
    "enabled": {"type": "boolean"},
    "is_active": {"type": "boolean", "description": "Same as enabled (the SDK's name)."},
    "events": {"type": "array", "items": _ref("EventFilter"), "minItems": 1},
    "max_retries": {"type": "integer", "minimum": 0, "maximum": 20},
    "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": 300},
    "retry_backoff_seconds": {"type": "integer", "minimum": 1, "maximum": 86400},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    "scope": {"type": "string", "enum": ["user", "global"]},
}

_SCHEMAS: dict[str, Any] = {
    "EventFilter": {
        "type": "object",
        "required": ["table"],
        "properties": {
            "table": {"type": "string", "description": "'*', 'name', 'schema.name' or 'schema.*'"},
            "operations": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "enum": [*CAPTURED_OPERATIONS, "*"]},
            },
        },
        "additionalProperties": False,
    },
    "WebhookCreate": {
        "type": "object",
        "required": ["name", "url"],
        "properties": _WEBHOOK_FIELDS,
        "additionalProperties": False,
    },
    "WebhookUpdate": {
        "type": "object",
        "properties": _WEBHOOK_FIELDS,
        "additionalProperties": False,
    },
    "Webhook": {
        "type": "object",
        "required": [
            "id",
            "name",
            "url",
            "enabled",
            "is_active",
            "events",
            "max_retries",
            "timeout_seconds",
            "retry_backoff_seconds",
            "headers",
            "scope",
            "created_at",
            "updated_at",
        ],
        "properties": {
            **{k: v for k, v in _WEBHOOK_FIELDS.items() if k not in ("secret", "description")},
            "id": {"type": "string", "format": "uuid"},
            "description": {"type": "string"},
            "secret": {"type": "string", "description": "Only in a create answer, when generated."},
            "disabled_reason": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
    "WebhookUpdated": {
        "allOf": [
            _ref("Webhook"),
            {
                "type": "object",
                "required": ["success", "message"],
                "properties": {"success": {"const": True}, "message": {"type": "string"}},
            },
        ]
    },
    "Deleted": {
        "type": "object",
        "required": ["success", "message"],
        "properties": {"success": {"const": True}, "message": {"type": "string"}},
    },
    "TestSend": {
        "type": "object",
        "properties": {
            "event": {"type": "string", "enum": [*CAPTURED_OPERATIONS, "TEST"]},
            "table": {"type": "string"},
            "schema": {"type": "string"},
            "record": {},
            "old_record": {},
        },
        "additionalProperties": False,
    },
    "TestResult": {
        "type": "object",
        "required": ["success", "message", "delivery_id"],
        "properties": {
            "success": {"type": "boolean"},
            "message": {"type": "string"},
            "error": {"type": "string"},
            "code": {"type": "string"},
            "status_code": {"type": ["integer", "null"]},
            "response_body": {"type": ["string", "null"]},
            "delivery_id": {"type": "string", "format": "uuid"},
        },
    },
    "Delivery": {
        "type": "object",
        "required": ["id", "webhook_id", "event", "status", "attempt", "payload", "created_at"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "webhook_id": {"type": "string", "format": "uuid"},
            "event_id": {"type": "string"},
            "event": {"type": "string"},
            "table": {"type": "string"},
            "schema": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "retrying", "success", "failed"]},
            "attempts": {"type": "integer", "minimum": 0},
            "attempt": {"type": "integer", "minimum": 0},
            "response_status": {"type": ["integer", "null"]},
            "status_code": {"type": ["integer", "null"]},
            "response_body": {"type": ["string", "null"]},
            "error": {"type": ["string", "null"]},
            "payload": {"type": ["object", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
            "delivered_at": {"type": ["string", "null"], "format": "date-time"},
            "next_attempt_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "Error": {
        "type": "object",
        "required": ["error", "code"],
        "properties": {
            "error": {"type": "string", "description": "A sentence for people."},
            "code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["field", "message"],
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                },
            },
            "required_scope": {"type": "string"},
        },
    },
}

_WEBHOOK_ID = {
    "name": "webhook_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def openapi_document() -> dict[str, Any]:
    """The management API's OpenAPI 3.1 document."""
    one = "/api/v1/webhooks/{webhook_id}"
    return {
        "openapi": "3.1.0",
        "info": {"title": "fluxbase-receiver sender management API", "version": "1"},
        "security": [{"bearer": []}, {"apikey": []}, {"serviceKey": []}],
        "paths": {
            "/api/v1/webhooks": {
                "get": {
                    "operationId": "listWebhooks",
                    "responses": {
                        "200": _json({"type": "array", "items": _ref("Webhook")}, "Webhooks"),
                        **_errors(),
                    },
                },
                "post": {
                    "operationId": "createWebhook",
                    "requestBody": _body("WebhookCreate"),
                    "responses": {
                        "201": _json(_ref("Webhook"), "Created"),
                        **_errors(400, 413),
                    },
                },
            },
            one: {
                "parameters": [_WEBHOOK_ID],
                "get": {
                    "operationId": "getWebhook",
                    "responses": {
                        "200": _json(_ref("Webhook"), "The webhook"),
                        **_errors(400, 404),
                    },
                },
                "patch": {
                    "operationId": "updateWebhook",
                    "requestBody": _body("WebhookUpdate"),
                    "responses": {
                        "200": _json(_ref("WebhookUpdated"), "Updated"),
                        **_errors(400, 404, 413),
                    },
                },
                "delete": {
                    "operationId": "deleteWebhook",
                    "responses": {"200": _json(_ref("Deleted"), "Deleted"), **_errors(400, 404)},
                },
            },
            one + "/test": {
                "parameters": [_WEBHOOK_ID],
                "post": {
                    "operationId": "testWebhook",
                    "requestBody": {
                        "content": {"application/json": {"schema": _ref("TestSend")}},
                    },
                    "responses": {
                        "200": _json(_ref("TestResult"), "The receiver answered 2xx"),
                        "502": _json(_ref("TestResult"), "The receiver failed (error says how)"),
                        **_errors(400, 404, 413),
                    },
                },
            },
            one + "/deliveries": {
                "parameters": [_WEBHOOK_ID],
                "get": {
                    "operationId": "listDeliveries",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        {
                            "name": "offset",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "maximum": 999999999},
                        },
                    ],
                    "responses": {
                        "200": _json({"type": "array", "items": _ref("Delivery")}, "Newest first"),
                        **_errors(400, 404),
                    },
                },
            },
            one + "/deliveries/{delivery_id}/redeliver": {
                "parameters": [
                    _WEBHOOK_ID,
                    {
                        "name": "delivery_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "format": "uuid"},
                    },
                ],
                "post": {
                    "operationId": "redeliver",
                    "responses": {
                        "201": _json(_ref("Delivery"), "The new delivery, queued"),
                        **_errors(400, 404),
                    },
                },
            },
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apikey": {"type": "apiKey", "in": "header", "name": "apikey"},
                "serviceKey": {"type": "apiKey", "in": "header", "name": "X-Service-Key"},
            },
        },
    }
