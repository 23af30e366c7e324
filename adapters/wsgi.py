"""Any WSGI application (on werkzeug): a middleware that receives webhooks on one path.

Usage::

    import os

    from fluxbase_receiver import Receiver
    from fluxbase_receiver.adapters.wsgi import FluxbaseWSGIMiddleware

    receiver = Receiver(secret=os.environ["FLUXBASE_WEBHOOK_SECRET"])

    @receiver.on("orders")
    def on_order(event): ...

    application = FluxbaseWSGIMiddleware(application, receiver, path="/webhooks/fluxbase")

The path matches with or without a trailing slash (``/webhooks/fluxbase/`` too: a sender
counts a 404 or a redirect as a failed delivery). Every other path goes to the wrapped
application untouched. At most
``receiver.max_body_bytes + 1`` bytes of a body are read (a declared ``Content-Length`` over
the limit is refused before reading anything).

Respond quickly: ``respond="immediately"`` answers 202 right after verify + idempotency
claim and runs the handlers on a bounded thread pool (``workers`` threads, at most
``4 * workers`` events waiting; past that the request runs its handlers itself before
answering, which slows the sender down instead of piling work up). ``deadline=2.0`` answers
202 once the handlers take longer than 2 s and lets them finish on the pool. Background
failures are logged and release the claim, but the sender already got a 2xx and will not
retry: work is lost if the process dies (or a handler fails) before the handlers end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import IO, TYPE_CHECKING

try:
    from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
    from werkzeug.wrappers import Request, Response
    from werkzeug.wsgi import get_content_length
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "fluxbase_receiver.adapters.wsgi needs Werkzeug: pip install 'fluxbase-receiver[wsgi]'"
    ) from error

from fluxbase_receiver._logcontext import REQUEST_PATH
from fluxbase_receiver.adapters._common import (
    READ_HEADERS,
    STATUS_LINES,
    Respond,
    check_respond,
    cut_short,
    path_variants,
    response_headers,
    too_large,
)
from fluxbase_receiver.receiver import (
    Admitted,
    Headers,
    Outcome,
    Receiver,
    RequestHeaders,
    accepted,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "FluxbaseWSGIMiddleware",
    "WSGIWebhookEndpoint",
    "environ_headers",
    "environ_request_headers",
    "read_body",
    "read_environ_body",
    "to_response",
]

logger = logging.getLogger(__name__)


def to_response(outcome: Outcome, response_class: type[Response] = Response) -> Response:
    """The response for an :class:`Outcome` (JSON body, its status)."""
    headers = response_headers(outcome)
    content_type = headers.pop("Content-Type")  # the cheaper way to set it on a werkzeug response
    return response_class(
        outcome.body_bytes(), outcome.status, headers or None, content_type=content_type
    )


def environ_headers(environ: WSGIEnvironment) -> list[tuple[str, str]]:
    """The request headers as ``(name, value)`` pairs, read straight from the environ."""
    headers = [
        (key[5:].replace("_", "-"), value) for key, value in environ.items() if key[:5] == "HTTP_"
    ]
    for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
        if environ.get(key):
            headers.append((name, environ[key]))
    return headers


_ENVIRON_KEYS = tuple(
    (name.upper().replace("-", "_"), name)
    if name.startswith("content-")
    else ("HTTP_" + name.upper().replace("-", "_"), name)
    for name in READ_HEADERS
)


def environ_request_headers(environ: WSGIEnvironment) -> RequestHeaders:
    """The request headers of a WSGI ``environ`` that the receiver reads, by lowercase name:
    what :func:`~fluxbase_receiver.receiver.request_headers` gives for
    :func:`environ_headers`, without the headers the receiver does not read."""
    headers = RequestHeaders()
    for key, name in _ENVIRON_KEYS:
        value = environ.get(key)
        if value or (value is not None and key[:5] == "HTTP_"):  # no empty Content-* header
            headers[name] = value
    return headers


def read_body(request: Request, receiver: Receiver, headers: Headers) -> bytes | Outcome:
    """The body, reading at most one byte past the limit; or the 405/413/415 refusal.

    The limit is the smaller of ``receiver.max_body_bytes`` and the request's own
    ``max_content_length`` (Flask's ``MAX_CONTENT_LENGTH``). The body stays cached on the
    request (``request.get_data()`` gives it again). ``headers`` are the request's
    (:func:`environ_request_headers`).
    """
    length = get_content_length(request.environ)
    refusal = receiver.precheck(request.method, headers, length)
    if refusal is not None:
        return refusal
    own = request.max_content_length
    limit = receiver.max_body_bytes if own is None else min(own, receiver.max_body_bytes)
    request.max_content_length = limit + 1  # werkzeug stops there: one byte tells "too large"
    body = _read_limited(request.get_data, limit)
    if isinstance(body, bytes) and length is not None and len(body) < length:
        return cut_short()  # a server that ends the stream itself handed over fewer bytes
    return body


def read_environ_body(
    environ: WSGIEnvironment, receiver: Receiver, headers: Headers
) -> bytes | Outcome:
    """:func:`read_body` straight from the environ, without a werkzeug ``Request``.

    The limit is ``receiver.max_body_bytes``. The stream is read as werkzeug's
    ``get_input_stream`` reads it: to its end (at most limit + 1 bytes) when the server
    terminates it (``wsgi.input_terminated``), else exactly ``Content-Length`` bytes, else
    nothing.
    """
    method = environ.get("REQUEST_METHOD", "GET").upper()
    length = get_content_length(environ)
    refusal = receiver.precheck(method, headers, length)
    if refusal is not None:
        return refusal
    return _read_environ(environ, length, receiver.max_body_bytes)


def _read_environ(environ: WSGIEnvironment, length: int | None, limit: int) -> bytes | Outcome:
    """The body as :func:`read_environ_body` reads it, past the checks before reading; the
    413 or 400 refusal instead."""
    stream = environ["wsgi.input"]
    try:
        if "wsgi.input_terminated" in environ:
            body = _read_up_to(stream, limit + 1)
            if len(body) > limit:
                return too_large(limit)
        else:
            body = b"" if length is None else _read_up_to(stream, length)  # length <= limit
    except (OSError, ValueError):
        return cut_short()
    return cut_short() if length is not None and len(body) < length else body


def _read_up_to(stream: IO[bytes], size: int) -> bytes:
    """Read ``stream`` until ``size`` bytes or its end."""
    chunk = stream.read(min(size, 65_536))
    if len(chunk) == size or not chunk:  # the common case: all of it at once
        return chunk
    chunks = [chunk]
    size -= len(chunk)
    while size > 0:
        chunk = stream.read(min(size, 65_536))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _content_length(environ: WSGIEnvironment) -> int | None:
    """werkzeug's ``get_content_length``, with a plain number of bytes read at once."""
    declared = environ.get("CONTENT_LENGTH")
    if (
        declared
        and declared.isdigit()
        and declared.isascii()
        and "HTTP_TRANSFER_ENCODING" not in environ
    ):
        return int(declared)
    return get_content_length(environ)


def _read_limited(read: Callable[[], bytes], limit: int) -> bytes | Outcome:
    """``read()`` from a stream capped at ``limit + 1`` bytes; the 413 or 400 refusal instead."""
    try:
        body = read()
    except RequestEntityTooLarge:
        return too_large(limit)
    except ClientDisconnected:
        return cut_short()
    return too_large(limit) if len(body) > limit else body


_HEADERS: dict[tuple[int, int], tuple[tuple[str, str], ...]] = {}


def _headers(outcome: Outcome, answer: bytes) -> list[tuple[str, str]]:
    """The response headers for ``outcome`` answering ``answer`` (:func:`response_headers`,
    which depend on the status alone, and the length), built once per status and length;
    a new list each time, which a server may change."""
    key = (outcome.status, len(answer))
    headers = _HEADERS.get(key)
    if headers is None:
        headers = (*response_headers(outcome).items(), ("Content-Length", str(len(answer))))
        if len(_HEADERS) < 256:
            _HEADERS[key] = headers
    return list(headers)


class _Pool:
    """A thread pool with a bounded queue: ``submit`` says no when it is full."""

    def __init__(self, workers: int) -> None:
        self._slots = threading.BoundedSemaphore(4 * workers)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="fluxbase-webhook")

    def submit(self, job: Callable[[], Outcome]) -> Future[Outcome] | None:
        if not self._slots.acquire(blocking=False):
            return None
        future = self._executor.submit(job)
        future.add_done_callback(lambda _: self._slots.release())
        return future


class WSGIWebhookEndpoint:
    """A WSGI application that receives Fluxbase webhooks with ``receiver``."""

    def __init__(
        self,
        receiver: Receiver,
        *,
        respond: Respond = "after_handlers",
        deadline: float | None = None,
        workers: int = 4,
    ) -> None:
        check_respond(respond, deadline)
        self.receiver = receiver
        self.respond = respond
        self.deadline = deadline
        early = respond == "immediately" or deadline is not None
        self._pool = _Pool(workers) if early else None

    def __repr__(self) -> str:
        return f"<WSGIWebhookEndpoint respond={self.respond!r} deadline={self.deadline!r}>"

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = REQUEST_PATH.set(environ.get("PATH_INFO"))  # for refusal records
        try:
            receiver = self.receiver
            limit = receiver.max_body_bytes
            headers = environ_request_headers(environ)  # read once for every step
            method = environ.get("REQUEST_METHOD", "GET")  # the core reads it in any case
            length = _content_length(environ)
            if length is None or length > limit:  # nothing to read, or too much: refuse first
                body = receiver.precheck(method, headers, length) or _read_environ(
                    environ, length, limit
                )
            else:  # the core runs every check on a whole body (405, 413, 415...)
                body = _read_environ(environ, length, limit)
                if not isinstance(body, bytes):  # cut short: a refusal before reading first
                    body = receiver.precheck(method, headers, length) or body
            outcome = self.answer(body, headers, method) if isinstance(body, bytes) else body
        finally:
            REQUEST_PATH.reset(path)
        answer = outcome.body_bytes()
        start_response(STATUS_LINES[outcome.status], _headers(outcome, answer))
        return [answer]

    def answer(self, body: bytes, headers: Headers, method: str = "POST") -> Outcome:
        """Run the pipeline on a body that was read whole."""
        if self._pool is None:
            return self.receiver.handle(body, headers, method)
        admitted = self.receiver.admit(body, headers, method)
        if isinstance(admitted, Outcome):
            return admitted
        future = self._pool.submit(lambda: self._process(admitted))
        if future is None:  # the pool is full: answer after the handlers instead
            return self.receiver.process(admitted)
        if self.deadline is None:
            return accepted(admitted.event)
        try:
            return future.result(timeout=self.deadline)
        except FutureTimeout:
            return accepted(admitted.event)

    def _process(self, admitted: Admitted) -> Outcome:
        try:
            return self.receiver.process(admitted)
        except Exception:
            logger.exception("background webhook processing failed")
            raise


class FluxbaseWSGIMiddleware:
    """Receives webhooks on ``path`` (with or without a trailing slash) and passes every
    other request to ``app``."""

    def __init__(
        self,
        app: WSGIApplication,
        receiver: Receiver,
        *,
        path: str = "/webhooks/fluxbase",
        respond: Respond = "after_handlers",
        deadline: float | None = None,
        workers: int = 4,
    ) -> None:
        self.app = app
        self.path = path
        self._paths = path_variants(path)
        self.endpoint = WSGIWebhookEndpoint(
            receiver, respond=respond, deadline=deadline, workers=workers
        )
        self._answer = self.endpoint.__call__  # called bound: cheaper than through the instance

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in self._paths:
            return self._answer(environ, start_response)
        return self.app(environ, start_response)
