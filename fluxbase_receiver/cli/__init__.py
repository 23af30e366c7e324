"""``fluxbase-receiver``: sign, verify, send and receive Fluxbase webhooks from a terminal.

Commands: ``sign``, ``verify``, ``send``, ``lambda-event``, ``listen``, ``demo`` and
``sender`` (``serve``, ``worker``, ``deliveries``, ``redeliver``, ``recover``); one module
each in this package, imported only when that command runs. Secrets come from
``--secret`` or ``FLUXBASE_WEBHOOK_SECRET``. Errors are one line on stderr with a non-zero
exit status. Ctrl-C stops ``listen`` with status 0; it interrupts any other command with
one line and status 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from fluxbase_receiver.cli.arguments import PROG, CLIError
from fluxbase_receiver.cli.parser import build

__all__ = ["main"]

EXTRAS = {"demo": "sender", "sender": "sender"}
"""Commands that need an extra installed, by command."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        args = build().parse_args(sys.argv[1:] if argv is None else list(argv))
        status: int = _command(args)(args)
        return status
    except CLIError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0


def _command(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    """The function that runs the chosen command, importing its module now.

    A module that needs a missing optional dependency is a one-line error naming the
    extra to install.
    """
    module_name, _, function = args.run.partition(":")
    try:
        module = importlib.import_module(f"fluxbase_receiver.cli.{module_name}")
    except ImportError as error:
        missing = error.name or ""
        extra = EXTRAS.get(args.command)
        if extra is None or missing.startswith("fluxbase_receiver"):
            raise
        if missing:
            install = f"pip install 'fluxbase-receiver[{extra}]'"
            raise CLIError(f"{args.command} needs {missing}: {install}") from None
        raise CLIError(str(error)) from None
    run: Callable[[argparse.Namespace], int] = getattr(module, function)
    return run
