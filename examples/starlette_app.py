"""Receive Fluxbase webhooks with Starlette.

Run it from the repository root (``pip install 'fluxbase-receiver[starlette]' uvicorn``)::

    export FLUXBASE_WEBHOOK_SECRET=your-webhook-secret
    uvicorn examples.starlette_app:app

and point a Fluxbase webhook at ``http://<host>:8000/webhooks/fluxbase``.
"""

import logging
import os

from starlette.applications import Starlette

from fluxbase_receiver import Receiver, WebhookEvent
from fluxbase_receiver.adapters.starlette import webhook_routes

logging.basicConfig(level=logging.INFO)  # each event is logged at DEBUG
logger = logging.getLogger("examples.starlette_app")

receiver = Receiver(secret=os.environ["FLUXBASE_WEBHOOK_SECRET"])


@receiver.on("*", "INSERT", "UPDATE", "DELETE")
async def log_change(event: WebhookEvent) -> None:
    """Log what happened to which row, as the Fluxbase docs' example does."""
    match event.event:
        case "INSERT":
            logger.debug("New record in %s: %s", event.table, event.record)
        case "UPDATE":
            logger.debug(
                "Record updated in %s: %s -> %s", event.table, event.old_record, event.record
            )
        case "DELETE":
            logger.debug("Record deleted from %s: %s", event.table, event.row)


app = Starlette(routes=webhook_routes("/webhooks/fluxbase", receiver))  # with or without "/"
