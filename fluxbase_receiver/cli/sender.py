"""``fluxbase-receiver sender serve | worker | deliveries | redeliver | recover``.

``serve`` runs the management API and a delivery worker in one process; ``worker`` runs a
worker (any number may share a PostgreSQL database); the others are for operators. SIGTERM
or SIGINT lets running requests and sends finish, and exits 0. A worker logs a progress
line at INFO every ``--progress-interval`` seconds.

Needs the ``sender`` extra: the command imports this module only to run one of these.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable

from fluxbase_receiver.cli.arguments import CLIError
from fluxbase_receiver.cli.terminal import printable
from fluxbase_receiver.sender.backend import SenderStore, open_store
from fluxbase_receiver.sender.sender import Sender
from fluxbase_receiver.sender.serve import serve_management
from fluxbase_receiver.sender.worker import Worker

SERVICE_KEY_ENV = "FLUXBASE_SERVICE_KEY"


def _log(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def serve(args: argparse.Namespace) -> int:
    """The management API and a delivery worker until SIGTERM or SIGINT."""
    if not (args.service_key or args.read_only_key or os.environ.get(SERVICE_KEY_ENV)):
        raise CLIError(f"give --service-key or set {SERVICE_KEY_ENV}", status=2)
    _log()
    try:
        sender = Sender(args.database_url, allow_private_networks=args.allow_private_networks)
    except ValueError as error:
        raise CLIError(str(error), status=2) from None
    with sender:
        coroutine = serve_management(
            sender,
            host=args.host,
            port=args.port,
            service_keys=args.service_key,
            read_only_keys=args.read_only_key,
            cors_origins=args.cors_origin,
        )
        try:
            asyncio.run(coroutine)
        except ValueError as error:
            raise CLIError(str(error), status=2) from None
    return 0


def worker(args: argparse.Namespace) -> int:
    """Deliver until SIGTERM or SIGINT."""
    _log(args.verbose)
    return _with_store(args, lambda store: _run_worker(args, store))


def deliveries(args: argparse.Namespace) -> int:
    """A webhook's deliveries, newest first."""
    return _with_store(args, lambda store: _list(args, store))


def redeliver(args: argparse.Namespace) -> int:
    """Queue a delivery's event to its webhook again; print the new delivery's id."""
    return _with_store(args, lambda store: _redeliver(args, store))


def recover(args: argparse.Namespace) -> int:
    """Re-queue every failed delivery created since ``--since``."""
    return _with_store(args, lambda store: _recover(args, store))


def _with_store(args: argparse.Namespace, work: Callable[[SenderStore], Awaitable[int]]) -> int:
    """Run ``work`` with the store open; a failure of the database is a one-line error."""

    async def opened() -> int:
        options = {"schema": args.schema} if args.schema else {}
        try:
            store = open_store(args.database_url, **options)
        except (ValueError, TypeError) as error:
            raise CLIError(str(error), status=2) from None
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(opened())
    except CLIError:
        raise
    except Exception as error:  # the database out of reach, a file not writable, ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CLIError(f"{type(error).__name__}: {reason}") from None


async def _run_worker(args: argparse.Namespace, store: SenderStore) -> int:
    running = Worker(
        store,
        concurrency=args.concurrency,
        poll_interval=args.poll_interval,
        lease_grace_seconds=args.lease_grace,
        progress_interval=args.progress_interval,
        allow_private_networks=args.allow_private_networks,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, running.stop)
    await running.serve()
    return 0


async def _list(args: argparse.Namespace, store: SenderStore) -> int:
    if await store.get_webhook(args.webhook_id) is None:
        raise CLIError(f"no webhook with id {args.webhook_id!r}", status=2)
    for delivery in await store.list_deliveries(args.webhook_id, min(args.limit, 1000), 0):
        if args.json:
            fields = delivery.model_dump(mode="json", by_alias=True, exclude={"payload"})
            print(json.dumps(fields))  # ASCII: nothing in it can drive a terminal
            continue
        answer = delivery.response_status if delivery.response_status is not None else "-"
        print(
            printable(
                f"{delivery.id}  {delivery.status:<8} attempts={delivery.attempts}"
                f" answer={answer}  {delivery.event} {delivery.schema_name}.{delivery.table}"
                f"  {delivery.created_at.isoformat(timespec='seconds')}"
                + (f"  {delivery.error}" if delivery.error else "")
            )
        )
    return 0


async def _redeliver(args: argparse.Namespace, store: SenderStore) -> int:
    new_id = await store.redeliver(args.delivery_id, time.time())
    if new_id is None:
        raise CLIError(f"no delivery with id {args.delivery_id!r}", status=2)
    print(new_id)
    return 0


async def _recover(args: argparse.Namespace, store: SenderStore) -> int:
    count = await store.recover(args.since, time.time())
    print(json.dumps({"recovered": count}))
    return 0
