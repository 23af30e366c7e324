"""The receiving pipeline: size guard, verify, parse, dedupe, dispatch.

``Receiver.handle`` runs it all and turns every refusal into an :class:`Outcome`
(status + JSON body); it never raises for bad input. The steps are also callable one
by one (``precheck``, ``admit``, ``process``, ``settle``) so framework adapters can
stream bodies, answer early and run handlers in the background.

Delivery is at-least-once. An event with an id (the body's ``id``, else an
``X-Fluxbase-Event-Id`` header) runs once per id. An event without one (a Fluxbase
server's) is never answered as a completed duplicate: the same content may be a real
new change. While its handlers run, an identical delivery is answered 409 (the sender
retries it later). ``dedupe="content"`` and ``key=`` opt in to more (see :class:`Receiver`).

A claim is held for ``processing_ttl`` seconds (the lease, default 10 s) and renewed by
the process's heartbeat thread every third of it while the handlers run; a claim whose
process died lapses within one lease, so the sender's next retry runs the handlers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import inspect
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar, cast

from pydantic import BaseModel, PydanticUndefinedAnnotation, PydanticUserError
from typing_extensions import is_typeddict

from fluxbase_receiver._heartbeat import HEARTBEAT
from fluxbase_receiver._logcontext import REQUEST_PATH, event_context, handler_name
from fluxbase_receiver.errors import (
    EventInProgress,
    HandlerError,
    InvalidPayload,
    InvalidSignature,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    WebhookError,
)
from fluxbase_receiver.events import EventFilter, WebhookEvent, event_adapter, parse_event
from fluxbase_receiver.idempotency import (
    AsyncIdempotencyStore,
    ClaimState,
    IdempotencyStore,
    MemoryIdempotencyStore,
    content_key,
)
from fluxbase_receiver.signature import (
    DEFAULT_TOLERANCE,
    LEGACY_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    Secrets,
    secret_keys,
    verify_legacy_with_keys,
    verify_with_keys,
)

__all__ = [
    "DEFAULT_LEASE",
    "EVENT_ID_HEADER",
    "SECRET_ENV",
    "Admitted",
    "AfterHandlerObserver",
    "Dedupe",
    "HandlerObserver",
    "Headers",
    "Outcome",
    "OutcomeObserver",
    "Receiver",
    "RequestHeaders",
    "check_model",
    "request_headers",
]

logger = logging.getLogger(__name__)

Headers: TypeAlias = Mapping[str, str] | Iterable[tuple[str, str]]
"""Request headers: any mapping, or ``(name, value)`` pairs; names match case-insensitively."""

HandlerFunc = TypeVar("HandlerFunc", bound=Callable[..., Any])
HandlerObserver: TypeAlias = Callable[[Callable[..., Any], WebhookEvent], None]
"""Called with ``(handler, event)`` before each handler runs; see :meth:`Receiver.observe`."""
AfterHandlerObserver: TypeAlias = Callable[
    [Callable[..., Any], WebhookEvent, float, "Exception | None"], None
]
"""Called with ``(handler, event, duration_s, error)`` after each handler ran; ``error`` is what
it raised (``None``: it returned). See :meth:`Receiver.observe`."""

DEFAULT_MAX_BODY_BYTES = 1_048_576
DEFAULT_LEASE = 10.0
"""Seconds a claim is held without renewal (``processing_ttl``); renewed every third of it."""
EVENT_ID_HEADER = "X-Fluxbase-Event-Id"
"""The event id header, read when the body has no ``id``."""
SECRET_ENV = "FLUXBASE_WEBHOOK_SECRET"
"""The environment variable ``Receiver()`` reads when no ``secret`` is given."""
Dedupe: TypeAlias = Literal["id", "content"]
"""What deduplicates events without an id: nothing but concurrency ("id"), or their content."""
_EVENT_ID = EVENT_ID_HEADER.lower()
_LONGEST_KEY = 200
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_OK_BYTES = b'{"ok":true}'
_SIGNATURE = SIGNATURE_HEADER.lower()
_LEGACY = LEGACY_SIGNATURE_HEADER.lower()
_NEW, _DONE = ClaimState.NEW, ClaimState.DONE  # an Enum member read off its class is slow


class RequestHeaders(dict[str, str]):
    """Request headers by lowercase name, a repeated header's values joined with ``", "``.

    What every step reads. Build it once per request with :func:`request_headers` and pass
    it to each step (``precheck``, ``admit``, ``handle``...): it is used as it is, its names
    are not lowercased again.
    """

    __slots__ = ()


def request_headers(headers: Headers) -> RequestHeaders:
    """``headers`` by lowercase name, a repeated header's values joined with ``", "``."""
    if type(headers) is RequestHeaders:
        return headers
    return RequestHeaders(_lowered(headers))


class _LowerNames(dict[str, str]):
    """Header names by their lowercase spelling, remembered: the same few names arrive on
    every request, and a remembered one is not lowercased (nor hashed) again."""

    __slots__ = ()

    def __missing__(self, name: str) -> str:
        lowered = name.lower()
        if len(self) < 512:  # names are chosen by the caller: remember a bounded number
            self[name] = lowered
        return lowered


_lower_name = _LowerNames().__getitem__


def _lowered(headers: Headers) -> dict[str, str]:
    """:func:`request_headers`, as the plain dictionary the steps read."""
    if type(headers) is RequestHeaders:
        return headers
    pairs: Any
    if type(headers) is dict:
        lowered = {_lower_name(name): value for name, value in headers.items()}
        if len(lowered) == len(headers):  # no name repeated in another case: the common case
            return lowered
        pairs = headers.items()
    else:
        if type(headers) is not list:  # any other mapping or iterable of pairs, read once
            headers = list(headers.items() if isinstance(headers, Mapping) else headers)
        pairs = headers
        lowered = {_lower_name(name): value for name, value in pairs}
        if len(lowered) == len(pairs):  # no name repeated: the common case
            return lowered
    lowered.clear()
    for name, value in pairs:
        key = _lower_name(name)
        lowered[key] = f"{lowered[key]}, {value}" if key in lowered else value
    return lowered


@dataclass(slots=True)
class Outcome:
    """What to answer: an HTTP status, a JSON body, and the event when one was read."""

    status: int
    body: dict[str, Any]
    event: WebhookEvent | None = None
    error: WebhookError | None = None

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return 200 <= self.status < 300

    def body_bytes(self) -> bytes:
        """The JSON body, UTF-8 encoded."""
        body = self.body
        if len(body) == 1 and body.get("ok") is True:  # the common answer, encoded once
            return _OK_BYTES
        return _ENCODER.encode(body).encode("utf-8")

    @classmethod
    def refuse(cls, error: WebhookError, event: WebhookEvent | None = None) -> Outcome:
        """The outcome for a refusal: ``{"error": code, "message": text}``."""
        return cls(error.status, {"error": error.code, "message": str(error)}, event, error)


OutcomeObserver: TypeAlias = Callable[[Outcome, float], None]
"""Called with ``(outcome, duration_s)`` for each answer the receiver makes; see
:meth:`Receiver.observe`."""


@dataclass(frozen=True, slots=True)
class _Handler:
    func: Callable[[Any], Any]
    filter: EventFilter
    model: type[Any] | None
    is_async: bool
    threaded: bool


@dataclass(slots=True)
class Admitted:
    """A verified, parsed and claimed event, ready for :meth:`Receiver.process`.

    ``key`` is the idempotency key (``None``: nothing to claim), ``owner`` the token of
    the claim it holds (``None`` once settled), ``remember`` how long a success is
    remembered (0: the claim is released, not completed). Settle it once:
    :meth:`Receiver.process` does, or :meth:`Receiver.settle` / :meth:`Receiver.settle_async`.
    """

    event: WebhookEvent
    key: str | None = None
    calls: Sequence[tuple[_Handler, WebhookEvent]] = ()
    remember: float = 0.0
    owner: str | None = None


class Receiver:
    """Verifies, parses, deduplicates and dispatches Fluxbase webhook events.

    ``secret`` may be a list during rotation (any matching signature passes); without
    one, ``FLUXBASE_WEBHOOK_SECRET`` is read. ``idempotency`` is a store, ``None`` for an
    in-memory one, ``False`` for none.

    Deduplication: an event id (body ``id`` or ``X-Fluxbase-Event-Id``) runs once and is
    remembered for ``done_ttl`` seconds. Events without one are only kept from running
    concurrently (409), never answered as duplicates, unless you opt in:

    - ``key=`` a function of the event returning its identity (deduplicated like an id)
      or ``None`` (the default applies). It must change with every real change, e.g.
      ``lambda e: f"{e.qualified_table}:{e.row['id']}:{e.row['updated_at']}"``; two real
      changes with the same key run once.
    - ``dedupe="content"`` with ``window=`` seconds: an event with the same content as
      one handled less than ``window`` seconds ago is a duplicate. Hazard: a real change
      that repeats content within the window (a flag toggled back, a row re-inserted)
      is dropped.

    ``processing_ttl`` is the claim's lease (renewed while handlers run; a crashed
    process's claim lapses within it). ``clock`` returns unix seconds and is used for
    the signature's age check.
    ``decimals=True`` reads non-integer numbers of untyped (dict) records as ``Decimal``
    (default ``float``; ``Decimal`` fields of record models are always exact).
    """

    def __init__(
        self,
        secret: Secrets | None = None,
        *,
        tolerance: float | None = DEFAULT_TOLERANCE,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        idempotency: IdempotencyStore | AsyncIdempotencyStore | Literal[False] | None = None,
        key: Callable[[WebhookEvent], str | None] | None = None,
        dedupe: Dedupe = "id",
        window: float | None = None,
        processing_ttl: float = DEFAULT_LEASE,
        done_ttl: float = 86_400.0,
        allow_legacy_signature: bool = False,
        clock: Callable[[], float] = time.time,
        decimals: bool = False,
    ) -> None:
        if secret is None:
            secret = os.environ.get(SECRET_ENV)
        if not secret:
            raise ValueError(
                f"Receiver needs a webhook secret: pass secret=... or set {SECRET_ENV}"
            )
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        if processing_ttl <= 0 or done_ttl <= 0:
            raise ValueError("processing_ttl and done_ttl must be positive numbers of seconds")
        if dedupe not in ("id", "content"):
            raise ValueError(f"dedupe must be 'id' or 'content', not {dedupe!r}")
        if (dedupe == "content") != (window is not None) or (window is not None and window <= 0):
            raise ValueError("dedupe='content' needs window= a positive number of seconds")
        if key is not None and not callable(key):
            raise TypeError("key must be a function of the event returning a string or None")
        self._keys = secret_keys(secret)
        self.tolerance = tolerance
        self.max_body_bytes = max_body_bytes
        if idempotency is None:
            idempotency = MemoryIdempotencyStore()
        if idempotency is not False and not isinstance(
            idempotency, (IdempotencyStore, AsyncIdempotencyStore)
        ):
            raise TypeError(
                "idempotency must be a store with claim, renew, complete and release "
                "(see IdempotencyStore), None for an in-memory one, or False"
            )
        self.store: IdempotencyStore | AsyncIdempotencyStore | None = (
            None if idempotency is False else idempotency
        )
        self._store_is_async = self.store is not None and inspect.iscoroutinefunction(
            self.store.claim
        )
        self._blocking = None if self._store_is_async else cast(IdempotencyStore | None, self.store)
        self.key = key
        self.dedupe = dedupe
        self.window = window
        self._remember_content = window or 0.0
        self.processing_ttl = processing_ttl
        self.done_ttl = done_ttl
        self.allow_legacy_signature = allow_legacy_signature
        self.clock = clock
        self.decimals = decimals
        self._handlers: list[_Handler] = []
        self._observers: list[HandlerObserver] = []
        self._after: list[AfterHandlerObserver] = []
        self._outcomes: list[OutcomeObserver] = []
        self._routes: dict[tuple[str, str, str], tuple[tuple[_Handler, ...], bool]] = {}

    def __repr__(self) -> str:
        return f"<Receiver secrets={len(self._keys)} handlers={len(self._handlers)}>"

    def use_secret(self, secret: Secrets) -> Callable[[], None]:
        """Verify with ``secret`` (one or a list) from now on, e.g. a test's or a rotated one.

        Returns a function that puts the previous secrets back.
        """
        previous, self._keys = self._keys, secret_keys(secret)

        def restore() -> None:
            self._keys = previous

        return restore

    # -- registration -------------------------------------------------------------

    def on(
        self,
        table: str = "*",
        *operations: str,
        model: type[Any] | None = None,
        threaded: bool = True,
    ) -> Callable[[HandlerFunc], HandlerFunc]:
        """Register a handler for ``table`` (``"*"``, ``"users"``, ``"auth.users"``, ``"auth.*"``).

        ``operations`` default to INSERT, UPDATE and DELETE; TEST events reach only
        handlers that ask for ``"TEST"``. ``model`` types the records (a pydantic model
        class, dataclass or TypedDict, fully defined). A sync handler called from async
        code runs in a worker thread unless ``threaded=False``. Raises at once for an
        unknown operation, a bad table pattern or an unusable model.
        """
        for operation in operations:
            if not isinstance(operation, str):
                raise TypeError(f"operations are names like 'INSERT', not {operation!r}")
        selected = EventFilter(table, *operations)
        if model is not None:
            check_model(model)

        def register(func: HandlerFunc) -> HandlerFunc:
            is_async = inspect.iscoroutinefunction(func)
            self._handlers.append(_Handler(func, selected, model, is_async, threaded))
            self._routes.clear()
            return func

        return register

    def observe(
        self,
        before: HandlerObserver | None = None,
        *,
        after: AfterHandlerObserver | None = None,
        outcome: OutcomeObserver | None = None,
    ) -> Callable[[], None]:
        """Watch the pipeline, for metrics, tracing and test recorders.

        - ``before(handler, event)`` just before each handler runs; raising counts as a
          failure of that handler.
        - ``after(handler, event, duration_s, error)`` right after it, in the same thread or
          task; ``error`` is the exception it raised, ``None`` when it returned.
        - ``outcome(outcome, duration_s)`` once for each answer the receiver makes: a
          refusal by :meth:`precheck` or :meth:`admit`, a duplicate, or the end of
          :meth:`process` (``duration_s``: the time that call took).

        ``after`` and ``outcome`` observers that raise are logged and otherwise ignored.
        Nothing is measured while none is registered. Returns a function that stops them.
        """
        added = [
            (watchers, observer)
            for watchers, observer in (
                (self._observers, before),
                (self._after, after),
                (self._outcomes, outcome),
            )
            if observer is not None
        ]
        for watchers, observer in added:
            watchers.append(observer)  # type: ignore[arg-type]

        def stop() -> None:
            for watchers, observer in added:
                if observer in watchers:
                    watchers.remove(observer)  # type: ignore[arg-type]

        return stop

    def _reported(self, result: Admitted | Outcome, started: float) -> Any:
        """``result``, told to the outcome observers first when it is an answer."""
        if type(result) is Outcome:
            duration = time.perf_counter() - started
            for observer in self._outcomes:
                try:
                    observer(result, duration)
                except Exception:
                    logger.exception("an outcome observer failed")
        return result

    def _ran(
        self,
        handler: Callable[..., Any],
        event: WebhookEvent,
        started: float,
        error: Exception | None,
    ) -> None:
        duration = time.perf_counter() - started
        for observer in self._after:
            try:
                observer(handler, event, duration, error)
            except Exception:
                logger.exception(
                    "an after-handler observer failed",
                    extra=event_context(event, handler=handler_name(handler)),
                )

    def _handlers_for(self, route: tuple[str, str, str]) -> tuple[tuple[_Handler, ...], bool]:
        """The handlers of an event on ``route`` (schema, table, operation), and whether
        any of them types its records."""
        handlers = tuple(h for h in self._handlers if h.filter.matches(*route))
        found = handlers, any(h.model is not None for h in handlers)
        if len(self._routes) < 4096:
            self._routes[route] = found
        return found

    # -- the pipeline -------------------------------------------------------------

    def precheck(
        self, method: str, headers: Headers, content_length: int | None = None
    ) -> Outcome | None:
        """Refuse what can be refused before reading the body (405, 400, 413, 415)."""
        try:
            self._precheck(method, _lowered(headers), content_length)
        except WebhookError as error:
            refusal = _refused(error)
            return self._reported(refusal, time.perf_counter()) if self._outcomes else refusal
        return None

    def _precheck(self, method: str, headers: dict[str, str], length: int | None) -> None:
        if method != "POST" and method.upper() != "POST":
            raise MethodNotAllowed(f"{method.upper()} is not allowed; webhooks are POSTed")
        if length is None and "content-length" in headers:
            length = _declared_length(headers["content-length"], self.max_body_bytes)
        if length is not None and length > self.max_body_bytes:
            raise PayloadTooLarge(f"body exceeds {self.max_body_bytes} bytes")
        content_type = headers.get("content-type")
        if content_type and content_type != "application/json":
            content_type = content_type.strip()
            if content_type and not _is_json(content_type):
                raise UnsupportedMediaType("Content-Type must be application/json")

    def verify(self, body: bytes, headers: Headers) -> None:
        """Check the signature headers against ``body``; raise a :class:`SignatureError`."""
        self._verify(body, _lowered(headers))

    def _verify(self, body: bytes, headers: dict[str, str]) -> None:
        header = headers.get(_SIGNATURE)
        try:
            if header is None and self.allow_legacy_signature and _LEGACY in headers:
                verify_legacy_with_keys(body, headers[_LEGACY], self._keys)
                return
            verify_with_keys(body, header, self._keys, self.tolerance, self.clock())
        except InvalidSignature:
            tried = ", ".join(f"#{n}" for n in range(1, len(self._keys) + 1))
            logger.warning(
                "signature mismatch: tried configured secret(s) %s of %d. Is the raw request "
                "body verified as received (not re-serialised JSON)? Is this the webhook's secret?",
                tried,
                len(self._keys),
            )
            raise

    def _read(
        self,
        body: bytes,
        headers: Headers,
        method: str,
        model: type[Any] | None,
        route: EventFilter | None = None,
    ) -> Admitted | Outcome:
        """Size guard, verify, parse, the typed events for each matching handler, the key;
        the refusal instead when a step refuses."""
        try:
            lowered = _lowered(headers)
            self._precheck(method, lowered, len(body))
            self._verify(body, lowered)
            event = parse_event(body, decimals=self.decimals)
            on = (event.schema_name, event.table, event.event)
            handlers, typing = self._routes.get(on) or self._handlers_for(on)
            if typing or model is not None:
                typed: dict[Any, WebhookEvent] = {None: event}
                for handler in handlers:
                    if handler.model is not None and handler.model not in typed:
                        typed[handler.model] = _parse_as(body, handler.model, self.decimals)
                calls = [(handler, typed[handler.model]) for handler in handlers]
                if model is not None and (route is None or route.accepts(event)):
                    event = typed.get(model) or _parse_as(body, model, self.decimals)
            else:  # the common case: every handler takes the event as parsed
                calls = [(handler, event) for handler in handlers]
        except WebhookError as error:
            return _refused(error)
        if self.store is None or event.event == "TEST":  # each click on "test" arrives
            return Admitted(event, None, calls)
        if self.key is None and event.id and len(event.id) <= _LONGEST_KEY:  # the common case
            return Admitted(event, "id:" + event.id, calls, self.done_ttl)
        key, remember = self._identity(event, lowered)
        return Admitted(event, key, calls, remember)

    def _identity(self, event: WebhookEvent, headers: dict[str, str]) -> tuple[str, float]:
        """The idempotency key, and how long a success is remembered (0: not at all)."""
        if self.key is not None:
            try:
                chosen = self.key(event)
            except Exception:
                logger.exception("the key function failed; deduplicating by the default rule")
                chosen = None
            if chosen is not None:
                return _bounded("key:", str(chosen)), self.done_ttl
        event_id = event.id or headers.get(_EVENT_ID, "").strip()
        if event_id:
            return _bounded("id:", event_id), self.done_ttl
        return content_key(event), self._remember_content

    def _claimed(
        self,
        admitted: Admitted,
        key: str,
        owner: str,
        state: ClaimState,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Admitted | Outcome:
        """``admitted``, holding ``owner``'s new claim on ``key`` (renewed on ``loop`` for an
        async store); or the answer when the claim was not taken: done before, or in
        progress."""
        if state is _NEW:
            admitted.owner = owner
            HEARTBEAT.hold(self.store, key, owner, self.processing_ttl, loop)
            return admitted
        if state is _DONE:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "webhook duplicate of a handled event: %s",
                    key,
                    extra=event_context(admitted.event, key=key, status=200),
                )
            return Outcome(200, {"ok": True, "duplicate": True}, admitted.event)
        return _refused(
            EventInProgress("this event is already being handled; retry later"), admitted.event
        )

    def _async_store_refused(self) -> TypeError:
        """The error for a blocking call on a receiver whose store is async."""
        return TypeError(
            f"the idempotency store {type(self.store).__name__} is async: use handle_async, "
            "admit_async, process_async and settle_async (an ASGI adapter) or a blocking store"
        )

    def admit(
        self,
        body: bytes,
        headers: Headers,
        method: str = "POST",
        *,
        model: type[Any] | None = None,
        route: EventFilter | None = None,
    ) -> Admitted | Outcome:
        """Run every step up to and including the idempotency claim.

        Returns the :class:`Admitted` event to pass to :meth:`process` (and then settle),
        or the :class:`Outcome` that answers the request now (a refusal or a duplicate).
        ``model`` types ``Admitted.event``'s records (a mismatch is a 400 before any claim);
        with ``route``, only those of the events it accepts (the others stay dicts).
        """
        if self._store_is_async:
            raise self._async_store_refused()
        started = time.perf_counter() if self._outcomes else 0.0
        admitted = self._read(body, headers, method, model, route)
        store = self._blocking
        if type(admitted) is Admitted and admitted.key is not None and store is not None:
            key, owner = admitted.key, HEARTBEAT.owner()
            admitted = self._claimed(
                admitted, key, owner, store.claim(key, owner, self.processing_ttl)
            )
        return self._reported(admitted, started) if self._outcomes else admitted

    async def admit_async(
        self,
        body: bytes,
        headers: Headers,
        method: str = "POST",
        *,
        model: type[Any] | None = None,
        route: EventFilter | None = None,
    ) -> Admitted | Outcome:
        """:meth:`admit` for async code (awaits an async idempotency store)."""
        started = time.perf_counter() if self._outcomes else 0.0
        admitted = self._read(body, headers, method, model, route)
        if type(admitted) is Admitted and admitted.key is not None and self.store is not None:
            key, owner = admitted.key, HEARTBEAT.owner()
            loop = None
            if self._blocking is not None:
                state = self._blocking.claim(key, owner, self.processing_ttl)
            else:
                store = cast(AsyncIdempotencyStore, self.store)
                state = await store.claim(key, owner, self.processing_ttl)
                loop = asyncio.get_running_loop()
            admitted = self._claimed(admitted, key, owner, state, loop)
        return self._reported(admitted, started) if self._outcomes else admitted

    def settle(self, admitted: Admitted, ok: bool) -> None:
        """Settle ``admitted``'s claim: complete it when the handling succeeded (``ok``),
        release it otherwise (the next delivery runs again). Once per claim; later calls,
        and events that hold no claim, do nothing."""
        owner = admitted.owner
        if owner is None:
            return
        store = self._blocking
        if store is None:  # the claim was taken in an async store
            raise self._async_store_refused()
        key = admitted.key
        assert key is not None  # a claim was taken on it
        admitted.owner = None
        HEARTBEAT.drop(owner)
        if not ok or not admitted.remember:
            store.release(key, owner)
        elif not store.complete(key, owner, admitted.remember):
            _lapsed(key)

    async def settle_async(self, admitted: Admitted, ok: bool) -> None:
        """:meth:`settle` for async code (awaits an async idempotency store)."""
        owner = admitted.owner
        if owner is None:
            return
        if not self._store_is_async:
            self.settle(admitted, ok)
            return
        admitted.owner = None
        HEARTBEAT.drop(owner)
        store = cast(AsyncIdempotencyStore, self.store)
        key = cast(str, admitted.key)
        if ok and admitted.remember:
            if not await store.complete(key, owner, admitted.remember):
                _lapsed(key)
        else:
            await store.release(key, owner)

    def process(self, admitted: Admitted, *, settle: bool = True) -> Outcome:
        """Run the handlers, then settle the claim (complete it, or release it if any raised).

        With ``settle=False`` the caller settles (:meth:`settle`), e.g. after a view ran.
        Any other exception (``KeyboardInterrupt``, ``SystemExit``, cancellation) releases
        the claim and propagates.
        """
        if self._store_is_async:
            raise self._async_store_refused()
        started = time.perf_counter() if self._outcomes else 0.0
        try:
            failures = self._run(admitted)
        except BaseException:
            if settle:
                self.settle(admitted, False)
            raise
        if settle:
            self.settle(admitted, not failures)
        outcome = self._finish(admitted, failures)
        return self._reported(outcome, started) if self._outcomes else outcome

    def _run(self, admitted: Admitted) -> list[Exception]:
        failures: list[Exception] = []
        after = self._after
        for handler, event in admitted.calls:
            started = time.perf_counter() if after else 0.0
            error = None
            try:
                for observer in self._observers:
                    observer(handler.func, event)
                result = handler.func(event)
                if result is not None and inspect.isawaitable(result):
                    asyncio.run(_awaited(result))
            except Exception as exc:  # every handler runs; failures are aggregated
                failures.append(exc)
                error = exc
            if after:
                self._ran(handler.func, event, started, error)
        return failures

    async def process_async(self, admitted: Admitted, *, settle: bool = True) -> Outcome:
        """:meth:`process` for async code: awaits async handlers, threads sync ones."""
        started = time.perf_counter() if self._outcomes else 0.0
        try:
            failures = await self._run_async(admitted)
        except BaseException:
            if settle:
                await self.settle_async(admitted, ok=False)
            raise
        if settle:
            await self.settle_async(admitted, ok=not failures)
        outcome = self._finish(admitted, failures)
        return self._reported(outcome, started) if self._outcomes else outcome

    async def _run_async(self, admitted: Admitted) -> list[Exception]:
        failures: list[Exception] = []
        after = self._after
        for handler, event in admitted.calls:
            started = time.perf_counter() if after else 0.0
            error = None
            try:
                for observer in self._observers:
                    observer(handler.func, event)
                if handler.is_async:
                    await handler.func(event)
                else:
                    if handler.threaded:
                        result = await asyncio.to_thread(handler.func, event)
                    else:
                        result = handler.func(event)
                    if result is not None and inspect.isawaitable(result):
                        await result
            except Exception as exc:
                failures.append(exc)
                error = exc
            if after:
                self._ran(handler.func, event, started, error)
        return failures

    def _finish(self, admitted: Admitted, failures: Sequence[Exception]) -> Outcome:
        event = admitted.event
        if not failures:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "webhook accepted: %s on %s",
                    event.event,
                    event.qualified_table,
                    extra=event_context(event, key=admitted.key, status=200),
                )
            return Outcome(200, {"ok": True}, event)
        for exc in failures:
            logger.error(
                "handler failed for %s on %s",
                event.event,
                event.qualified_table,
                exc_info=(type(exc), exc, exc.__traceback__),
                extra=event_context(event, key=admitted.key, status=500),
            )
        error = HandlerError(
            f"{len(failures)} of {len(admitted.calls)} handler(s) failed", tuple(failures)
        )
        return Outcome.refuse(error, event)

    def handle(self, body: bytes, headers: Headers, method: str = "POST") -> Outcome:
        """Run the whole pipeline on one request. Never raises for bad input."""
        admitted = self.admit(body, headers, method)
        return admitted if isinstance(admitted, Outcome) else self.process(admitted)

    async def handle_async(
        self,
        body: bytes,
        headers: Headers,
        method: str = "POST",
        *,
        deadline: float | None = None,
    ) -> Outcome:
        """:meth:`handle` for async code.

        With ``deadline`` (seconds), answer ``202`` once the handlers run longer than
        that; they go on to the end in the background (their failures are logged and
        release the claim, so the next delivery runs them again).
        """
        admitted = await self.admit_async(body, headers, method)
        if isinstance(admitted, Outcome):
            return admitted
        if deadline is None:
            return await self.process_async(admitted)
        task = asyncio.ensure_future(self.process_async(admitted))
        done, _ = await asyncio.wait({task}, timeout=deadline)
        if task in done:
            return task.result()
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
        return accepted(admitted.event)


_BACKGROUND: set[asyncio.Future[Outcome]] = set()


def accepted(event: WebhookEvent) -> Outcome:
    """The ``202`` answer for an event whose handlers finish in the background."""
    return Outcome(202, {"ok": True, "accepted": True}, event)


async def _awaited(result: Awaitable[Any]) -> Any:
    return await result


def check_model(model: Any) -> None:
    """Raise ``TypeError`` (one line) unless ``model`` can type records: a fully defined
    pydantic model class, dataclass or TypedDict."""
    if not isinstance(model, type) or not (
        issubclass(model, BaseModel) or dataclasses.is_dataclass(model) or is_typeddict(model)
    ):
        raise TypeError(
            f"model must be a pydantic model class (or a dataclass or TypedDict), not {model!r}"
        )
    try:
        event_adapter(model).rebuild(raise_errors=True)
    except (PydanticUserError, PydanticUndefinedAnnotation) as error:
        reason = str(error).splitlines()[0]
        raise TypeError(
            f"model {model.__name__} cannot type records: {reason} (define every type it "
            "refers to, then register the handler)"
        ) from None


def _bounded(prefix: str, value: str) -> str:
    """``prefix + value``, hashed when too long for a store's key."""
    if len(value) <= _LONGEST_KEY:
        return prefix + value
    return prefix + "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _lapsed(key: str) -> None:
    logger.warning(
        "the claim on %s lapsed before its handlers ended; the event may run again",
        key,
        extra={"fluxbase_key": key},
    )


def _declared_length(declared: str, limit: int) -> int:
    """A ``Content-Length`` value as a number (one too long to read at once, past ``limit``,
    as ``limit + 1``)."""
    digits = declared.strip()
    if not (digits.isascii() and digits.isdigit()):
        raise InvalidPayload("Content-Length must be a whole number of bytes")
    if len(digits) <= 18:  # the common case: int() reads it at once
        return int(digits)
    digits = digits.lstrip("0") or "0"
    return limit + 1 if len(digits) > len(str(limit)) else int(digits)


def _parse_as(body: bytes, model: type[Any], decimals: bool) -> WebhookEvent:
    try:
        return parse_event(body, model, decimals=decimals)
    except InvalidPayload as error:
        name = getattr(model, "__name__", str(model))
        raise InvalidPayload(f"record does not match {name}: {error}") from None


def _refused(error: WebhookError, event: WebhookEvent | None = None) -> Outcome:
    if logger.isEnabledFor(logging.WARNING):
        path = REQUEST_PATH.get()
        logger.warning(
            "webhook refused with %d at %s: %s",
            error.status,
            path or "?",
            error.code,
            extra=event_context(event, status=error.status, reason=error.code, path=path),
        )
    return Outcome.refuse(error, event)


def _is_json(content_type: str) -> bool:
    if content_type == "application/json":
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
