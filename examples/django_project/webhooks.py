"""The receiver and its handler, as in the Fluxbase docs' "Receiving Webhooks" example."""

import logging
import os

from fluxbase_receiver import Receiver, WebhookEvent

logger = logging.getLogger("examples.django_project")

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
