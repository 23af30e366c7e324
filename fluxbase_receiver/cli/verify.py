"""``fluxbase-receiver verify``: check a signature and print the parsed event."""

from __future__ import annotations

import argparse

from fluxbase_receiver.cli.arguments import CLIError, read_body, secrets
from fluxbase_receiver.cli.terminal import printable_lines
from fluxbase_receiver.errors import WebhookError
from fluxbase_receiver.events import parse_event
from fluxbase_receiver.signature import verify_legacy_signature, verify_signature


def run(args: argparse.Namespace) -> int:
    body = read_body(args.file)
    keys = secrets(args.secret)
    try:
        if args.legacy:
            verify_legacy_signature(body, args.signature, keys)
        else:
            verify_signature(body, args.signature, keys, tolerance=args.tolerance)
        event = parse_event(body)
    except WebhookError as error:
        raise CLIError(f"{error.code}: {printable_lines(str(error))}") from None
    print(printable_lines(event.model_dump_json(indent=2, exclude_none=True)))
    return 0
