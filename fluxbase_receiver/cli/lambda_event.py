"""``fluxbase-receiver lambda-event``: print a signed event as AWS Lambda receives it.

For ``sam local invoke -e event.json`` and similar: the same event options as ``send``.
"""

from __future__ import annotations

import argparse
import json

from fluxbase_receiver.cli.send import signed_event
from fluxbase_receiver.testing import lambda_event


def run(args: argparse.Namespace) -> int:
    body, headers = signed_event(args)
    print(json.dumps(lambda_event(body, headers, path=args.path, format=args.format), indent=2))
    return 0
