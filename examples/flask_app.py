"""Receive Fluxbase webhooks with Flask.

Run it from the repository root (``pip install 'fluxbase-receiver[flask]'``)::

    export FLUXBASE_WEBHOOK_SECRET=your-webhook-secret
    flask --app examples/flask_app run

and point a Fluxbase webhook at ``http://<host>:5000/webhooks/fluxbase``.
"""

import logging
import os

from flask import Flask

from fluxbase_receiver import Receiver, WebhookEvent
from fluxbase_receiver.adapters.flask import FluxbaseWebhooks

logging.basicConfig(level=logging.INFO)  # each event is logged at DEBUG
logger = logging.getLogger("examples.flask_app")

app = Flask(__name__)
receiver = Receiver(secret=os.environ["FLUXBASE_WEBHOOK_SECRET"])


@receiver.on("*", "INSERT", "UPDATE", "DELETE")
def log_change(event: WebhookEvent) -> None:
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


FluxbaseWebhooks(app, receiver)  # POST /webhooks/fluxbase
