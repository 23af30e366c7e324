"""The operator commands: a worker process, delivery history, redeliver and recover."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fluxbase_receiver.cli import main as command_line
from fluxbase_receiver.cli.arguments import since
from fluxbase_receiver.sender.sqlite import SQLiteStore
from tests.sender.receivers import SECRET, ScriptedReceiver, serving
from tests.sender.stores import answer, change, claim_all, make_hook, recorded
from tests.servers import ROOT


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def main(argv: list[str]) -> int:
    """``fluxbase-receiver sender ARGV``."""
    return command_line(["sender", *argv])


async def seeded(path: Path, url: str = "http://127.0.0.1:9/hook", events: int = 2) -> str:
    """A webhook with ``events`` failed deliveries; its id."""
    store = SQLiteStore(path)
    await store.open()
    try:
        hook = await make_hook(store, url=url, secret=SECRET, max_retries=0)
        for i in range(events):
            await store.add_event(change(record={"id": i}))
        for claimed in await claim_all(store):
            await store.record_attempts([recorded(claimed, answer(500))])
        return hook.id
    finally:
        await store.close()


def test_deliveries_redeliver_and_recover(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = f"sqlite:///{tmp_path}/app.db"
    hook_id = run(seeded(tmp_path / "app.db"))

    assert main(["deliveries", hook_id, "--database-url", database]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(" failed " in line and "answer=500" in line for line in lines)

    assert main(["deliveries", hook_id, "--database-url", database, "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["status"] for d in listed] == ["failed", "failed"]
    assert listed[0]["schema"] == "public" and "payload" not in listed[0]

    assert main(["redeliver", listed[0]["id"], "--database-url", database]) == 0
    new_id = capsys.readouterr().out.strip()
    assert new_id and new_id != listed[0]["id"]

    assert main(["recover", "--since", "2999-01-01T00:00:00Z", "--database-url", database]) == 0
    assert json.loads(capsys.readouterr().out) == {"recovered": 0}
    assert main(["recover", "--since", str(time.time() - 60), "--database-url", database]) == 0
    assert json.loads(capsys.readouterr().out) == {"recovered": 2}


@pytest.mark.parametrize(
    "argv",
    [
        ["redeliver", "missing"],
        ["deliveries", "missing"],
        ["recover", "--since", "yesterday"],
    ],
)
def test_refusals_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main([*argv, "--database-url", f"sqlite:///{tmp_path}/app.db"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "error:" in error and "Traceback" not in error


def test_a_bad_database_url_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recover", "--since", "0", "--database-url", "mysql://x"]) == 2
    assert "sqlite:///" in capsys.readouterr().err


def test_since_accepts_iso_and_unix_times() -> None:
    assert since("1700000000.5") == 1700000000.5
    assert since("2023-11-14T22:13:20Z") == 1700000000
    assert since("2023-11-14T23:13:20+01:00") == 1700000000
    assert since("2023-11-14T22:13:20") == 1700000000


def test_a_worker_process_delivers_reports_progress_and_stops_on_sigterm(tmp_path: Path) -> None:
    target = ScriptedReceiver(SECRET)
    with serving(target) as url:
        run(seeded(tmp_path / "app.db", url=url, events=0))

        async def emit() -> None:
            store = SQLiteStore(tmp_path / "app.db")
            await store.open()
            for i in range(20):
                await store.add_event(change(record={"id": i}))
            await store.close()

        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fluxbase_receiver.cli",
                "sender",
                "worker",
                "--database-url",
                f"sqlite:///{tmp_path}/app.db",
                "--allow-private-networks",
                "--progress-interval",
                "0.2",
            ],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            run(emit())
            deadline = time.monotonic() + 30
            while len(target.events) < 20:
                assert time.monotonic() < deadline, "not delivered"
                time.sleep(0.05)
            time.sleep(0.5)  # a progress line or two
        finally:
            worker.send_signal(signal.SIGTERM)
            _, log = worker.communicate(timeout=30)
    assert worker.returncode == 0
    assert "stopped (delivered 20, retrying 0, failed 0)" in log
    assert re.search(r"INFO .*: delivered \d+, retrying \d+, failed \d+, backlog \d+", log)
    assert "DEBUG" not in log


def test_the_command_line_runs_sender_actions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = f"sqlite:///{tmp_path}/app.db"
    run(seeded(tmp_path / "app.db"))
    assert command_line(["sender", "recover", "--since", "0", "--database-url", database]) == 0
    assert json.loads(capsys.readouterr().out) == {"recovered": 2}
    assert command_line(["sender", "redeliver", "nope", "--database-url", database]) == 2
    assert "no delivery with id 'nope'" in capsys.readouterr().err
