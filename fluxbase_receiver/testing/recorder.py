"""Recording which handlers of a receiver ran, with which events (no pytest needed)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

from fluxbase_receiver.events import WebhookEvent
from fluxbase_receiver.receiver import Receiver

__all__ = ["HandlerCall", "Recorder"]


@dataclasses.dataclass(frozen=True)
class HandlerCall:
    """One handler invocation: the handler function, its name, and the event it got."""

    handler: Callable[..., Any]
    name: str
    event: WebhookEvent


def _name(handler: Callable[..., Any]) -> str:
    name = getattr(handler, "__qualname__", None) or getattr(handler, "__name__", None)
    return name if isinstance(name, str) else repr(handler)


class Recorder:
    """Records the handler calls of the receivers it watches.

    ``recorder.watch(receiver)`` observes every handler call of ``receiver`` (through
    :meth:`Receiver.observe`; the handlers run as usual); the fixture stops watching
    after the test. A handler is named by the function itself or its (qualified) name.
    """

    def __init__(self) -> None:
        self.calls: list[HandlerCall] = []
        self._lock = threading.Lock()
        self._stops: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"<Recorder calls={len(self.calls)}>"

    def watch(self, receiver: Receiver) -> Receiver:
        """Record every call of ``receiver``'s handlers from now on; return ``receiver``."""
        self._stops.append(receiver.observe(self._record))
        return receiver

    def restore(self) -> None:
        """Stop watching every receiver."""
        for stop in self._stops:
            stop()
        self._stops.clear()

    def _record(self, func: Callable[..., Any], event: WebhookEvent) -> None:
        with self._lock:
            self.calls.append(HandlerCall(func, _name(func), event))

    def _matches(self, call: HandlerCall, handler: Callable[..., Any] | str) -> bool:
        if isinstance(handler, str):
            return handler in (call.name, call.name.rpartition(".")[2])
        return call.handler is handler or call.handler is getattr(handler, "__wrapped__", None)

    @property
    def ran(self) -> list[str]:
        """The names of the handlers that ran, in call order."""
        return [call.name for call in self.calls]

    def events(self, handler: Callable[..., Any] | str | None = None) -> list[WebhookEvent]:
        """The events passed to ``handler`` (to any handler when ``None``), in order."""
        return [c.event for c in self.calls if handler is None or self._matches(c, handler)]

    def assert_ran(
        self,
        handler: Callable[..., Any] | str,
        *,
        times: int | None = None,
        event: str | None = None,
        table: str | None = None,
    ) -> WebhookEvent:
        """Assert ``handler`` ran (``times`` times, for ``event``/``table``); return its event."""
        seen = [
            e
            for e in self.events(handler)
            if (event is None or e.event == event.upper())
            and (table is None or table in (e.table, e.qualified_table))
        ]
        wanted = " ".join(f"{k}={v}" for k, v in (("event", event), ("table", table)) if v)
        label = f"{handler if isinstance(handler, str) else _name(handler)} {wanted}".strip()
        if not seen:
            raise AssertionError(f"{label} did not run; handlers that ran: {self.ran}")
        if times is not None and len(seen) != times:
            raise AssertionError(f"{label} ran {len(seen)} time(s), expected {times}")
        return seen[-1]

    def assert_not_ran(self, handler: Callable[..., Any] | str) -> None:
        """Assert ``handler`` never ran."""
        count = len(self.events(handler))
        if count:
            label = handler if isinstance(handler, str) else _name(handler)
            raise AssertionError(f"{label} ran {count} time(s), expected none")

    def clear(self) -> None:
        """Forget the calls recorded so far."""
        with self._lock:
            self.calls.clear()
