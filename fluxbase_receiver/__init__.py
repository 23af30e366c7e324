"""Verified, typed, deduplicated Fluxbase database webhooks.

>>> receiver = Receiver(secret="...")
>>> @receiver.on("users", "INSERT")
... def welcome(event: InsertEvent) -> None: ...
>>> outcome = receiver.handle(body, headers)  # Outcome(status, body, event)
"""

from fluxbase_receiver.client import (
    AsyncFluxbaseClient,
    FluxbaseAPIError,
    FluxbaseClient,
    ManagedWebhook,
    TableEvents,
    WebhookDelivery,
    WebhookTestResult,
    fluxbase_json,
)
from fluxbase_receiver.errors import (
    EventInProgress,
    HandlerError,
    InvalidPayload,
    InvalidSignature,
    MalformedSignature,
    MethodNotAllowed,
    MissingSignature,
    PayloadTooLarge,
    SignatureError,
    TimestampOutsideTolerance,
    UnsupportedMediaType,
    WebhookError,
)
from fluxbase_receiver.events import (
    DeleteEvent,
    EventFilter,
    InsertEvent,
    Operation,
    TestEvent,
    UpdateEvent,
    WebhookEvent,
    parse_event,
)
from fluxbase_receiver.idempotency import (
    AsyncIdempotencyStore,
    ClaimState,
    IdempotencyStore,
    MemoryIdempotencyStore,
    SQLiteIdempotencyStore,
    default_idempotency_key,
)
from fluxbase_receiver.receiver import Admitted, HandlerObserver, Headers, Outcome, Receiver
from fluxbase_receiver.signature import (
    LEGACY_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    USER_AGENT,
    fluxbase_headers,
    parse_signature_header,
    sign_legacy,
    sign_payload,
    verify_legacy_signature,
    verify_signature,
)

__version__ = "0.1.0"

__all__ = [
    "LEGACY_SIGNATURE_HEADER",
    "SIGNATURE_HEADER",
    "USER_AGENT",
    "Admitted",
    "AsyncFluxbaseClient",
    "AsyncIdempotencyStore",
    "ClaimState",
    "DeleteEvent",
    "EventFilter",
    "EventInProgress",
    "FluxbaseAPIError",
    "FluxbaseClient",
    "HandlerError",
    "HandlerObserver",
    "Headers",
    "IdempotencyStore",
    "InsertEvent",
    "InvalidPayload",
    "InvalidSignature",
    "MalformedSignature",
    "ManagedWebhook",
    "MemoryIdempotencyStore",
    "MethodNotAllowed",
    "MissingSignature",
    "Operation",
    "Outcome",
    "PayloadTooLarge",
    "Receiver",
    "SQLiteIdempotencyStore",
    "SignatureError",
    "TableEvents",
    "TestEvent",
    "TimestampOutsideTolerance",
    "UnsupportedMediaType",
    "UpdateEvent",
    "WebhookDelivery",
    "WebhookError",
    "WebhookEvent",
    "WebhookTestResult",
    "__version__",
    "default_idempotency_key",
    "fluxbase_headers",
    "fluxbase_json",
    "parse_event",
    "parse_signature_header",
    "sign_legacy",
    "sign_payload",
    "verify_legacy_signature",
    "verify_signature",
]
