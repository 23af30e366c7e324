"""The ``extra`` context of the package's log records.

Every field is named ``fluxbase_<name>`` (``record.fluxbase_table``...). Only identifiers
go there: never a secret, a signature, a header value or a body.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from fluxbase_receiver.events import WebhookEvent

REQUEST_PATH: ContextVar[str | None] = ContextVar("fluxbase_request_path", default=None)
"""The request path an adapter is answering, named in refusal records."""


def event_context(event: WebhookEvent | None, **more: object) -> dict[str, Any]:
    """The ``extra`` for a record about ``event``: its operation, table, schema, ids, and ``more``
    (each name prefixed with ``fluxbase_``)."""
    context: dict[str, Any] = {f"fluxbase_{name}": value for name, value in more.items()}
    if event is not None:
        context["fluxbase_operation"] = event.event
        context["fluxbase_table"] = event.table
        context["fluxbase_schema"] = event.schema_name
        context["fluxbase_event_id"] = event.id
        context["fluxbase_webhook_id"] = event.webhook_id
    return context


def handler_name(handler: object) -> str:
    """A handler's qualified name (``module.function``)."""
    module = getattr(handler, "__module__", None)
    name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    return f"{module}.{name}" if module else name
