"""``fluxbase-receiver listen``: a local receiver that verifies, dedupes and prints every event.

Optionally forwards verified events to a local app (``--forward-to``). Everything taken
from a request is printed with control characters escaped. Ctrl-C or SIGTERM stops it
with status 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from fluxbase_receiver.cli.arguments import PROG, CLIError, secrets
from fluxbase_receiver.cli.http_client import post
from fluxbase_receiver.cli.terminal import Style, printable, printable_lines
from fluxbase_receiver.errors import InvalidPayload
from fluxbase_receiver.events import WebhookEvent
from fluxbase_receiver.idempotency import MemoryIdempotencyStore
from fluxbase_receiver.receiver import Outcome, Receiver

HOP_BY_HOP = frozenset(
    ("connection", "content-length", "host", "keep-alive", "transfer-encoding", "upgrade")
)
LISTEN_WORKERS = 8
"""Requests ``listen`` serves at once; further connections wait in the listen backlog."""
REQUEST_TIMEOUT = 10.0
"""Seconds ``listen`` waits on a silent client before dropping it."""

logger = logging.getLogger(__name__)


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
            message = printable(f"{outcome.body.get('error')}: {outcome.body.get('message')}")
            lines.append(f"{when} {status} {s('error', 'refused')} {message}")
        else:
            note = ""
            if outcome.body.get("duplicate"):
                note = s("dim", " duplicate (already handled)")
            elif not outcome.ok:
                note = " " + s("error", printable(str(outcome.body.get("error") or outcome.body)))
            label = s(event.event, f"{event.event:<6}")
            table = printable(event.qualified_table)
            lines.append(f"{when} {status} {label} {s('bold', table)}{note}")
            if not outcome.body.get("duplicate"):
                lines.extend(_describe(event))
        with self._lock:
            self._write("\n".join(lines))


def _forward(url: str, body: bytes, headers: list[tuple[str, str]]) -> tuple[int, dict[str, Any]]:
    """POST the original request to ``url``; its status and JSON body (502 if unreachable)."""
    kept = {name: value for name, value in headers if name.lower() not in HOP_BY_HOP}
    try:
        status, _, answer, _ = post(url, body, kept, timeout=30)
    except CLIError as error:
        return 502, {"error": "forward_failed", "message": str(error)}
    try:
        decoded = json.loads(answer) if answer else {}
    except ValueError:
        decoded = answer.decode("utf-8", "replace")
    return status, decoded if isinstance(decoded, dict) else {"body": decoded}


def _describe(event: WebhookEvent) -> list[str]:
    """The indented detail lines for an event: ids, then the rows (changes for UPDATE),
    with control characters escaped."""
    data = event.model_dump(mode="json", by_alias=True, exclude_none=True)
    ids = ("timestamp", "webhook_id", "id")
    lines = [f"  {key}: {printable(str(data[key]))}" for key in ids if key in data]
    if event.event == "UPDATE" and event.old_record is not None:
        lines.append("  changes:")
        for column, (old, new) in event.changes.items():
            lines.append(printable(f"    {column}: {_compact(old)} -> {_compact(new)}"))
    for key in ("record", "old_record"):
        if key in data and not (key == "old_record" and event.event == "UPDATE"):
            text = json.dumps(data[key], indent=2, ensure_ascii=False)
            lines.append(f"  {key}: " + printable_lines(text).replace("\n", "\n  "))
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
        self._serving: set[socket.socket] = set()
        self._serving_lock = threading.Lock()
        super().__init__(address, handler)  # closes the server (and pool) if it cannot bind

    def process_request(self, request: Any, client_address: Any) -> None:
        self._free.acquire()
        with self._serving_lock:
            self._serving.add(request)
        self._pool.submit(self._serve_one, request, client_address)

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self._serving_lock:
                self._serving.discard(request)
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
        """Stop listening and end the connections being served, so that a slow or silent
        client cannot keep the process from exiting (its sender will retry)."""
        super().server_close()
        with self._serving_lock:
            for request in self._serving:
                with contextlib.suppress(OSError):
                    request.shutdown(socket.SHUT_RDWR)
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


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM; both stop with status 0.

    The signal handlers are in place before the "listening" line is printed, so a
    signal sent once that line is seen always stops the server cleanly.
    """
    # Every request is reported on stdout; keep the core's log lines off the terminal.
    logging.getLogger("fluxbase_receiver").addHandler(logging.NullHandler())
    receiver = Receiver(
        secrets(args.secret), tolerance=args.tolerance, allow_legacy_signature=args.legacy
    )
    style = Style.for_stdout()
    listener = Listener(receiver, style, args.forward_to, lambda text: print(text, flush=True))
    with _Stop() as stop:
        try:
            server = _PooledServer((args.host, args.port), _handler_class(listener), LISTEN_WORKERS)
        except (OSError, UnicodeError) as error:
            reason = getattr(error, "strerror", None) or error
            raise CLIError(f"cannot listen on {args.host}:{args.port}: {reason}") from None
        _serve_until(server, stop, f"http://{args.host}:{server.server_port}", style, args)
    print("stopped", flush=True)
    return 0


class _Stop:
    """Ctrl-C, SIGTERM or the end of the accept loop, as a byte in a pipe the main thread
    reads.

    The kernel may hand a signal to any thread, and Python runs signal handlers only in
    the main thread between bytecodes, so a main thread blocked in a read would not see
    it. The signal's wakeup fd is written by the C-level handler in whichever thread the
    signal lands, so the read returns either way; the handler writes too, for a signal
    that arrives before the wakeup fd is set.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> _Stop:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._handlers = {signum: signal.signal(signum, self.set) for signum in self.SIGNALS}
        self._wakeup = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        signal.set_wakeup_fd(self._wakeup)
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        os.close(self._read)
        os.close(self._write)

    def set(self, *_: object) -> None:
        with contextlib.suppress(BlockingIOError):  # a stop is already pending
            os.write(self._write, b"\0")

    def wait(self) -> None:
        os.read(self._read, 1)


def _serve_until(
    server: _PooledServer, stop: _Stop, url: str, style: Style, args: argparse.Namespace
) -> None:
    """Serve on a background thread until ``stop`` is set (by a signal)."""

    def serve() -> None:
        try:
            server.serve_forever()
        finally:
            stop.set()

    thread = threading.Thread(target=serve, name="fluxbase-listen-accept", daemon=True)
    thread.start()
    try:
        print(f"{style('bold', 'listening')} on {url} (Ctrl-C to stop)", flush=True)
        if args.forward_to:
            print(f"forwarding verified events to {args.forward_to}", flush=True)
        stop.wait()
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
