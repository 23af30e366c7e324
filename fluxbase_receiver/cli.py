"""``fluxbase-receiver``: sign, verify, send and receive Fluxbase webhooks from a terminal.

Subcommands: ``sign``, ``verify``, ``send``, ``listen`` and ``demo``. Secrets come from
``--secret`` or ``FLUXBASE_WEBHOOK_SECRET``. Errors are one line on stderr with a
non-zero exit status; Ctrl-C exits cleanly with status 0.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NoReturn

from fluxbase_receiver.errors import WebhookError
from fluxbase_receiver.events import OPERATIONS, WebhookEvent, parse_event
from fluxbase_receiver.idempotency import MemoryIdempotencyStore
from fluxbase_receiver.receiver import Outcome, Receiver
from fluxbase_receiver.signature import (
    DEFAULT_TOLERANCE,
    sign_payload,
    verify_legacy_signature,
    verify_signature,
)
from fluxbase_receiver.testing import make_event, sign_event

__all__ = ["main"]

PROG = "fluxbase-receiver"
SECRET_ENV = "FLUXBASE_WEBHOOK_SECRET"
HOP_BY_HOP = frozenset(
    ("connection", "content-length", "host", "keep-alive", "transfer-encoding", "upgrade")
)


class CLIError(Exception):
    """A one-line error for the user; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        raise CLIError(f"{command + ': ' if command else ''}{message} (see --help)", status=2)


# -- shared helpers -------------------------------------------------------------------


def _secrets(given: Sequence[str] | None) -> list[str]:
    """The secrets from ``--secret`` (repeatable: rotation), else the environment."""
    found = list(given or ())
    if not found and os.environ.get(SECRET_ENV):
        found = [os.environ[SECRET_ENV]]
    if not found or not all(found):
        raise CLIError(f"no webhook secret: pass --secret or set {SECRET_ENV}")
    return found


def _read_body(source: str) -> bytes:
    """The exact bytes of FILE, or of stdin for ``-``."""
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        with open(source, "rb") as file:
            return file.read()
    except OSError as error:
        raise CLIError(f"cannot read {source}: {error.strerror or error}") from None


def _tolerance(text: str) -> float | None:
    """``--tolerance`` seconds, or ``off`` for no age check (replaying stored events)."""
    if text.lower() in ("off", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds or 'off': {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be zero or more seconds")
    return value


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object given on the command line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"id\": 1}'")
    return value


def _header(text: str) -> tuple[str, str]:
    """A ``Name: value`` header."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c in text for c in "\r\n"):
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Report a 3xx as the answer instead of following it (a webhook is not redirected)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _post(
    url: str, body: bytes, headers: Mapping[str, str], timeout: float
) -> tuple[int, str, bytes, dict[str, str]]:
    """POST and return ``(status, reason, body, headers)``; any HTTP status is an answer."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, response.reason, response.read(), dict(response.headers)
    except urllib.error.HTTPError as answer:
        return answer.code, answer.reason, answer.read(), dict(answer.headers)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CLIError(f"cannot reach {url}: {reason}") from None


def _check_url(url: str) -> str:
    if not url.lower().startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// URL, got {url!r}")
    return url


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


# -- sign / verify --------------------------------------------------------------------


def _sign(args: argparse.Namespace) -> int:
    body = _read_body(args.file)
    print(sign_payload(body, _secrets(args.secret), timestamp=args.timestamp))
    return 0


def _verify(args: argparse.Namespace) -> int:
    body = _read_body(args.file)
    secrets = _secrets(args.secret)
    try:
        if args.legacy:
            verify_legacy_signature(body, args.signature, secrets)
        else:
            verify_signature(body, args.signature, secrets, tolerance=args.tolerance)
        event = parse_event(body)
    except WebhookError as error:
        raise CLIError(f"{error.code}: {error}") from None
    print(event.model_dump_json(indent=2, exclude_none=True))
    return 0


# -- send -----------------------------------------------------------------------------


def _send(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"table": args.table, "schema": args.schema}
    if args.record is not None:
        fields["record"] = args.record
    if args.old_record is not None:
        fields["old_record"] = args.old_record
    if args.webhook_id is not None:
        fields["webhook_id"] = args.webhook_id
    payload = make_event(args.event, **fields)
    body, headers = sign_event(payload, _secrets(args.secret), headers=dict(args.header))
    status, reason, answer, _ = _post(args.url, body, headers, args.timeout)
    style = Style.for_stdout()
    print(style("bold" if 200 <= status < 300 else "error", f"{status} {reason}".strip()))
    if answer:
        print(_pretty(answer))
    return 0 if 200 <= status < 300 else 1


def _pretty(body: bytes) -> str:
    """A response body: indented when it is JSON, else its text."""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body.decode("utf-8", "replace")


# -- listen ---------------------------------------------------------------------------


class Listener:
    """Verifies, dedupes and prints every webhook; optionally forwards verified ones."""

    def __init__(
        self,
        receiver: Receiver,
        style: Style,
        forward_to: str | None,
        write: Callable[[str], None],
    ) -> None:
        if not isinstance(receiver.store, MemoryIdempotencyStore):
            raise TypeError("the listener needs a receiver with an in-memory idempotency store")
        self.receiver = receiver
        self.store = receiver.store
        self.style = style
        self.forward_to = forward_to
        self._write = write
        self._lock = threading.Lock()

    def handle(self, method: str, body: bytes, headers: list[tuple[str, str]]) -> Outcome:
        """Answer one request (and print what happened).

        When forwarding, a verified new event goes to the local app and the app's answer
        is returned; if the app fails, the claim is released so a retry is forwarded again.
        """
        admitted = self.receiver.admit(body, headers, method)
        if isinstance(admitted, Outcome):
            answer = admitted
        elif self.forward_to is None:
            answer = self.receiver.process(admitted)
        else:
            status, reply = _forward(self.forward_to, body, headers)
            answer = Outcome(status, reply, admitted.event)
            if answer.ok:
                self.receiver.process(admitted)
            elif admitted.key is not None:
                self.store.release(admitted.key)
        self.report(answer)
        return answer

    def report(self, outcome: Outcome) -> None:
        """Print one line per request, then the event's rows."""
        s = self.style
        when = s("dim", time.strftime("%H:%M:%S"))
        event = outcome.event
        status = s("error" if not outcome.ok else "bold", str(outcome.status))
        lines: list[str] = []
        if event is None:
            message = f"{outcome.body.get('error')}: {outcome.body.get('message')}"
            lines.append(f"{when} {status} {s('error', 'refused')} {message}")
        else:
            note = ""
            if outcome.body.get("duplicate"):
                note = s("dim", " duplicate (already handled)")
            elif not outcome.ok:
                note = " " + s("error", str(outcome.body.get("error") or outcome.body))
            label = s(event.event, f"{event.event:<6}")
            lines.append(f"{when} {status} {label} {s('bold', event.qualified_table)}{note}")
            if not outcome.body.get("duplicate"):
                lines.extend(_describe(event))
        with self._lock:
            self._write("\n".join(lines))


def _forward(url: str, body: bytes, headers: list[tuple[str, str]]) -> tuple[int, dict[str, Any]]:
    """POST the original request to ``url``; its status and JSON body (502 if unreachable)."""
    kept = {name: value for name, value in headers if name.lower() not in HOP_BY_HOP}
    try:
        status, _, answer, _ = _post(url, body, kept, timeout=30)
    except CLIError as error:
        return 502, {"error": "forward_failed", "message": str(error)}
    try:
        decoded = json.loads(answer) if answer else {}
    except ValueError:
        decoded = answer.decode("utf-8", "replace")
    return status, decoded if isinstance(decoded, dict) else {"body": decoded}


def _describe(event: WebhookEvent) -> list[str]:
    """The indented detail lines for an event: ids, then the rows (changes for UPDATE)."""
    data = event.model_dump(mode="json", by_alias=True, exclude_none=True)
    lines = [f"  {key}: {data[key]}" for key in ("timestamp", "webhook_id", "id") if key in data]
    if event.event == "UPDATE" and event.old_record is not None:
        lines.append("  changes:")
        for column, (old, new) in event.changes.items():
            lines.append(f"    {column}: {_compact(old)} -> {_compact(new)}")
    for key in ("record", "old_record"):
        if key in data and not (key == "old_record" and event.event == "UPDATE"):
            text = json.dumps(data[key], indent=2, ensure_ascii=False)
            lines.append(f"  {key}: " + text.replace("\n", "\n  "))
    return lines


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _handler_class(listener: Listener) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "fluxbase-receiver"
        sys_version = ""

        def _serve(self) -> None:
            headers = list(self.headers.items())
            early = listener.receiver.precheck(self.command, headers)
            if early is not None:
                listener.report(early)
                self._answer(early)
                return
            declared = self.headers.get("Content-Length", "0").strip()
            length = int(declared) if declared.isdigit() else 0
            self._answer(listener.handle(self.command, self.rfile.read(length), headers))

        do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _serve

        def _answer(self, outcome: Outcome) -> None:
            body = outcome.body_bytes()
            self.send_response(outcome.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Requests are reported by the listener, not logged again."""

    return Handler


def _listen(args: argparse.Namespace) -> int:
    # Every request is reported on stdout; keep the core's log lines off the terminal.
    logging.getLogger("fluxbase_receiver").addHandler(logging.NullHandler())
    receiver = Receiver(
        _secrets(args.secret), tolerance=args.tolerance, allow_legacy_signature=args.legacy
    )
    style = Style.for_stdout()
    listener = Listener(receiver, style, args.forward_to, lambda text: print(text, flush=True))
    try:
        server = ThreadingHTTPServer((args.host, args.port), _handler_class(listener))
    except OSError as error:
        raise CLIError(
            f"cannot listen on {args.host}:{args.port}: {error.strerror or error}"
        ) from None
    url = f"http://{args.host}:{server.server_port}"
    print(f"{style('bold', 'listening')} on {url} (Ctrl-C to stop)", flush=True)
    if args.forward_to:
        print(f"forwarding verified events to {args.forward_to}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.server_close()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# -- demo -----------------------------------------------------------------------------


def _demo(argv: list[str]) -> int:
    """Run ``fluxbase_receiver.sender.demo.main`` (needs the ``sender`` extra)."""
    try:
        module = importlib.import_module("fluxbase_receiver.sender.demo")
    except ImportError as error:
        missing = error.name or ""
        if isinstance(error, ModuleNotFoundError) and not missing.startswith("fluxbase_receiver"):
            raise CLIError(
                f"the demo needs {missing}: pip install 'fluxbase-receiver[sender]'"
            ) from None
        raise CLIError(str(error)) from None
    run: Callable[[list[str]], int] = module.main
    return run(argv)


# -- the parser -----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Sign, verify, send and receive Fluxbase database webhooks.",
        epilog=f"Secrets come from --secret or ${SECRET_ENV}. "
        f"Run '{PROG} COMMAND --help' for examples.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str, example: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        return sub

    def secret_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--secret",
            action="append",
            metavar="S",
            help=f"webhook secret (repeat during rotation; default ${SECRET_ENV})",
        )

    sign = command(
        "sign",
        "Print the X-Fluxbase-Signature header value for a body.",
        f"{PROG} sign --secret s3cr3t event.json",
    )
    secret_option(sign)
    sign.add_argument("--timestamp", type=int, metavar="T", help="unix seconds (default: now)")
    sign.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="body (default stdin)")
    sign.set_defaults(run=_sign)

    verify = command(
        "verify",
        "Check a signature; print the parsed event (exit 0) or the reason (exit 1).",
        f'{PROG} verify --secret s3cr3t --signature "t=1762079400,v1=67c7..." event.json',
    )
    secret_option(verify)
    verify.add_argument("--signature", required=True, metavar="HEADER", help="the header value")
    verify.add_argument(
        "--tolerance",
        type=_tolerance,
        default=DEFAULT_TOLERANCE,
        metavar="N",
        help="allowed clock difference in seconds, or 'off' (default 300)",
    )
    verify.add_argument(
        "--legacy", action="store_true", help="HEADER is a legacy X-Webhook-Signature hex digest"
    )
    verify.add_argument(
        "file", nargs="?", default="-", metavar="FILE|-", help="body (default stdin)"
    )
    verify.set_defaults(run=_verify)

    send = command(
        "send",
        "Send a signed event with a Fluxbase server's headers; print the answer.",
        f"{PROG} send http://127.0.0.1:8000/webhooks/fluxbase --secret s3cr3t \\\n"
        '    --event UPDATE --table orders --record \'{"id": 1, "status": "paid"}\' \\\n'
        '    --old-record \'{"id": 1, "status": "new"}\'',
    )
    send.add_argument("url", type=_check_url, metavar="URL")
    secret_option(send)
    send.add_argument(
        "--event",
        type=str.upper,
        choices=OPERATIONS,
        default="INSERT",
        help="INSERT, UPDATE, DELETE or TEST (default INSERT)",
    )
    send.add_argument("--table", default=None, help="table name (default users; test for TEST)")
    send.add_argument("--schema", default="public", help="schema name (default public)")
    send.add_argument("--record", type=_json_object, metavar="JSON", help="the row (a JSON object)")
    send.add_argument(
        "--old-record", type=_json_object, metavar="JSON", help="the row before (UPDATE, DELETE)"
    )
    send.add_argument("--webhook-id", metavar="ID", help="webhook_id (default: a random UUID)")
    send.add_argument(
        "--header",
        type=_header,
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra header (repeatable)",
    )
    send.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    send.set_defaults(run=_send)

    listen = command(
        "listen",
        "Run a local receiver that verifies, dedupes and prints every event.",
        f"{PROG} listen --secret s3cr3t --port 8787 "
        "--forward-to http://127.0.0.1:8000/webhooks/fluxbase",
    )
    secret_option(listen)
    listen.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    listen.add_argument("--port", type=int, default=8787, help="port (default 8787)")
    listen.add_argument(
        "--forward-to",
        type=_check_url,
        metavar="URL",
        help="POST each verified event, with its original headers, to this URL; "
        "its answer is returned to the sender",
    )
    listen.add_argument(
        "--tolerance",
        type=_tolerance,
        default=DEFAULT_TOLERANCE,
        metavar="N",
        help="allowed clock difference in seconds, or 'off' (default 300)",
    )
    listen.add_argument(
        "--legacy", action="store_true", help="also accept the legacy X-Webhook-Signature"
    )
    listen.set_defaults(run=_listen)

    command(
        "demo",
        "Run the sender demo (needs the sender extra); arguments go to the demo.",
        f"{PROG} demo --help",
    ).add_argument("args", nargs=argparse.REMAINDER, help="arguments for the demo")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list[:1] == ["demo"]:
            return _demo(args_list[1:])
        args = _parser().parse_args(args_list)
        status: int = args.run(args)
        return status
    except CLIError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
