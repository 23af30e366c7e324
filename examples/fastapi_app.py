"""Receive Fluxbase webhooks with FastAPI: the route function gets the verified event.

Run it from the repository root (``pip install 'fluxbase-receiver[fastapi]' uvicorn``)::

    export FLUXBASE_WEBHOOK_SECRET=your-webhook-secret
    uvicorn examples.fastapi_app:app

and point a Fluxbase webhook at ``http://<host>:8000/webhooks/fluxbase``
(the OpenAPI page at ``/docs`` shows the webhook's body, header and answers).
"""

import logging
import os
from typing import Annotated

from fastapi import FastAPI

from fluxbase_receiver import DeleteEvent, InsertEvent, Receiver, UpdateEvent
from fluxbase_receiver.adapters.fastapi import FluxbaseWebhook, install_exception_handler

logging.basicConfig(level=logging.INFO)  # each event is logged at DEBUG
logger = logging.getLogger("examples.fastapi_app")

app = FastAPI(title="Fluxbase webhooks")
install_exception_handler(app)
receiver = Receiver(secret=os.environ["FLUXBASE_WEBHOOK_SECRET"])
webhook = FluxbaseWebhook(receiver, "*", "INSERT", "UPDATE", "DELETE")  # TEST: 200 skipped
FluxbaseEvent = Annotated[InsertEvent | UpdateEvent | DeleteEvent, webhook.depends]


@webhook.post(app, "/webhooks/fluxbase")  # with or without a trailing slash
async def fluxbase_webhook(event: FluxbaseEvent) -> dict[str, bool]:
    """Log what happened to which row, as the Fluxbase docs' example does."""
    match event.event:
        case "INSERT":
            logger.debug("New record in %s: %s", event.table, event.record)
        case "UPDATE":
            logger.debug("Record updated in %s: %s -> %s", event.table, event.old_record, event.row)
        case "DELETE":
            logger.debug("Record deleted from %s: %s", event.table, event.row)
    return {"ok": True}
