"""``fluxbase-receiver sender serve``: the API and a worker in one process, clean shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from fluxbase_receiver import AsyncFluxbaseClient, FluxbaseClient, ManagedWebhook
from fluxbase_receiver.sender import Sender, serve_management
from tests.sender.receivers import SECRET, ScriptedReceiver, serving
from tests.sender.served import SERVICE_KEY, sender_serve
from tests.servers import ROOT, free_port, wait_for_port


def test_the_api_and_the_worker_run_in_one_process_and_stop_on_sigterm(
    tmp_path: Path, target: ScriptedReceiver
) -> None:
    with serving(target) as hook_url, sender_serve(tmp_path) as url:
        hooks = FluxbaseClient(url, api_key=SERVICE_KEY).webhooks
        webhook = hooks.create({"name": "orders", "url": hook_url, "secret": SECRET})
        sent = hooks.test(webhook.id)
        assert sent.success and sent.delivery_id
        queued = hooks.redeliver(webhook.id, sent.delivery_id)
        assert queued.status == "pending"
        deadline = time.monotonic() + 20
        while hooks.get_deliveries(webhook.id, limit=1)[0].status != "success":
            assert time.monotonic() < deadline, "the worker did not deliver"
            time.sleep(0.05)
        assert len(target.requests) == 2
    # leaving sender_serve sent SIGTERM and checked the exit status is 0


def serve(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "fluxbase_receiver.cli", "sender", "serve", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)


def test_bad_invocations_are_one_line_errors(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "FLUXBASE_SERVICE_KEY"}
    database = f"sqlite:///{tmp_path}/s.db"
    no_key = serve("--database-url", database, env=environment)
    assert no_key.returncode == 2 and "FLUXBASE_SERVICE_KEY" in no_key.stderr
    short = serve("--database-url", database, "--service-key", "short", env=environment)
    assert short.returncode == 2 and "at least 16" in short.stderr
    bad_url = serve("--database-url", "mysql://x", "--service-key", SERVICE_KEY, env=environment)
    assert bad_url.returncode == 2 and "database_url" in bad_url.stderr
    assert "Traceback" not in no_key.stderr + short.stderr + bad_url.stderr
    assert serve("--help").returncode == 0


def test_the_database_url_is_required() -> None:
    result = serve("--service-key", SERVICE_KEY)
    assert result.returncode == 2 and "--database-url" in result.stderr


def test_the_management_example_ends_with_a_delivery_in_the_history() -> None:
    example = ROOT / "examples" / "manage_webhooks.py"
    result = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    verbs = [line.split()[0] for line in lines]
    assert verbs == ["created", "listed", "got", "updated", "tested", "deleted", "delivery"]
    assert "TEST success status_code=200" in lines[-1]


def test_serve_management_runs_in_any_thread_and_stops_when_cancelled(sender: Sender) -> None:
    port = free_port()

    async def scenario() -> list[ManagedWebhook]:
        task = asyncio.create_task(serve_management(sender, port=port, service_keys=[SERVICE_KEY]))
        await asyncio.to_thread(wait_for_port, port)
        client = AsyncFluxbaseClient(f"http://127.0.0.1:{port}", api_key=SERVICE_KEY)
        listed = await client.webhooks.list()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return listed

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, scenario()).result(timeout=30) == []
