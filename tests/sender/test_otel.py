"""OpenTelemetry spans and metrics of a sender delivering to a loopback receiver."""

from __future__ import annotations

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

from fluxbase_receiver.sender import Sender
from fluxbase_receiver.sender.otel import DELIVER_SPAN, instrument
from tests.sender.conftest import deliver_all, make_webhook
from tests.sender.receivers import Answer, ScriptedReceiver


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def instrumented(
    sender: Sender, spans: InMemorySpanExporter, reader: InMemoryMetricReader
) -> Iterator[Sender]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[reader])
    stop = instrument(sender, tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield sender
    stop()
    tracer_provider.shutdown()
    meter_provider.shutdown()


def points(reader: InMemoryMetricReader, metric: str) -> list[Any]:
    data = reader.get_metrics_data()
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


def test_each_attempt_is_a_client_span_and_counted_by_status(
    instrumented: Sender,
    target: ScriptedReceiver,
    hook_url: str,
    spans: InMemorySpanExporter,
    reader: InMemoryMetricReader,
) -> None:
    webhook = make_webhook(instrumented, hook_url + "?token=query-secret")
    target.script.append(Answer(503))
    instrumented.emit("INSERT", "orders", {"id": 1})

    deliver_all(instrumented)

    first, second = sorted(spans.get_finished_spans(), key=lambda span: span.start_time or 0)
    assert {first.name, second.name} == {DELIVER_SPAN}
    assert first.kind is SpanKind.CLIENT
    (delivery,) = instrumented.webhooks.get_deliveries(webhook.id)
    host, port = hook_url.split("//")[1].split("/")[0].split(":")
    assert attributes(first) == {
        "http.request.method": "POST",
        "url.full": f"http://{host}:{port}/hook",
        "server.address": host,
        "server.port": int(port),
        "http.response.status_code": 503,
        "error.type": "503",
        "fluxbase.delivery.status": "retrying",
        "fluxbase.delivery_id": delivery.id,
        "fluxbase.webhook_id": webhook.id,
        "fluxbase.attempt": 1,
        "fluxbase.event_id": delivery.event_id,
        "fluxbase.event": "INSERT",
        "fluxbase.table": "orders",
    }
    assert first.status.status_code is StatusCode.ERROR
    assert attributes(second)["fluxbase.attempt"] == 2
    assert attributes(second)["fluxbase.delivery.status"] == "success"
    assert "error.type" not in attributes(second)
    assert second.status.status_code is not StatusCode.ERROR
    assert first.end_time is not None and first.start_time is not None
    assert first.end_time >= first.start_time

    counts = {
        (point.attributes["fluxbase.delivery.status"], point.attributes.get("error.type")): (
            point.value
        )
        for point in points(reader, "fluxbase.sender.deliveries")
    }
    assert counts == {("retrying", "503"): 1, ("success", None): 1}
    (latency,) = points(reader, "fluxbase.sender.delivery.latency")
    assert latency.count == 1 and latency.sum >= 0


def test_transport_errors_are_named_in_error_type(
    instrumented: Sender, spans: InMemorySpanExporter
) -> None:
    make_webhook(instrumented, "http://127.0.0.1:9/hook", max_retries=0)  # the discard port
    instrumented.emit("UPDATE", "orders", {"id": 2})

    deliver_all(instrumented)

    (span,) = spans.get_finished_spans()
    assert attributes(span)["error.type"] == "connection_failed"
    assert attributes(span)["fluxbase.delivery.status"] == "failed"
    assert "http.response.status_code" not in attributes(span)


def test_the_backlog_gauge_reads_the_store(
    instrumented: Sender, hook_url: str, reader: InMemoryMetricReader
) -> None:
    make_webhook(instrumented, hook_url)
    instrumented.emit("INSERT", "orders", {"id": 1})
    instrumented.emit("INSERT", "orders", {"id": 2})

    (waiting,) = points(reader, "fluxbase.sender.backlog")
    assert waiting.value == 2
    deliver_all(instrumented)
    (done,) = points(reader, "fluxbase.sender.backlog")
    assert done.value == 0
