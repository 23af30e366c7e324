"""``fluxbase-receiver sign``: the X-Fluxbase-Signature value for a body."""

from __future__ import annotations

import argparse

from fluxbase_receiver.cli.arguments import read_body, secrets
from fluxbase_receiver.signature import sign_payload


def run(args: argparse.Namespace) -> int:
    body = read_body(args.file)
    print(sign_payload(body, secrets(args.secret), timestamp=args.timestamp))
    return 0
