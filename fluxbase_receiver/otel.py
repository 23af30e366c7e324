"""OpenTelemetry traces and metrics for a :class:`~fluxbase_receiver.Receiver`.

``pip install 'fluxbase-receiver[otel]'``, then ``instrument(receiver)``. It attaches
through :meth:`Receiver.observe` and records, with the global providers unless others are
given:

- a ``fluxbase webhook receive`` span (kind SERVER) per answer the receiver makes, child of
  the current span (the web framework's, when it is instrumented), with
  ``http.response.status_code``, ``error.type`` (the refusal's code) and the event's
  ``fluxbase.event``, ``fluxbase.table``, ``fluxbase.schema``, ``fluxbase.event_id`` and
  ``fluxbase.webhook_id``; an error status for a 5xx answer;
- a ``fluxbase handler <name>`` span (kind INTERNAL) per handler call, child of the receive
  span, with ``fluxbase.handler`` and ``error.type`` when it raised;
- the counter ``fluxbase.receiver.events`` (answers, by ``fluxbase.outcome``: ``accepted``,
  ``duplicate``, ``refused`` or ``failed``, with ``http.response.status_code`` and
  ``error.type``) and the histogram ``fluxbase.receiver.handler.duration`` (seconds, by
  ``fluxbase.handler``, ``fluxbase.table``, ``fluxbase.event`` and ``error.type``).

The spans are written when the answer is known, with the start and end times measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

try:
    from opentelemetry import metrics, trace
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "fluxbase_receiver.otel needs opentelemetry-api: pip install 'fluxbase-receiver[otel]'"
    ) from error

from fluxbase_receiver._logcontext import handler_name
from fluxbase_receiver.events import WebhookEvent
from fluxbase_receiver.receiver import Outcome, Receiver

__all__ = ["RECEIVE_SPAN", "instrument"]

RECEIVE_SPAN = "fluxbase webhook receive"
"""The name of the span made for each answer."""
_SCOPE = "fluxbase_receiver"


@dataclass(frozen=True, slots=True)
class _HandlerCall:
    name: str
    event: WebhookEvent
    start_ns: int
    end_ns: int
    error: Exception | None


_CALLS: ContextVar[list[_HandlerCall] | None] = ContextVar("fluxbase_handler_calls", default=None)


def _event_attributes(event: WebhookEvent | None) -> dict[str, str]:
    """The ``fluxbase.*`` attributes of ``event`` (none for ``None``; ids only when present)."""
    if event is None:
        return {}
    attributes = {
        "fluxbase.event": event.event,
        "fluxbase.table": event.table,
        "fluxbase.schema": event.schema_name,
    }
    if event.id:
        attributes["fluxbase.event_id"] = event.id
    if event.webhook_id:
        attributes["fluxbase.webhook_id"] = event.webhook_id
    return attributes


def _outcome_name(outcome: Outcome) -> str:
    """``accepted``, ``duplicate``, ``refused`` or ``failed`` (a handler raised)."""
    if outcome.ok:
        return "duplicate" if outcome.body.get("duplicate") else "accepted"
    return "failed" if outcome.status >= 500 else "refused"


def instrument(
    receiver: Receiver,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> Callable[[], None]:
    """Record spans and metrics for ``receiver``; returns a function that stops it."""
    tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
    meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
    events = meter.create_counter(
        "fluxbase.receiver.events", unit="{event}", description="Webhook answers, by outcome"
    )
    durations = meter.create_histogram(
        "fluxbase.receiver.handler.duration", unit="s", description="Handler run time"
    )

    def after(
        handler: Callable[..., Any], event: WebhookEvent, duration: float, error: Exception | None
    ) -> None:
        name = handler_name(handler)
        attributes: dict[str, str] = {
            "fluxbase.handler": name,
            "fluxbase.table": event.table,
            "fluxbase.event": event.event,
        }
        if error is not None:
            attributes["error.type"] = type(error).__qualname__
        durations.record(duration, attributes)
        end = time.time_ns()
        calls = _CALLS.get()
        if calls is None:
            calls = []
            _CALLS.set(calls)
        calls.append(_HandlerCall(name, event, end - int(duration * 1e9), end, error))

    def outcome(answer: Outcome, duration: float) -> None:
        end = time.time_ns()
        start = end - int(duration * 1e9)
        counted: dict[str, str | int] = {
            "http.response.status_code": answer.status,
            "fluxbase.outcome": _outcome_name(answer),
        }
        if answer.error is not None:
            counted["error.type"] = answer.error.code
        if answer.event is not None:
            counted["fluxbase.table"] = answer.event.table
            counted["fluxbase.event"] = answer.event.event
        events.add(1, counted)
        span = tracer.start_span(
            RECEIVE_SPAN,
            kind=trace.SpanKind.SERVER,
            attributes={**counted, **_event_attributes(answer.event)},
            start_time=start,
        )
        if answer.status >= 500:
            span.set_status(trace.StatusCode.ERROR)
        calls, _ = _CALLS.get(), _CALLS.set(None)
        for call in calls or ():
            if call.start_ns >= start:  # not one left over by a call that never answered
                _handler_span(tracer, span, call)
        span.end(end_time=end)

    return receiver.observe(after=after, outcome=outcome)


def _handler_span(tracer: trace.Tracer, parent: trace.Span, call: _HandlerCall) -> None:
    attributes = {"fluxbase.handler": call.name, **_event_attributes(call.event)}
    if call.error is not None:
        attributes["error.type"] = type(call.error).__qualname__
    span = tracer.start_span(
        f"fluxbase handler {call.name}",
        context=trace.set_span_in_context(parent),
        attributes=attributes,
        start_time=call.start_ns,
    )
    if call.error is not None:
        span.set_status(trace.StatusCode.ERROR, type(call.error).__qualname__)
    span.end(end_time=call.end_ns)
