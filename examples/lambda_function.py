"""Receive Fluxbase webhooks on AWS Lambda behind API Gateway, a Function URL or an ALB.

Deploy: put this file and the package in a zip (``pip install fluxbase-receiver -t build/``,
copy this file to ``build/lambda_function.py``, zip ``build/``), set the handler to
``lambda_function.handler``, set ``FLUXBASE_WEBHOOK_SECRET`` in the function's environment,
and route ``POST /webhooks/fluxbase`` to it. Duplicates are caught per execution
environment; pass ``idempotency=`` a shared store (Redis, PostgreSQL) to catch them across
concurrent ones.

Try it locally from the repository root with a saved event document::

    export FLUXBASE_WEBHOOK_SECRET=your-webhook-secret
    python -m examples.lambda_function < event.json
"""

import json
import logging
import os
import sys

from fluxbase_receiver import Receiver, WebhookEvent
from fluxbase_receiver.adapters.aws_lambda import lambda_handler

logging.basicConfig(level=logging.INFO)  # each event is logged at DEBUG
logger = logging.getLogger("examples.lambda_function")

receiver = Receiver(secret=os.environ["FLUXBASE_WEBHOOK_SECRET"])


@receiver.on("*", "INSERT", "UPDATE", "DELETE")
def log_change(event: WebhookEvent) -> None:
    """Log what happened to which row, as the Fluxbase docs' example does."""
    match event.event:
        case "INSERT":
            logger.debug("New record in %s: %s", event.table, event.record)
        case "UPDATE":
            logger.debug("Record updated in %s: %s -> %s", event.table, event.old_record, event.row)
        case "DELETE":
            logger.debug("Record deleted from %s: %s", event.table, event.row)


handler = lambda_handler(receiver)

if __name__ == "__main__":
    logger.setLevel(logging.DEBUG)  # tried locally: show the event
    print(json.dumps(handler(json.load(sys.stdin), None), indent=2))
