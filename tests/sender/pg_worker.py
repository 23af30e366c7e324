"""A PostgreSQL sender worker for the tests: ``python -m tests.sender.pg_worker URL SCHEMA``.

SIGTERM drains the sends in flight and exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from fluxbase_receiver.sender.postgres import PostgresStore
from fluxbase_receiver.sender.worker import Worker


async def main(url: str, schema: str) -> None:
    store = PostgresStore(url, schema=schema)
    await store.open()
    worker = Worker(
        store,
        concurrency=16,
        poll_interval=0.2,
        lease_grace_seconds=1.0,
        allow_private_networks=True,
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.stop)
    try:
        await worker.serve()
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
