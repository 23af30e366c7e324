"""The management API and a delivery worker in one process (``fluxbase-receiver sender serve``).

SIGTERM or SIGINT stops accepting requests and lets running requests and sends finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence

import uvicorn

from fluxbase_receiver.sender.api import management_app
from fluxbase_receiver.sender.sender import Sender

__all__ = ["serve_management"]


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
