"""Argument checking for every command: one-line errors and the value parsers.

Imports only the standard library.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

PROG = "fluxbase-receiver"
SECRET_ENV = "FLUXBASE_WEBHOOK_SECRET"
MAX_SECONDS = 86_400.0
"""The longest timeout or interval a command takes (a day)."""
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP header name (RFC 9110 token)."""


class CLIError(Exception):
    """A one-line error for the user; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        raise CLIError(f"{command + ': ' if command else ''}{message} (see --help)", status=2)


def secrets(given: Sequence[str] | None) -> list[str]:
    """The secrets from ``--secret`` (repeatable: rotation), else the environment."""
    found = list(given or ())
    if not found and os.environ.get(SECRET_ENV):
        found = [os.environ[SECRET_ENV]]
    if not found or not all(found):
        raise CLIError(f"no webhook secret: pass --secret or set {SECRET_ENV}")
    if not all(map(is_utf8, found)):
        raise CLIError("the webhook secret is not valid UTF-8")
    return found


def is_utf8(text: str) -> bool:
    """False for command-line text that came from bytes that are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_body(source: str) -> bytes:
    """The exact bytes of FILE, or of stdin for ``-``."""
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        with open(source, "rb") as file:
            return file.read()
    except OSError as error:
        raise CLIError(f"cannot read {source}: {error.strerror or error}") from None


# -- value parsers (argparse ``type=``) -----------------------------------------------


def text(value: str) -> str:
    """An argument that must be UTF-8 text."""
    if not is_utf8(value):
        raise argparse.ArgumentTypeError("not valid UTF-8")
    return value


def tolerance(value: str) -> float | None:
    """``--tolerance`` seconds, or ``off`` for no age check (replaying stored events)."""
    if value.lower() in ("off", "none"):
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds or 'off': {value!r}") from None
    if not seconds >= 0:
        raise argparse.ArgumentTypeError("must be zero or more seconds")
    return seconds


def seconds(value: str) -> float:
    """A positive number of seconds, at most a day (timeouts and intervals)."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0 < number <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of seconds up to {MAX_SECONDS:.0f}, got {value!r}"
        )
    return number


def count(value: str) -> int:
    """A whole number from 1 to 10,000 (concurrency, list limits)."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= 10_000:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 10000, got {value!r}")
    return number


def port(value: str) -> int:
    """A TCP port number (0: any free port)."""
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 0 <= number <= 65_535:
        raise argparse.ArgumentTypeError(f"a port is a number 0-65535, got {value!r}")
    return number


def since(value: str) -> float:
    """Unix seconds from an ISO 8601 time (``Z`` or an offset; UTC when none) or a number."""
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise argparse.ArgumentTypeError(f"not a time: {value!r}")
        return number
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time (2026-01-31T00:00:00Z) or unix seconds, not {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def json_object(value: str) -> dict[str, Any]:
    """A JSON object given on the command line."""
    text(value)
    try:
        parsed = json.loads(value, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error.msg})") from None
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error})") from None
    except RecursionError:
        raise argparse.ArgumentTypeError("not valid JSON (nested too deeply)") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"id\": 1}'")
    return parsed


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def header(value: str) -> tuple[str, str]:
    """A ``Name: value`` header."""
    name, sep, content = (part.strip() for part in text(value).partition(":"))
    if not sep or not name or any(c in value for c in "\r\n"):
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {value!r}")
    if not _TOKEN.fullmatch(name):
        raise argparse.ArgumentTypeError(f"not a valid header name: {name!r}")
    if any((c < " " and c != "\t") or c == "\x7f" for c in content):
        raise argparse.ArgumentTypeError(f"the value of {name} has a control character")
    try:
        content.encode("latin-1")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(
            f"the value of {name} must be Latin-1 text (HTTP cannot carry other characters)"
        ) from None
    return name, content


def url(value: str) -> str:
    """An http:// or https:// URL with a host (and a valid port, if it names one)."""
    if not value.lower().startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// URL, got {value!r}")
    if not text(value).isascii() or any(c <= " " or c == "\x7f" for c in value):
        raise argparse.ArgumentTypeError(
            f"bad URL {value!r}: percent-encode spaces, control and non-ASCII characters"
        )
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - reading it checks it
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"bad URL {value!r}: {error}") from None
    if not parts.hostname:
        raise argparse.ArgumentTypeError(f"no host in {value!r}")
    return value


def origin(value: str) -> str:
    """A CORS origin: ``*`` or ``scheme://host[:port]`` with nothing after it."""
    if value == "*":
        return value
    url(value)
    parts = urllib.parse.urlsplit(value)
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise argparse.ArgumentTypeError(f"an origin is scheme://host[:port] or '*', got {value!r}")
    return value
