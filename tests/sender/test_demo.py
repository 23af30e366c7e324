"""``fluxbase-receiver demo`` runs by itself and shows every milestone."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fluxbase_receiver.cli import main

COMMAND = Path(sys.executable).parent / "fluxbase-receiver"


def test_the_demo_command_shows_every_milestone() -> None:
    done = subprocess.run(
        [str(COMMAND), "demo"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for milestone in (
        "watched by triggers",
        "receiver  INSERT  order #1: 2 x notebook",
        "refused on purpose this time: answering 500",
        "attempt 1 failed (receiver answered 500); retrying in",
        "receiver  UPDATE  order #1: quantity: 2 -> 3, status: 'new' -> 'paid'",
        "receiver  DELETE  order #3 (eraser)",
        "200, duplicate dropped by the receiver",
        "Delivery history:",
        "[ok] every change delivered",
        "[ok] one delivery refused once, then retried",
        "[ok] duplicate dropped by the receiver",
        "[ok] each event handled once",
    ):
        assert milestone in out
    assert "MISSING" not in out
    assert "Traceback" not in done.stderr


def test_the_demo_keeps_its_database_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "demo.db"
    assert main(["demo", "--database", str(database), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "receiver  INSERT" not in out and "Delivery history:" in out
    with sqlite3.connect(database) as db:
        statuses = db.execute("SELECT status FROM fluxbase_deliveries").fetchall()
    assert statuses == [("success",)] * 6

    assert main(["demo", "--database", str(database)]) == 2
    assert "already exists" in capsys.readouterr().err
