"""The command tree: every command's arguments, checked before anything runs.

Imports only the standard library and the core's constants. Each command names the
function that runs it (``module:function`` in this package), imported only when chosen.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fluxbase_receiver import __version__
from fluxbase_receiver.cli import arguments as a
from fluxbase_receiver.cli.arguments import PROG, SECRET_ENV, Parser
from fluxbase_receiver.events import OPERATIONS
from fluxbase_receiver.signature import DEFAULT_TOLERANCE

LAMBDA_FORMATS = ("v2", "v1", "url", "alb")


def build() -> argparse.ArgumentParser:
    """The ``fluxbase-receiver`` parser; ``args.run`` names the function to call."""
    parser = Parser(
        prog=PROG,
        description="Sign, verify, send and receive Fluxbase database webhooks.",
        epilog=f"Secrets come from --secret or ${SECRET_ENV}. "
        f"Run '{PROG} COMMAND --help' for examples.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _sign(commands)
    _verify(commands)
    _send(commands)
    _lambda_event(commands)
    _listen(commands)
    _demo(commands)
    _sender(commands)
    return parser


if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[Parser]


def _command(commands: Commands, name: str, summary: str, example: str, run: str) -> Parser:
    sub: Parser = commands.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.set_defaults(run=run)
    return sub


def _secret_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--secret",
        action="append",
        metavar="S",
        help=f"webhook secret (repeat during rotation; default ${SECRET_ENV})",
    )


def _body_argument(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="body (default stdin)")


def _tolerance_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--tolerance",
        type=a.tolerance,
        default=DEFAULT_TOLERANCE,
        metavar="N",
        help="allowed clock difference in seconds, or 'off' (default 300)",
    )


def _sign(commands: Commands) -> None:
    sign = _command(
        commands,
        "sign",
        "Print the X-Fluxbase-Signature header value for a body.",
        f"{PROG} sign --secret s3cr3t event.json",
        "sign:run",
    )
    _secret_option(sign)
    sign.add_argument("--timestamp", type=int, metavar="T", help="unix seconds (default: now)")
    _body_argument(sign)


def _verify(commands: Commands) -> None:
    verify = _command(
        commands,
        "verify",
        "Check a signature; print the parsed event (exit 0) or the reason (exit 1).",
        f'{PROG} verify --secret s3cr3t --signature "$({PROG} sign --secret s3cr3t event.json)"'
        " event.json",
        "verify:run",
    )
    _secret_option(verify)
    verify.add_argument(
        "--signature", required=True, type=a.text, metavar="HEADER", help="the header value"
    )
    _tolerance_option(verify)
    verify.add_argument(
        "--legacy", action="store_true", help="HEADER is a legacy X-Webhook-Signature hex digest"
    )
    _body_argument(verify)


def _event_options(sub: argparse.ArgumentParser) -> None:
    """The options that describe an event (``send`` and ``lambda-event``)."""
    _secret_option(sub)
    sub.add_argument(
        "--event",
        type=str.upper,
        choices=OPERATIONS,
        default="INSERT",
        help="INSERT, UPDATE, DELETE or TEST (default INSERT)",
    )
    sub.add_argument(
        "--table", type=a.text, default=None, help="table name (default users; test for TEST)"
    )
    sub.add_argument("--schema", type=a.text, default="public", help="schema name (default public)")
    sub.add_argument("--record", type=a.json_object, metavar="JSON", help="the row (a JSON object)")
    sub.add_argument(
        "--old-record", type=a.json_object, metavar="JSON", help="the row before (UPDATE, DELETE)"
    )
    sub.add_argument(
        "--webhook-id", type=a.text, metavar="ID", help="webhook_id (default: a random UUID)"
    )
    sub.add_argument(
        "--header",
        type=a.header,
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra header (repeatable)",
    )


def _send(commands: Commands) -> None:
    send = _command(
        commands,
        "send",
        "Send a signed event with a Fluxbase server's headers; print the answer.",
        f"{PROG} send http://127.0.0.1:8000/webhooks/fluxbase --secret s3cr3t \\\n"
        '    --event UPDATE --table orders --record \'{"id": 1, "status": "paid"}\' \\\n'
        '    --old-record \'{"id": 1, "status": "new"}\'',
        "send:run",
    )
    send.add_argument("url", type=a.url, metavar="URL")
    _event_options(send)
    send.add_argument("--timeout", type=a.seconds, default=30.0, help="seconds (default 30)")


def _lambda_event(commands: Commands) -> None:
    event = _command(
        commands,
        "lambda-event",
        "Print a signed event as AWS Lambda receives it (for sam local invoke -e).",
        f"{PROG} lambda-event --secret s3cr3t --table orders --record '{{\"id\": 1}}' > event.json",
        "lambda_event:run",
    )
    _event_options(event)
    event.add_argument(
        "--format",
        choices=LAMBDA_FORMATS,
        default="v2",
        help="API Gateway HTTP API (v2, default), REST API (v1), Function URL (url) or ALB (alb)",
    )
    event.add_argument("--path", type=a.text, default="/webhooks/fluxbase", help="request path")


def _listen(commands: Commands) -> None:
    listen = _command(
        commands,
        "listen",
        "Run a local receiver that verifies, dedupes and prints every event.",
        f"{PROG} listen --secret s3cr3t --port 8787 "
        "--forward-to http://127.0.0.1:8000/webhooks/fluxbase",
        "listen:run",
    )
    _secret_option(listen)
    listen.add_argument(
        "--host", type=a.text, default="127.0.0.1", help="address (default 127.0.0.1)"
    )
    listen.add_argument("--port", type=a.port, default=8787, help="port (default 8787)")
    listen.add_argument(
        "--forward-to",
        type=a.url,
        metavar="URL",
        help="POST each verified event, with its original headers, to this URL; "
        "its answer is returned to the sender",
    )
    _tolerance_option(listen)
    listen.add_argument(
        "--legacy", action="store_true", help="also accept the legacy X-Webhook-Signature"
    )


def _demo(commands: Commands) -> None:
    demo = _command(
        commands,
        "demo",
        "Show both sides on one machine: SQLite changes delivered to a local receiver"
        " (needs the sender extra).",
        f"{PROG} demo --quiet",
        "demo:run",
    )
    demo.add_argument("--database", type=Path, help="keep the SQLite database at this new path")
    demo.add_argument("--quiet", action="store_true", help="print only the history")


def _sender(commands: Commands) -> None:
    sender = _command(
        commands,
        "sender",
        "Run or operate the sender (needs the sender extra).",
        f"{PROG} sender serve --database-url sqlite:///app.db --service-key KEY",
        "",
    )
    actions = sender.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, summary: str, example: str) -> argparse.ArgumentParser:
        sub = _command(actions, name, summary, f"{PROG} sender {name} {example}", f"sender:{name}")
        sub.add_argument(
            "--database-url",
            required=True,
            type=a.text,
            metavar="URL",
            help="the sender's database: sqlite:///app.db or postgresql://...",
        )
        return sub

    def schema_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--schema",
            type=a.text,
            metavar="NAME",
            help="PostgreSQL: the schema of the sender's tables (default fluxbase_sender)",
        )

    def private_networks_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--allow-private-networks",
            action="store_true",
            help="allow webhook URLs on private and loopback addresses (local development)",
        )

    serve = action(
        "serve",
        "Serve the webhooks management API (/api/v1/webhooks) and a delivery worker.",
        "--database-url sqlite:///app.db --port 8080 --service-key KEY",
    )
    serve.add_argument(
        "--host", type=a.text, default="127.0.0.1", help="address (default 127.0.0.1)"
    )
    serve.add_argument("--port", type=a.port, default=8080, help="port (default 8080)")
    serve.add_argument(
        "--service-key",
        action="append",
        default=[],
        type=a.text,
        metavar="KEY",
        help="a key that may read and write (repeatable; default $FLUXBASE_SERVICE_KEY)",
    )
    serve.add_argument(
        "--read-only-key",
        action="append",
        default=[],
        type=a.text,
        metavar="KEY",
        help="a key that may only read (repeatable)",
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        type=a.origin,
        metavar="ORIGIN",
        help="allow browser calls from ORIGIN (repeatable; '*' for any; default none)",
    )
    private_networks_option(serve)

    worker = action(
        "worker",
        "Deliver until SIGTERM or SIGINT.",
        "--database-url postgresql://... --concurrency 32",
    )
    schema_option(worker)
    worker.add_argument(
        "--concurrency", type=a.count, default=16, help="sends at once (default 16)"
    )
    worker.add_argument(
        "--poll-interval",
        type=a.seconds,
        default=1.0,
        metavar="SECONDS",
        help="look for due work at least this often (default 1)",
    )
    worker.add_argument(
        "--lease-grace",
        type=a.seconds,
        default=30.0,
        metavar="SECONDS",
        help="a lease lasts the webhook's timeout plus this (default 30)",
    )
    worker.add_argument(
        "--progress-interval",
        type=a.seconds,
        default=10.0,
        metavar="SECONDS",
        help="log a progress line this often (default 10)",
    )
    private_networks_option(worker)
    worker.add_argument("--verbose", action="store_true", help="log every delivery (DEBUG)")

    deliveries = action(
        "deliveries",
        "List a webhook's deliveries, newest first.",
        "WEBHOOK_ID --database-url sqlite:///app.db",
    )
    schema_option(deliveries)
    deliveries.add_argument("webhook_id", type=a.text, metavar="WEBHOOK_ID")
    deliveries.add_argument(
        "--limit", type=a.count, default=50, help="how many (default 50, at most 1000)"
    )
    deliveries.add_argument("--json", action="store_true", help="one JSON object per line")

    redeliver = action(
        "redeliver",
        "Queue a delivery's event to its webhook again.",
        "DELIVERY_ID --database-url sqlite:///app.db",
    )
    schema_option(redeliver)
    redeliver.add_argument("delivery_id", type=a.text, metavar="DELIVERY_ID")

    recover = action(
        "recover",
        "Re-queue every failed delivery created since a time.",
        "--since 2026-01-31T00:00:00Z --database-url sqlite:///app.db",
    )
    schema_option(recover)
    recover.add_argument(
        "--since", required=True, type=a.since, metavar="TIME", help="ISO 8601 or unix seconds"
    )
