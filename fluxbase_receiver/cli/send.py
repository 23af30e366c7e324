"""``fluxbase-receiver send``: POST a signed event as a Fluxbase server would; print the answer."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fluxbase_receiver.cli.arguments import PROG, CLIError, secrets
from fluxbase_receiver.cli.http_client import ANSWER_LIMIT, post
from fluxbase_receiver.cli.terminal import Style, printable_lines
from fluxbase_receiver.testing import make_event, sign_event


def signed_event(args: argparse.Namespace) -> tuple[bytes, dict[str, str]]:
    """The body and headers for the event the options describe (shared with ``lambda-event``)."""
    fields: dict[str, Any] = {"table": args.table, "schema": args.schema}
    if args.record is not None:
        fields["record"] = args.record
    if args.old_record is not None:
        fields["old_record"] = args.old_record
    if args.webhook_id is not None:
        fields["webhook_id"] = args.webhook_id
    keys = secrets(args.secret)
    try:
        return sign_event(make_event(args.event, **fields), keys, headers=dict(args.header))
    except (ValueError, RecursionError) as error:
        raise CLIError(f"cannot encode the event: {error}") from None


def run(args: argparse.Namespace) -> int:
    body, headers = signed_event(args)
    status, reason, answer, truncated = post(args.url, body, headers, args.timeout)
    style = Style.for_stdout()
    ok = 200 <= status < 300
    print(style("bold" if ok else "error", printable_lines(f"{status} {reason}".strip())))
    if answer:
        print(printable_lines(_pretty(answer)), flush=True)
    if truncated:
        print(
            f"{PROG}: the answer is longer than {ANSWER_LIMIT} bytes; only the start is shown",
            file=sys.stderr,
        )
    return 0 if ok else 1


def _pretty(body: bytes) -> str:
    """A response body: indented when it is JSON, else its text."""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body.decode("utf-8", "replace")
