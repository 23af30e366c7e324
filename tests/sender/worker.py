"""A sender worker process for the crash tests: ``python -m tests.sender.worker DB_URL``."""

from __future__ import annotations

import sys

from fluxbase_receiver.sender import Sender

if __name__ == "__main__":
    with Sender(
        sys.argv[1],
        allow_private_networks=True,
        concurrency=4,
        poll_interval=0.1,
        lease_grace_seconds=0.5,
    ) as sender:
        sender.run()
