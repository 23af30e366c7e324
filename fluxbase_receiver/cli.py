"""``fluxbase-receiver``: sign, verify, send and receive Fluxbase webhooks from a terminal.

Subcommands: ``sign``, ``verify``, ``send``, ``listen``, ``demo`` and ``sender`` (``serve``,
``worker``, ``deliveries``, ``redeliver``, ``recover``).
Secrets come from ``--secret`` or ``FLUXBASE_WEBHOOK_SECRET``. Errors are one line on
stderr with a non-zero exit status. Ctrl-C stops ``listen`` with status 0; it interrupts
any other command with one line and status 130.
"""

from __future__ import annotations

import argparse
import http.client
import importlib
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, NoReturn

from fluxbase_receiver.errors import InvalidPayload, WebhookError
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
ANSWER_LIMIT = 65_536
"""At most this many bytes of an answer are read (``send`` prints them, ``listen`` forwards)."""
MAX_TIMEOUT = 86_400.0
LISTEN_WORKERS = 8
"""Requests ``listen`` serves at once; further connections wait in the listen backlog."""
REQUEST_TIMEOUT = 10.0
"""Seconds ``listen`` waits on a silent client before dropping it."""
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP header name (RFC 9110 token)."""

logger = logging.getLogger("fluxbase_receiver")


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
    if not all(map(_is_utf8, found)):
        raise CLIError("the webhook secret is not valid UTF-8")
    return found


def _is_utf8(text: str) -> bool:
    """False for command-line text that came from bytes that are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(text: str) -> str:
    """An argument that must be UTF-8 text."""
    if not _is_utf8(text):
        raise argparse.ArgumentTypeError("not valid UTF-8")
    return text


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


def _timeout(text: str) -> float:
    """``--timeout`` seconds: a positive number, at most a day."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of seconds up to {MAX_TIMEOUT:.0f}, got {text!r}"
        )
    return value


def _port(text: str) -> int:
    """A TCP port number (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65_535:
        raise argparse.ArgumentTypeError(f"a port is a number 0-65535, got {text!r}")
    return value


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object given on the command line."""
    _text(text)
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error.msg})") from None
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error})") from None
    except RecursionError:
        raise argparse.ArgumentTypeError("not valid JSON (nested too deeply)") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"id\": 1}'")
    return value


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _header(text: str) -> tuple[str, str]:
    """A ``Name: value`` header."""
    name, sep, value = (part.strip() for part in _text(text).partition(":"))
    if not sep or not name or any(c in text for c in "\r\n"):
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    if not _TOKEN.fullmatch(name):
        raise argparse.ArgumentTypeError(f"not a valid header name: {name!r}")
    if any((c < " " and c != "\t") or c == "\x7f" for c in value):
        raise argparse.ArgumentTypeError(f"the value of {name} has a control character")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(
            f"the value of {name} must be Latin-1 text (HTTP cannot carry other characters)"
        ) from None
    return name, value


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Report a 3xx as the answer instead of following it (a webhook is not redirected)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _post(
    url: str, body: bytes, headers: Mapping[str, str], timeout: float
) -> tuple[int, str, bytes, bool]:
    """POST and return ``(status, reason, body, truncated)``; any HTTP status is an answer.

    At most :data:`ANSWER_LIMIT` bytes of the answer are read; ``truncated`` says there
    was more.
    """
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status, reason, answer = (
                response.status,
                response.reason,
                response.read(ANSWER_LIMIT + 1),
            )
    except urllib.error.HTTPError as refusal:
        with refusal:
            status, reason, answer = refusal.code, refusal.reason, refusal.read(ANSWER_LIMIT + 1)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error
        raise CLIError(f"cannot reach {url}: {reason}") from None
    return status, reason, answer[:ANSWER_LIMIT], len(answer) > ANSWER_LIMIT


def _url(url: str) -> str:
    """An http:// or https:// URL with a host (and a valid port, if it names one)."""
    if not url.lower().startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// URL, got {url!r}")
    if not _text(url).isascii() or any(c <= " " or c == "\x7f" for c in url):
        raise argparse.ArgumentTypeError(
            f"bad URL {url!r}: percent-encode spaces, control and non-ASCII characters"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - reading it checks it
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"bad URL {url!r}: {error}") from None
    if not parts.hostname:
        raise argparse.ArgumentTypeError(f"no host in {url!r}")
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
    secrets = _secrets(args.secret)
    try:
        body, headers = sign_event(
            make_event(args.event, **fields), secrets, headers=dict(args.header)
        )
    except (ValueError, RecursionError) as error:
        raise CLIError(f"cannot encode the event: {error}") from None
    status, reason, answer, truncated = _post(args.url, body, headers, args.timeout)
    style = Style.for_stdout()
    print(style("bold" if 200 <= status < 300 else "error", f"{status} {reason}".strip()))
    if answer:
        print(_pretty(answer), flush=True)
    if truncated:
        print(
            f"{PROG}: the answer is longer than {ANSWER_LIMIT} bytes; only the start is shown",
            file=sys.stderr,
        )
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
            else:
                self.receiver.settle(admitted, ok=False)
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


def _content_length(headers: Message) -> int | None:
    """The declared body length: 0 when none is given, ``None`` when it cannot be trusted
    (not a number, several that disagree, or a chunked body)."""
    values = {value.strip() for value in headers.get_all("Content-Length", [])}
    if "Transfer-Encoding" in headers or len(values) > 1:
        return None
    declared = values.pop() if values else "0"
    if not (declared.isascii() and declared.isdigit()):
        return None
    return int(declared) if len(declared) <= 18 else sys.maxsize  # int() refuses huge strings


class _PooledServer(HTTPServer):
    """An HTTP server that serves connections on a fixed pool of threads.

    While every worker is busy the accept loop waits, so further connections queue in the
    kernel's listen backlog instead of each getting a thread.
    """

    request_queue_size = 64

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], workers: int
    ) -> None:
        self._free = threading.BoundedSemaphore(workers)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="fluxbase-listen")
        super().__init__(address, handler)  # closes the server (and pool) if it cannot bind

    def process_request(self, request: Any, client_address: Any) -> None:
        self._free.acquire()
        self._pool.submit(self._serve_one, request, client_address)

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._free.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is a DEBUG line; anything else one line on stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            logger.debug("listen: dropped a connection from %s: %s", client_address[0], error)
        else:
            print(f"{PROG}: error: a request failed: {error!r}", file=sys.stderr, flush=True)

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _handler_class(listener: Listener) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "fluxbase-receiver"
        sys_version = ""
        timeout = REQUEST_TIMEOUT

        def __getattr__(self, name: str) -> Any:
            if name.startswith("do_"):  # every method gets an answer: 405 for all but POST
                return self._serve
            raise AttributeError(name)

        def _serve(self) -> None:
            headers = list(self.headers.items())
            length = _content_length(self.headers)
            early = listener.receiver.precheck(self.command, headers, length or 0)
            if early is None and length is None:
                early = Outcome.refuse(
                    InvalidPayload("send the body with one valid Content-Length (not chunked)")
                )
            if early is None:
                assert length is not None
                body = self.rfile.read(length)
                if len(body) == length:
                    self._answer(listener.handle(self.command, body, headers))
                    return
                early = Outcome.refuse(InvalidPayload("the body ended before its Content-Length"))
            listener.report(early)
            self._answer(early)

        def _answer(self, outcome: Outcome) -> None:
            body = outcome.body_bytes()
            self.send_response(outcome.status)
            if outcome.status == 405:
                self.send_header("Allow", "POST")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            """Requests that are not HTTP get the same JSON error shape as the rest."""
            status = HTTPStatus(code)
            error = status.phrase.lower().replace(" ", "_").replace("-", "_")
            self.close_connection = True
            self._answer(Outcome(code, {"error": error, "message": message or status.description}))

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
        server = _PooledServer((args.host, args.port), _handler_class(listener), LISTEN_WORKERS)
    except (OSError, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {reason}") from None
    url = f"http://{args.host}:{server.server_port}"
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        print(f"{style('bold', 'listening')} on {url} (Ctrl-C to stop)", flush=True)
        if args.forward_to:
            print(f"forwarding verified events to {args.forward_to}", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.server_close()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# -- demo -----------------------------------------------------------------------------


_SENDER_COMMANDS = {"demo": "demo", "sender serve": "serve", "sender": "operate"}
"""Commands run by a module of the sender (``fluxbase_receiver.sender.<module>.main``)."""
_SENDER_OPERATIONS = ("worker", "deliveries", "redeliver", "recover")
"""``sender`` actions run by ``fluxbase_receiver.sender.operate``."""


def _sender_command(command: str, argv: list[str]) -> int:
    """Run a command that lives in the sender (needs the ``sender`` extra)."""
    try:
        module = importlib.import_module(f"fluxbase_receiver.sender.{_SENDER_COMMANDS[command]}")
    except ImportError as error:
        missing = error.name or ""
        if isinstance(error, ModuleNotFoundError) and not missing.startswith("fluxbase_receiver"):
            raise CLIError(
                f"{command} needs {missing}: pip install 'fluxbase-receiver[sender]'"
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
    verify.add_argument(
        "--signature", required=True, type=_text, metavar="HEADER", help="the header value"
    )
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
    send.add_argument("url", type=_url, metavar="URL")
    secret_option(send)
    send.add_argument(
        "--event",
        type=str.upper,
        choices=OPERATIONS,
        default="INSERT",
        help="INSERT, UPDATE, DELETE or TEST (default INSERT)",
    )
    send.add_argument(
        "--table", type=_text, default=None, help="table name (default users; test for TEST)"
    )
    send.add_argument("--schema", type=_text, default="public", help="schema name (default public)")
    send.add_argument("--record", type=_json_object, metavar="JSON", help="the row (a JSON object)")
    send.add_argument(
        "--old-record", type=_json_object, metavar="JSON", help="the row before (UPDATE, DELETE)"
    )
    send.add_argument(
        "--webhook-id", type=_text, metavar="ID", help="webhook_id (default: a random UUID)"
    )
    send.add_argument(
        "--header",
        type=_header,
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra header (repeatable)",
    )
    send.add_argument("--timeout", type=_timeout, default=30.0, help="seconds (default 30)")
    send.set_defaults(run=_send)

    listen = command(
        "listen",
        "Run a local receiver that verifies, dedupes and prints every event.",
        f"{PROG} listen --secret s3cr3t --port 8787 "
        "--forward-to http://127.0.0.1:8000/webhooks/fluxbase",
    )
    secret_option(listen)
    listen.add_argument(
        "--host", type=_text, default="127.0.0.1", help="address (default 127.0.0.1)"
    )
    listen.add_argument("--port", type=_port, default=8787, help="port (default 8787)")
    listen.add_argument(
        "--forward-to",
        type=_url,
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

    sender = command(
        "sender",
        "Run the sender (needs the sender extra): 'sender serve' serves the webhooks "
        "management API and a delivery worker; 'sender worker' runs a worker; 'sender "
        "deliveries', 'sender redeliver' and 'sender recover' are for operators.",
        f"{PROG} sender serve --database-url sqlite:///app.db --service-key KEY",
    )
    sender.add_argument("action", choices=["serve", *_SENDER_OPERATIONS], help="what to run")
    sender.add_argument("args", nargs=argparse.REMAINDER, help="see 'sender ACTION --help'")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list[:1] == ["demo"]:
            return _sender_command("demo", args_list[1:])
        if args_list[:2] == ["sender", "serve"]:
            return _sender_command("sender serve", args_list[2:])
        if args_list[:1] == ["sender"] and args_list[1:2] and args_list[1] in _SENDER_OPERATIONS:
            return _sender_command("sender", args_list[1:])
        args = _parser().parse_args(args_list)
        status: int = args.run(args)
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


if __name__ == "__main__":
    sys.exit(main())
