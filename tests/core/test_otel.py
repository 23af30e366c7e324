"""OpenTelemetry spans and metrics of a receiver, read with the SDK's in-memory exporters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from fluxbase_receiver import InsertEvent, Receiver, WebhookEvent
from fluxbase_receiver.otel import RECEIVE_SPAN, instrument
from fluxbase_receiver.signature import fluxbase_headers

SECRET = "otel-test-secret"


class Telemetry:
    """A tracer provider and a meter provider that keep everything in memory."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        spans = self.spans.get_finished_spans()
        return [span for span in spans if name is None or span.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for found in scope.metrics
            if found.name == metric
            for point in found.data.data_points
        ]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    kept = Telemetry()
    yield kept
    kept.tracer_provider.shutdown()
    kept.meter_provider.shutdown()


@pytest.fixture
def receiver(telemetry: Telemetry) -> Iterator[Receiver]:
    instance = Receiver(SECRET)
    stop = instrument(
        instance,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    yield instance
    stop()


def body(event_id: str | None = "evt-1", table: str = "orders") -> bytes:
    fields: dict[str, Any] = {
        "event": "INSERT",
        "table": table,
        "schema": "shop",
        "record": {"id": 1},
        "webhook_id": "hook-7",
    }
    if event_id:
        fields["id"] = event_id
    return json.dumps(fields).encode()


def test_an_accepted_event_makes_a_receive_span_with_a_child_per_handler(
    telemetry: Telemetry, receiver: Receiver
) -> None:
    @receiver.on("shop.orders")
    def record_order(event: InsertEvent[dict[str, Any]]) -> None:
        pass

    @receiver.on("*")
    def audit(event: WebhookEvent) -> None:
        pass

    outcome = receiver.handle(body(), fluxbase_headers(body(), SECRET))

    assert outcome.status == 200
    (received,) = telemetry.finished(RECEIVE_SPAN)
    assert received.kind is SpanKind.SERVER
    assert received.status.status_code is not StatusCode.ERROR
    assert attributes(received) == {
        "http.response.status_code": 200,
        "fluxbase.outcome": "accepted",
        "fluxbase.event": "INSERT",
        "fluxbase.table": "orders",
        "fluxbase.schema": "shop",
        "fluxbase.event_id": "evt-1",
        "fluxbase.webhook_id": "hook-7",
    }
    handlers = [span for span in telemetry.finished() if span.name != RECEIVE_SPAN]
    names = sorted(attributes(span)["fluxbase.handler"] for span in handlers)
    assert [name.rsplit(".", 1)[1] for name in names] == ["audit", "record_order"]
    for span in handlers:
        assert span.parent is not None and span.parent.span_id == received.context.span_id
        assert span.context.trace_id == received.context.trace_id
        times = [received.start_time, span.start_time, span.end_time, received.end_time]
        assert None not in times and times == sorted(times)  # type: ignore[type-var]


def test_a_failing_handler_marks_its_span_the_receive_span_and_the_metrics(
    telemetry: Telemetry, receiver: Receiver
) -> None:
    @receiver.on("orders")
    def broken(event: WebhookEvent) -> None:
        raise LookupError("no such order")

    outcome = receiver.handle(body(), fluxbase_headers(body(), SECRET))

    assert outcome.status == 500
    (received,) = telemetry.finished(RECEIVE_SPAN)
    assert received.status.status_code is StatusCode.ERROR
    assert attributes(received)["error.type"] == "handler_failed"
    (handler,) = [span for span in telemetry.finished() if span.name != RECEIVE_SPAN]
    assert handler.status.status_code is StatusCode.ERROR
    assert attributes(handler)["error.type"] == "LookupError"
    (duration,) = telemetry.points("fluxbase.receiver.handler.duration")
    assert duration.count == 1
    assert duration.attributes["error.type"] == "LookupError"
    assert duration.attributes["fluxbase.handler"].endswith("broken")
    (counted,) = telemetry.points("fluxbase.receiver.events")
    assert counted.value == 1 and counted.attributes["fluxbase.outcome"] == "failed"


def test_events_are_counted_by_outcome(telemetry: Telemetry, receiver: Receiver) -> None:
    receiver.on("*")(lambda event: None)
    good = body("evt-count")
    receiver.handle(good, fluxbase_headers(good, SECRET))
    receiver.handle(good, fluxbase_headers(good, SECRET))  # a completed duplicate
    receiver.handle(good, fluxbase_headers(good, "another secret"))
    receiver.handle(good, fluxbase_headers(good, SECRET), method="GET")
    assert receiver.precheck("POST", {"Content-Type": "text/plain"}) is not None

    counts = {
        (
            point.attributes["fluxbase.outcome"],
            point.attributes["http.response.status_code"],
            point.attributes.get("error.type"),
        ): point.value
        for point in telemetry.points("fluxbase.receiver.events")
    }
    assert counts == {
        ("accepted", 200, None): 1,
        ("duplicate", 200, None): 1,
        ("refused", 401, "invalid_signature"): 1,
        ("refused", 405, "method_not_allowed"): 1,
        ("refused", 415, "unsupported_media_type"): 1,
    }
    assert len(telemetry.finished(RECEIVE_SPAN)) == 5
    for point in telemetry.points("fluxbase.receiver.events"):
        assert "fluxbase.event_id" not in point.attributes  # one series per event would grow


def test_async_handlers_are_traced_the_same_way(telemetry: Telemetry, receiver: Receiver) -> None:
    @receiver.on("orders")
    async def notify(event: WebhookEvent) -> None:
        await asyncio.sleep(0)

    receiver.on("orders")(lambda event: None)  # a sync handler, run in a thread

    outcome = asyncio.run(receiver.handle_async(body(), fluxbase_headers(body(), SECRET)))

    assert outcome.status == 200
    (received,) = telemetry.finished(RECEIVE_SPAN)
    handlers = [span for span in telemetry.finished() if span.name != RECEIVE_SPAN]
    assert len(handlers) == 2
    assert all(span.parent and span.parent.span_id == received.context.span_id for span in handlers)
    (duration,) = telemetry.points("fluxbase.receiver.handler.duration")[:1]
    assert duration.count == 1


def test_stopping_the_instrumentation_stops_recording(
    telemetry: Telemetry, receiver: Receiver
) -> None:
    stop = instrument(
        receiver, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    stop()
    receiver.handle(body(None), fluxbase_headers(body(None), SECRET))
    assert len(telemetry.finished(RECEIVE_SPAN)) == 1  # the fixture's instrumentation only
