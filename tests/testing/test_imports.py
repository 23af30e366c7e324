"""The plugin is loaded by every pytest run: it must stay light and framework-free."""

from __future__ import annotations

import subprocess
import sys

FRAMEWORKS = ("hypothesis", "flask", "werkzeug", "starlette", "fastapi", "httpx", "uvicorn")


def test_the_plugin_and_the_cli_import_no_framework() -> None:
    code = (
        "import sys, fluxbase_receiver.testing.plugin, fluxbase_receiver.cli;"
        f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
