"""``fluxbase-receiver sender serve`` as a real process on loopback, for contract tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.servers import free_port, wait_for_port

SERVICE_KEY = "sk_test_contract_0123456789abcdef"
READ_ONLY_KEY = "sk_read_contract_0123456789abcdef"


@contextmanager
def sender_serve(directory: Path, *extra: str) -> Iterator[str]:
    """Run ``sender serve`` on a free loopback port; yield its URL.

    On exit the process gets SIGTERM and must stop cleanly with status 0.
    """
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "fluxbase_receiver.cli",
        "sender",
        "serve",
        "--database-url",
        f"sqlite:///{directory}/sender.db",
        "--port",
        str(port),
        "--service-key",
        SERVICE_KEY,
        "--read-only-key",
        READ_ONLY_KEY,
        "--allow-private-networks",
        *extra,
    ]
    environment = {k: v for k, v in os.environ.items() if k != "FLUXBASE_SERVICE_KEY"}
    log = directory / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=environment
        )
        try:
            wait_for_port(port)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                status = process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
    assert status == 0, log.read_text("utf-8", "replace")
