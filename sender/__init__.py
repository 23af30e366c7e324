"""The sending side: capture row changes and deliver signed Fluxbase webhooks.

>>> sender = Sender("sqlite:///app.db")      # or "postgresql://..." for many workers
>>> hook = sender.webhooks.create(name="orders", url="https://example.com/hook",
...                               secret="s3cret", events=[{"table": "orders"}])
>>> sender.watch("orders")      # triggers capture INSERT / UPDATE / DELETE
>>> sender.run()                # deliver until SIGINT / SIGTERM

Needs the ``sender`` extra (``pip install "fluxbase-receiver[sender]"``); PostgreSQL
also the ``postgres`` extra (its store is :class:`fluxbase_receiver.sender.postgres.PostgresStore`).
"""

try:
    import aiohttp  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "fluxbase_receiver.sender needs aiohttp: pip install 'fluxbase-receiver[sender]'"
    ) from error

from fluxbase_receiver.sender.api import APIError, management_app
from fluxbase_receiver.sender.backend import Ordering, SenderStore, open_store
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
from fluxbase_receiver.sender.policy import Decision, RetryPolicy
from fluxbase_receiver.sender.sender import Sender, Webhooks
from fluxbase_receiver.sender.serve import serve_management
from fluxbase_receiver.sender.sqlite import SQLiteStore
from fluxbase_receiver.sender.worker import AttemptObserver, Worker

__all__ = [
    "APIError",
    "AttemptObserver",
    "Decision",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryCounts",
    "DeliveryStatus",
    "DestinationRefused",
    "EventFilter",
    "NotFound",
    "Ordering",
    "RetryPolicy",
    "SQLiteStore",
    "Sender",
    "SenderStore",
    "TestResult",
    "Webhook",
    "WebhookSpec",
    "WebhookValidationError",
    "Webhooks",
    "Worker",
    "check_address",
    "check_url",
    "management_app",
    "masked_headers",
    "open_store",
    "openapi_document",
    "serve_management",
]
