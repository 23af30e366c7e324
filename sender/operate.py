"""``fluxbase-receiver sender worker | deliveries | redeliver | recover``: run and operate.

    fluxbase-receiver sender worker --database-url postgresql://... --concurrency 32
    fluxbase-receiver sender deliveries WEBHOOK_ID --database-url sqlite:///app.db
    fluxbase-receiver sender redeliver DELIVERY_ID --database-url sqlite:///app.db
    fluxbase-receiver sender recover --since 2026-01-31T00:00:00Z --database-url ...

A worker logs a progress line at INFO every ``--progress-interval`` seconds; SIGTERM or
SIGINT lets the sends in flight finish and exits 0. Any number of workers may share a
PostgreSQL database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from fluxbase_receiver.sender.backend import SenderStore, open_store
from fluxbase_receiver.sender.worker import Worker

__all__ = ["main", "parse_since"]

PROG = "fluxbase-receiver sender"


class _Refused(Exception):
    """A one-line error for the operator."""


def parse_since(text: str) -> float:
    """Unix seconds from an ISO 8601 time (``Z`` or an offset; UTC when none) or a number."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _Refused(
            f"--since must be an ISO 8601 time (2026-01-31T00:00:00Z) or unix seconds, not {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, summary: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=summary, description=summary)
        sub.add_argument(
            "--database-url",
            required=True,
            metavar="URL",
            help="the sender's database: sqlite:///app.db or postgresql://...",
        )
        sub.add_argument(
            "--schema",
            metavar="NAME",
            help="PostgreSQL: the schema of the sender's tables (default fluxbase_sender)",
        )
        return sub

    worker = action("worker", "Deliver until SIGTERM or SIGINT.")
    worker.add_argument("--concurrency", type=int, default=16, help="sends at once (default 16)")
    worker.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="look for due work at least this often (default 1)",
    )
    worker.add_argument(
        "--lease-grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a lease lasts the webhook's timeout plus this (default 30)",
    )
    worker.add_argument(
        "--progress-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="log a progress line this often (default 10)",
    )
    worker.add_argument(
        "--allow-private-networks",
        action="store_true",
        help="allow webhook URLs on private and loopback addresses (local development)",
    )
    worker.add_argument("--verbose", action="store_true", help="log every delivery (DEBUG)")

    deliveries = action("deliveries", "List a webhook's deliveries, newest first.")
    deliveries.add_argument("webhook_id", metavar="WEBHOOK_ID")
    deliveries.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    deliveries.add_argument("--json", action="store_true", help="one JSON object per line")

    redeliver = action("redeliver", "Queue a delivery's event to its webhook again.")
    redeliver.add_argument("delivery_id", metavar="DELIVERY_ID")

    recover = action("recover", "Re-queue every failed delivery created since a time.")
    recover.add_argument("--since", required=True, metavar="TIME", help="ISO 8601 or unix seconds")
    return parser


async def _with_store(
    args: argparse.Namespace, work: Callable[[SenderStore], Awaitable[int]]
) -> int:
    options = {"schema": args.schema} if args.schema else {}
    try:
        store = open_store(args.database_url, **options)
    except (ValueError, TypeError) as error:
        raise _Refused(str(error)) from None
    await store.open()
    try:
        return await work(store)
    finally:
        await store.close()


async def _run_worker(args: argparse.Namespace, store: SenderStore) -> int:
    if args.concurrency < 1:
        raise _Refused("--concurrency must be at least 1")
    worker = Worker(
        store,
        concurrency=args.concurrency,
        poll_interval=args.poll_interval,
        lease_grace_seconds=args.lease_grace,
        progress_interval=args.progress_interval,
        allow_private_networks=args.allow_private_networks,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    await worker.serve()
    return 0


async def _list(args: argparse.Namespace, store: SenderStore) -> int:
    if await store.get_webhook(args.webhook_id) is None:
        raise _Refused(f"no webhook with id {args.webhook_id!r}")
    found = await store.list_deliveries(args.webhook_id, max(1, min(args.limit, 1000)), 0)
    for delivery in found:
        if args.json:
            print(delivery.model_dump_json(by_alias=True, exclude={"payload"}))
            continue
        answer = delivery.response_status if delivery.response_status is not None else "-"
        print(
            f"{delivery.id}  {delivery.status:<8} attempts={delivery.attempts}"
            f" answer={answer}  {delivery.event} {delivery.schema_name}.{delivery.table}"
            f"  {delivery.created_at.isoformat(timespec='seconds')}"
            + (f"  {delivery.error}" if delivery.error else "")
        )
    return 0


async def _redeliver(args: argparse.Namespace, store: SenderStore) -> int:
    new_id = await store.redeliver(args.delivery_id, time.time())
    if new_id is None:
        raise _Refused(f"no delivery with id {args.delivery_id!r}")
    print(new_id)
    return 0


async def _recover(args: argparse.Namespace, store: SenderStore) -> int:
    since = parse_since(args.since)
    count = await store.recover(since, time.time())
    print(json.dumps({"recovered": count}))
    return 0


_ACTIONS = {
    "worker": _run_worker,
    "deliveries": _list,
    "redeliver": _redeliver,
    "recover": _recover,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sender ACTION`` with ``argv``; return the exit status."""
    args = _parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    run = _ACTIONS[args.action]
    try:
        return asyncio.run(_with_store(args, lambda store: run(args, store)))
    except _Refused as error:
        print(f"{PROG} {args.action}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # the database out of reach, a file not writable, ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"{PROG} {args.action}: error: {type(error).__name__}: {reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
