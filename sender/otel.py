"""OpenTelemetry traces and metrics for a :class:`~fluxbase_receiver.sender.Sender`.

``pip install 'fluxbase-receiver[otel]'``, then ``instrument(sender)``. It attaches through
:meth:`Sender.observe` and records, with the global providers unless others are given:

- a ``fluxbase webhook deliver`` span (kind CLIENT) per delivery attempt, from the start of
  the POST to its end, with the HTTP client attributes ``http.request.method``,
  ``url.full`` (without user info, query or fragment), ``server.address``,
  ``server.port``, ``http.response.status_code`` and ``error.type`` (the status code, or
  ``timeout``, ``connection_failed``, ``destination_refused``...), plus
  ``fluxbase.delivery_id``, ``fluxbase.webhook_id``, ``fluxbase.attempt``,
  ``fluxbase.event_id``, ``fluxbase.event``, ``fluxbase.table`` and
  ``fluxbase.delivery.status`` (what the attempt led to); an error status when it failed;
- the counter ``fluxbase.sender.deliveries`` (attempts, by ``fluxbase.delivery.status``:
  ``success``, ``retrying`` or ``failed``, with ``http.response.status_code`` and
  ``error.type``);
- the histogram ``fluxbase.sender.delivery.latency``: seconds from the row change (the
  event's ``timestamp``) to the end of the attempt that delivered it, for each success;
- the observable gauge ``fluxbase.sender.backlog``: deliveries not finished yet, read from
  the store when the metrics are collected (from a thread other than the sender's loop, as
  a periodic metric reader does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

try:
    from opentelemetry import metrics, trace
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "fluxbase_receiver.sender.otel needs opentelemetry-api: "
        "pip install 'fluxbase-receiver[otel]'"
    ) from error

from fluxbase_receiver.sender.backend import AttemptRecord, ClaimedDelivery
from fluxbase_receiver.sender.delivery import AttemptResult
from fluxbase_receiver.sender.sender import Sender

__all__ = ["DELIVER_SPAN", "instrument"]

DELIVER_SPAN = "fluxbase webhook deliver"
"""The name of the span made for each delivery attempt."""
_SCOPE = "fluxbase_receiver.sender"
_ERROR_TYPES = (
    ("timed out", "timeout"),
    ("connection failed", "connection_failed"),
    ("connection closed", "server_disconnected"),
    ("invalid answer", "invalid_response"),
)


def instrument(
    sender: Sender,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> Callable[[], None]:
    """Record spans and metrics for ``sender``'s deliveries; returns a function that stops it
    (the backlog gauge stays registered with the meter and reads nothing after a stop)."""
    tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
    meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
    deliveries = meter.create_counter(
        "fluxbase.sender.deliveries", unit="{attempt}", description="Delivery attempts, by status"
    )
    latency = meter.create_histogram(
        "fluxbase.sender.delivery.latency",
        unit="s",
        description="From the row change to its successful delivery",
    )
    stopped = False

    def backlog(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        if stopped:
            return []
        return [metrics.Observation(sender.backlog())]

    meter.create_observable_gauge(
        "fluxbase.sender.backlog",
        callbacks=[backlog],
        unit="{delivery}",
        description="Deliveries not finished yet",
    )

    def observe(claimed: ClaimedDelivery, record: AttemptRecord) -> None:
        result = record.result
        end = record.started_at + result.duration_ms / 1000
        status = record.decision.status
        counted: dict[str, str | int] = {"fluxbase.delivery.status": status}
        if result.status is not None:
            counted["http.response.status_code"] = result.status
        error = _error_type(result)
        if error is not None:
            counted["error.type"] = error
        deliveries.add(1, counted)
        if status == "success":
            latency.record(max(0.0, end - claimed.event.occurred_at))
        span = tracer.start_span(
            DELIVER_SPAN,
            kind=trace.SpanKind.CLIENT,
            attributes={**counted, **_attempt_attributes(claimed)},
            start_time=int(record.started_at * 1e9),
        )
        if error is not None:
            span.set_status(trace.StatusCode.ERROR, error)
        span.end(end_time=int(end * 1e9))

    stop_observing = sender.observe(observe)

    def stop() -> None:
        nonlocal stopped
        stopped = True
        stop_observing()

    return stop


def _attempt_attributes(claimed: ClaimedDelivery) -> dict[str, str | int]:
    url = urlsplit(claimed.url)
    attributes: dict[str, str | int] = {
        "http.request.method": "POST",
        "url.full": f"{url.scheme}://{_host_port(url.hostname or '', url.port)}{url.path or '/'}",
        "server.address": url.hostname or "",
        "server.port": url.port or (443 if url.scheme == "https" else 80),
        "fluxbase.delivery_id": claimed.delivery_id,
        "fluxbase.webhook_id": claimed.webhook_id,
        "fluxbase.attempt": claimed.attempt,
        "fluxbase.event_id": claimed.event.id,
        "fluxbase.event": claimed.event.event,
        "fluxbase.table": claimed.event.table,
    }
    return attributes


def _host_port(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _error_type(result: AttemptResult) -> str | None:
    """``error.type`` for a failed attempt: the status code, or a name for what went wrong."""
    if result.ok:
        return None
    if result.status is not None and not 200 <= result.status < 300:
        return str(result.status)
    if result.refused:
        return "destination_refused"
    text = result.error or ""
    for start, name in _ERROR_TYPES:
        if text.startswith(start):
            return name
    return "_OTHER"
