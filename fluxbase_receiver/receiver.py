"""The receiving pipeline: size guard, verify, parse, dedupe, dispatch.

``Receiver.handle`` runs it all and turns every refusal into an :class:`Outcome`
(status + JSON body); it never raises for bad input. The steps are also callable one
by one (``precheck``, ``admit``, ``process``) so framework adapters can stream bodies,
answer early and run handlers in the background.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, TypeVar, cast

from fluxbase_receiver.errors import (
    EventInProgress,
    HandlerError,
    InvalidPayload,
    MethodNotAllowed,
    PayloadTooLarge,
    SignatureError,
    UnsupportedMediaType,
    WebhookError,
)
from fluxbase_receiver.events import EventFilter, WebhookEvent, parse_event
from fluxbase_receiver.idempotency import (
    AsyncIdempotencyStore,
    ClaimState,
    IdempotencyStore,
    MemoryIdempotencyStore,
    default_idempotency_key,
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

__all__ = ["Admitted", "HandlerObserver", "Headers", "Outcome", "Receiver"]

logger = logging.getLogger("fluxbase_receiver")

Headers: TypeAlias = Mapping[str, str] | Iterable[tuple[str, str]]
"""Request headers: any mapping, or ``(name, value)`` pairs; names match case-insensitively."""

HandlerFunc = TypeVar("HandlerFunc", bound=Callable[..., Any])
HandlerObserver: TypeAlias = Callable[[Callable[..., Any], WebhookEvent], None]
"""Called with ``(handler, event)`` before each handler runs; see :meth:`Receiver.observe`."""

DEFAULT_MAX_BODY_BYTES = 1_048_576
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_OK_BYTES = b'{"ok":true}'
_SIGNATURE = SIGNATURE_HEADER.lower()
_LEGACY = LEGACY_SIGNATURE_HEADER.lower()


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class _Handler:
    func: Callable[[Any], Any]
    filter: EventFilter
    model: type[Any] | None
    is_async: bool
    threaded: bool


@dataclass(slots=True)
class Admitted:
    """A verified, parsed and claimed event, ready for :meth:`Receiver.process`."""

    event: WebhookEvent
    key: str | None
    calls: list[tuple[_Handler, WebhookEvent]] = field(default_factory=list)


class Receiver:
    """Verifies, parses, deduplicates and dispatches Fluxbase webhook events.

    ``secret`` may be a list during rotation (any matching signature passes).
    ``idempotency`` is a store, ``None`` for an in-memory one, ``False`` for none.
    ``clock`` returns unix seconds and is used for the signature's age check.
    ``decimals=True`` reads non-integer numbers of untyped (dict) records as ``Decimal``
    (default ``float``; ``Decimal`` fields of record models are always exact).
    """

    def __init__(
        self,
        secret: Secrets,
        *,
        tolerance: float | None = DEFAULT_TOLERANCE,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        idempotency: IdempotencyStore | AsyncIdempotencyStore | Literal[False] | None = None,
        idempotency_key: Callable[[WebhookEvent], str | None] = default_idempotency_key,
        processing_ttl: float = 300.0,
        done_ttl: float = 86_400.0,
        allow_legacy_signature: bool = False,
        clock: Callable[[], float] = time.time,
        decimals: bool = False,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        self._keys = secret_keys(secret)
        self.tolerance = tolerance
        self.max_body_bytes = max_body_bytes
        if idempotency is None:
            idempotency = MemoryIdempotencyStore()
        self.store: IdempotencyStore | AsyncIdempotencyStore | None = (
            None if idempotency is False else idempotency
        )
        self._store_is_async = self.store is not None and inspect.iscoroutinefunction(
            self.store.claim
        )
        self.idempotency_key = idempotency_key
        self.processing_ttl = processing_ttl
        self.done_ttl = done_ttl
        self.allow_legacy_signature = allow_legacy_signature
        self.clock = clock
        self.decimals = decimals
        self._handlers: list[_Handler] = []
        self._observers: list[HandlerObserver] = []
        self._routes: dict[tuple[str, str, str], tuple[_Handler, ...]] = {}

    def __repr__(self) -> str:
        return f"<Receiver secrets={len(self._keys)} handlers={len(self._handlers)}>"

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
        handlers that ask for ``"TEST"``. ``model`` types the records. A sync handler
        called from async code runs in a worker thread unless ``threaded=False``.
        """
        selected = EventFilter(table, *operations)

        def register(func: HandlerFunc) -> HandlerFunc:
            is_async = inspect.iscoroutinefunction(func)
            self._handlers.append(_Handler(func, selected, model, is_async, threaded))
            self._routes.clear()
            return func

        return register

    def observe(self, observer: HandlerObserver) -> Callable[[], None]:
        """Call ``observer(handler, event)`` just before each handler runs.

        For metrics, tracing and test recorders. An observer that raises counts as a
        failure of that handler. Returns a function that stops the observing.
        """
        self._observers.append(observer)

        def stop() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return stop

    def _handlers_for(self, event: WebhookEvent) -> tuple[_Handler, ...]:
        route = (event.schema_name, event.table, event.event)
        found = self._routes.get(route)
        if found is None:
            found = tuple(h for h in self._handlers if h.filter.matches(*route))
            if len(self._routes) < 4096:
                self._routes[route] = found
        return found

    # -- the pipeline -------------------------------------------------------------

    def precheck(
        self, method: str, headers: Headers, content_length: int | None = None
    ) -> Outcome | None:
        """Refuse what can be refused before reading the body (405, 413, 415)."""
        try:
            self._precheck(method, _lower(headers), content_length)
        except WebhookError as error:
            return _refused(error)
        return None

    def _precheck(self, method: str, headers: dict[str, str], length: int | None) -> None:
        if method != "POST" and method.upper() != "POST":
            raise MethodNotAllowed(f"{method.upper()} is not allowed; webhooks are POSTed")
        if length is None:
            declared = headers.get("content-length", "").strip()
            length = int(declared) if declared.isascii() and declared.isdigit() else None
        if length is not None and length > self.max_body_bytes:
            raise PayloadTooLarge(f"body exceeds {self.max_body_bytes} bytes")
        content_type = headers.get("content-type", "").strip()
        if content_type and not _is_json(content_type):
            raise UnsupportedMediaType("Content-Type must be application/json")

    def verify(self, body: bytes, headers: Headers) -> None:
        """Check the signature headers against ``body``; raise a :class:`SignatureError`."""
        self._verify(body, _lower(headers))

    def _verify(self, body: bytes, headers: dict[str, str]) -> None:
        header = headers.get(_SIGNATURE)
        if header is None and self.allow_legacy_signature and _LEGACY in headers:
            verify_legacy_with_keys(body, headers[_LEGACY], self._keys)
            return
        verify_with_keys(body, header, self._keys, self.tolerance, self.clock())

    def _read(self, body: bytes, headers: Headers, method: str) -> Admitted:
        """Size guard, verify, parse, and the typed events for each matching handler."""
        lowered = _lower(headers)
        self._precheck(method, lowered, len(body))
        self._verify(body, lowered)
        event = parse_event(body, decimals=self.decimals)
        typed: dict[type[Any], WebhookEvent] = {}
        calls = []
        for handler in self._handlers_for(event):
            if handler.model is None:
                calls.append((handler, event))
                continue
            if handler.model not in typed:
                typed[handler.model] = _parse_as(body, handler.model, self.decimals)
            calls.append((handler, typed[handler.model]))
        key = self.idempotency_key(event) if self.store is not None else None
        return Admitted(event, key, calls)

    def _read_or_refuse(self, body: bytes, headers: Headers, method: str) -> Admitted | Outcome:
        try:
            return self._read(body, headers, method)
        except WebhookError as error:
            return _refused(error)

    def _claimed(self, admitted: Admitted, state: ClaimState | None) -> Admitted | Outcome:
        if state is ClaimState.DONE:
            return Outcome(200, {"ok": True, "duplicate": True}, admitted.event)
        if state is ClaimState.IN_PROGRESS:
            return _refused(
                EventInProgress("this event is already being handled; retry later"),
                admitted.event,
            )
        return admitted

    def admit(self, body: bytes, headers: Headers, method: str = "POST") -> Admitted | Outcome:
        """Run every step up to and including the idempotency claim.

        Returns the :class:`Admitted` event to pass to :meth:`process`, or the
        :class:`Outcome` that answers the request now (a refusal or a duplicate).
        """
        admitted = self._read_or_refuse(body, headers, method)
        if isinstance(admitted, Outcome) or admitted.key is None:
            return admitted
        if self._store_is_async:
            raise TypeError("an async idempotency store needs handle_async / admit_async")
        store = cast(IdempotencyStore, self.store)
        return self._claimed(admitted, store.claim(admitted.key, self.processing_ttl))

    async def admit_async(
        self, body: bytes, headers: Headers, method: str = "POST"
    ) -> Admitted | Outcome:
        """:meth:`admit` for async code (awaits an async idempotency store)."""
        admitted = self._read_or_refuse(body, headers, method)
        if isinstance(admitted, Outcome) or admitted.key is None:
            return admitted
        if self._store_is_async:
            state = await cast(AsyncIdempotencyStore, self.store).claim(
                admitted.key, self.processing_ttl
            )
        else:
            state = cast(IdempotencyStore, self.store).claim(admitted.key, self.processing_ttl)
        return self._claimed(admitted, state)

    def process(self, admitted: Admitted) -> Outcome:
        """Run the handlers, then complete the claim (or release it if any raised)."""
        if admitted.key is not None and self._store_is_async:
            raise TypeError("an async idempotency store needs handle_async / process_async")
        failures: list[BaseException] = []
        for handler, event in admitted.calls:
            try:
                for observer in self._observers:
                    observer(handler.func, event)
                result = handler.func(event)
                if result is not None and inspect.isawaitable(result):
                    asyncio.run(_awaited(result))
            except Exception as exc:  # every handler runs; failures are aggregated
                failures.append(exc)
        outcome = self._finish(admitted, failures)
        if admitted.key is not None:
            store = cast(IdempotencyStore, self.store)
            if failures:
                store.release(admitted.key)
            else:
                store.complete(admitted.key, self.done_ttl)
        return outcome

    async def process_async(self, admitted: Admitted) -> Outcome:
        """:meth:`process` for async code: awaits async handlers, threads sync ones."""
        failures: list[BaseException] = []
        for handler, event in admitted.calls:
            try:
                for observer in self._observers:
                    observer(handler.func, event)
                if handler.is_async:
                    await handler.func(event)
                    continue
                if handler.threaded:
                    result = await asyncio.to_thread(handler.func, event)
                else:
                    result = handler.func(event)
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception as exc:
                failures.append(exc)
        outcome = self._finish(admitted, failures)
        if admitted.key is not None and self.store is not None:
            if failures:
                done = self.store.release(admitted.key)
            else:
                done = self.store.complete(admitted.key, self.done_ttl)
            if self._store_is_async:
                await done  # type: ignore[misc]
        return outcome

    def _finish(self, admitted: Admitted, failures: Sequence[BaseException]) -> Outcome:
        event = admitted.event
        if not failures:
            return Outcome(200, {"ok": True}, event)
        for exc in failures:
            logger.error(
                "handler failed for %s on %s",
                event.event,
                event.qualified_table,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        error = HandlerError(
            f"{len(failures)} of {len(admitted.calls)} handler(s) failed", tuple(failures)
        )
        return Outcome.refuse(error, event)

    def handle(self, body: bytes, headers: Headers, method: str = "POST") -> Outcome:
        """Run the whole pipeline on one request. Never raises for bad input."""
        admitted = self.admit(body, headers, method)
        if isinstance(admitted, Outcome):
            return admitted
        return self.process(admitted)

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


def _parse_as(body: bytes, model: type[Any], decimals: bool) -> WebhookEvent:
    try:
        return parse_event(body, model, decimals=decimals)
    except InvalidPayload as error:
        name = getattr(model, "__name__", str(model))
        raise InvalidPayload(f"record does not match {name}: {error}") from None


def _refused(error: WebhookError, event: WebhookEvent | None = None) -> Outcome:
    level = logging.WARNING if isinstance(error, SignatureError) else logging.INFO
    logger.log(level, "webhook refused with %d: %s", error.status, error.code)
    return Outcome.refuse(error, event)


def _lower(headers: Headers) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    lowered: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        lowered[key] = f"{lowered[key]}, {value}" if key in lowered else value
    return lowered


def _is_json(content_type: str) -> bool:
    if content_type == "application/json":
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
