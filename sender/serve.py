"""``fluxbase-receiver sender serve``: the management API and a delivery worker in one process.

    fluxbase-receiver sender serve --database-url sqlite:///app.db --port 8080

The service key comes from ``--service-key`` (repeatable) or ``FLUXBASE_SERVICE_KEY``.
SIGTERM or SIGINT stops accepting requests, lets running requests and sends finish,
and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

import uvicorn

from fluxbase_receiver.sender.api import management_app
from fluxbase_receiver.sender.sender import Sender

__all__ = ["main", "serve_management"]

PROG = "fluxbase-receiver sender serve"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: :func:`serve_management` stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_management(
    sender: Sender,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    service_keys: Sequence[str] | None = None,
    read_only_keys: Sequence[str] = (),
    cors_origins: Sequence[str] = (),
) -> None:
    """Serve the management API on ``host:port`` and deliver, until SIGTERM or SIGINT.

    Signals are handled in the main thread; elsewhere, cancel the task to stop.
    """
    app = management_app(
        sender, service_keys or None, read_only_keys=read_only_keys, cors_origins=cors_origins
    )
    server = _Server(uvicorn.Config(app, host=host, port=port, lifespan="off", log_config=None))
    worker = asyncio.create_task(sender.serve())

    def stop() -> None:
        server.should_exit = True
        sender.stop()

    loop = asyncio.get_running_loop()
    main_thread = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGINT, signal.SIGTERM) if main_thread else ()
    for signum in signals:
        loop.add_signal_handler(signum, stop)
    try:
        await server.serve()
    finally:
        sender.stop()
        await worker
        for signum in signals:
            loop.remove_signal_handler(signum)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run the webhooks management API (/api/v1/webhooks) and a delivery worker.",
    )
    parser.add_argument(
        "--database-url",
        required=True,
        metavar="URL",
        help="the sender's database, e.g. sqlite:///app.db",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument(
        "--service-key",
        action="append",
        default=[],
        metavar="KEY",
        help="a key that may read and write (repeatable; default $FLUXBASE_SERVICE_KEY)",
    )
    parser.add_argument(
        "--read-only-key",
        action="append",
        default=[],
        metavar="KEY",
        help="a key that may only read (repeatable)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser calls from ORIGIN (repeatable; '*' for any; default none)",
    )
    parser.add_argument(
        "--allow-private-networks",
        action="store_true",
        help="allow webhook URLs on private and loopback addresses (local development)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sender serve`` with ``argv``; return the exit status."""
    args = _parser().parse_args(argv)
    if not (args.service_key or args.read_only_key or os.environ.get("FLUXBASE_SERVICE_KEY")):
        print(f"{PROG}: error: give --service-key or set FLUXBASE_SERVICE_KEY", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        sender = Sender(args.database_url, allow_private_networks=args.allow_private_networks)
    except ValueError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    with sender:
        try:
            coroutine = serve_management(
                sender,
                host=args.host,
                port=args.port,
                service_keys=args.service_key,
                read_only_keys=args.read_only_key,
                cors_origins=args.cors_origin,
            )
            asyncio.run(coroutine)
        except ValueError as error:
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
