"""Terminal output: colour when wanted, and untrusted text made safe to print."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping


def printable(text: str) -> str:
    """``text`` with every non-printable character (escape codes, newlines, bidi controls)
    written as a Python escape, so text from the network cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def printable_lines(text: str) -> str:
    """:func:`printable` for each line of ``text`` (its line breaks are kept)."""
    return "\n".join(printable(line) for line in text.split("\n"))


class Style:
    """ANSI colours, only when stdout is a terminal and ``NO_COLOR`` is unset."""

    CODES: Mapping[str, str] = {
        "INSERT": "32",
        "UPDATE": "33",
        "DELETE": "31",
        "TEST": "36",
        "error": "31;1",
        "dim": "2",
        "bold": "1",
    }

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_stdout(cls) -> Style:
        """Colour on a terminal unless ``NO_COLOR`` is set (https://no-color.org)."""
        return cls(sys.stdout.isatty() and not os.environ.get("NO_COLOR"))

    def __call__(self, name: str, text: str) -> str:
        code = self.CODES.get(name)
        return f"\033[{code}m{text}\033[0m" if self.enabled and code else text
