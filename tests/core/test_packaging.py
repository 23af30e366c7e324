"""The core imports nothing beyond pydantic and the standard library."""

from __future__ import annotations

import inspect
import subprocess
import sys

import fluxbase_receiver

OPTIONAL = [
    "flask",
    "werkzeug",
    "starlette",
    "fastapi",
    "httpx",
    "aiohttp",
    "uvicorn",
    "redis",
    "psycopg",
    "hypothesis",
    "pytest",
    "waitress",
    "anyio",
    "opentelemetry",
]


def test_importing_the_core_loads_no_optional_dependency() -> None:
    code = (
        "import sys, fluxbase_receiver\n"
        f"print(','.join(m for m in {OPTIONAL!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_public_api_is_exported_and_documented() -> None:
    for name in fluxbase_receiver.__all__:
        value = getattr(fluxbase_receiver, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__doc__, f"{name} has no docstring"
