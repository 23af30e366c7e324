"""The sending side: capture row changes and deliver signed Fluxbase webhooks.

>>> sender = Sender("sqlite:///app.db")
>>> hook = sender.webhooks.create(name="orders", url="https://example.com/hook",
...                               secret="s3cret", events=[{"table": "orders"}])
>>> sender.watch("orders")      # triggers capture INSERT / UPDATE / DELETE
>>> sender.run()                # deliver until SIGINT / SIGTERM

Needs the ``sender`` extra (``pip install "fluxbase-receiver[sender]"``).
"""

try:
    import aiohttp  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        'fluxbase_receiver.sender needs aiohttp: pip install "fluxbase-receiver[sender]"'
    ) from error

from fluxbase_receiver.sender.api import APIError, management_app
from fluxbase_receiver.sender.delivery import DestinationRefused, check_address, check_url
from fluxbase_receiver.sender.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryCounts,
    DeliveryStatus,
    EventFilter,
    NotFound,
    TestResult,
    Webhook,
    WebhookSpec,
    WebhookValidationError,
    masked_headers,
)
from fluxbase_receiver.sender.openapi import openapi_document
from fluxbase_receiver.sender.sender import Sender, Webhooks
from fluxbase_receiver.sender.serve import serve_management
from fluxbase_receiver.sender.store import SenderStore, SQLiteStore

__all__ = [
    "APIError",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryCounts",
    "DeliveryStatus",
    "DestinationRefused",
    "EventFilter",
    "NotFound",
    "SQLiteStore",
    "Sender",
    "SenderStore",
    "TestResult",
    "Webhook",
    "WebhookSpec",
    "WebhookValidationError",
    "Webhooks",
    "check_address",
    "check_url",
    "management_app",
    "masked_headers",
    "openapi_document",
    "serve_management",
]
