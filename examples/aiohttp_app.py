"""Receive Fluxbase webhooks with aiohttp.

Run it from the repository root (``pip install 'fluxbase-receiver[aiohttp]'``)::

    export FLUXBASE_WEBHOOK_SECRET=your-webhook-secret
    python -m aiohttp.web -H 127.0.0.1 -P 8080 examples.aiohttp_app:create_app

and point a Fluxbase webhook at ``http://<host>:8080/webhooks/fluxbase``.
"""

import logging
import os
from typing import Any

from aiohttp import web

from fluxbase_receiver import Receiver, WebhookEvent
from fluxbase_receiver.adapters.aiohttp import webhook_routes

logging.basicConfig(level=logging.INFO)
logger = logging.getLogger("examples.aiohttp_app")

receiver = Receiver(secret=os.environ["FLUXBASE_WEBHOOK_SECRET"])


@receiver.on("*", "INSERT", "UPDATE", "DELETE")
async def log_change(event: WebhookEvent) -> None:
    """Log what happened to which row, as the Fluxbase docs' example does."""
    match event.event:
        case "INSERT":
            logger.info("New record in %s: %s", event.table, event.record)
        case "UPDATE":
            logger.info(
                "Record updated in %s: %s -> %s", event.table, event.old_record, event.record
            )
        case "DELETE":
            logger.info("Record deleted from %s: %s", event.table, event.row)


def create_app(argv: Any = None) -> web.Application:
    """The application (``python -m aiohttp.web`` calls this with its extra arguments)."""
    app = web.Application()
    app.add_routes(webhook_routes("/webhooks/fluxbase", receiver))  # with or without "/"
    return app
