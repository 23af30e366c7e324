"""The examples under the commands their docstrings give, and the missing-framework message."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.adapters.conftest import PATH, SECRET, event_body, signed_headers
from tests.servers import ROOT, free_port, wait_for_port

BIN = Path(sys.executable).parent
MODULE = "fluxbase_receiver.adapters"


@contextmanager
def command(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run a command from the repository root with the test secret; stop it afterwards."""
    env = {**os.environ, "FLUXBASE_WEBHOOK_SECRET": SECRET}
    process = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.mark.parametrize(
    "args",
    [
        ["uvicorn", "examples.starlette_app:app"],
        ["uvicorn", "examples.fastapi_app:app"],
        ["flask", "--app", "examples/flask_app", "run"],
    ],
    ids=["starlette", "fastapi", "flask"],
)
def test_example_serves_under_its_documented_command(args: list[str]) -> None:
    port = free_port()
    with command(str(BIN / args[0]), *args[1:], "--port", str(port)):
        wait_for_port(port, timeout=30)
        body = event_body("UPDATE", "orders")
        response = httpx.post(
            f"http://127.0.0.1:{port}{PATH}", content=body, headers=signed_headers(body)
        )
    assert response.status_code == 200
    assert response.json() == {"ok": True}


@pytest.mark.parametrize(
    ("adapter", "blocked", "message"),
    [
        ("flask", "flask", "needs Flask: pip install 'fluxbase-receiver[flask]'"),
        ("wsgi", "werkzeug", "needs Werkzeug: pip install 'fluxbase-receiver[wsgi]'"),
        ("starlette", "starlette", "needs Starlette: pip install 'fluxbase-receiver[starlette]'"),
        ("fastapi", "fastapi", "needs FastAPI: pip install 'fluxbase-receiver[fastapi]'"),
    ],
)
def test_missing_framework_fails_with_one_line_naming_the_extra(
    adapter: str, blocked: str, message: str
) -> None:
    code = (
        f"import sys; sys.modules[{blocked!r}] = None; import fluxbase_receiver.adapters.{adapter}"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == f"ImportError: fluxbase_receiver.adapters.{adapter} {message}"


def test_lambda_adapter_needs_no_framework() -> None:
    blocked = ["flask", "werkzeug", "starlette", "fastapi"]
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({blocked!r})); "
        "import fluxbase_receiver.adapters.aws_lambda"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
