"""OpenTelemetry traces, an optional extra (`pip install parcelhook[otel]`).

A span per API request (metrics' request middleware) and per delivery attempt (made by hand
around the sender: its HTTP client is parcelhook's own). Without the extra, or without an
endpoint, nothing here costs more than a None check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from parcelhook.config import Settings

INSTRUMENTATION = "parcelhook"


class TracingUnavailable(RuntimeError):
    pass


def tracer_from_settings(settings: Settings) -> Any | None:
    """An OTLP-exporting tracer when `otlp_endpoint` is set, else None."""
    if not settings.otlp_endpoint:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise TracingUnavailable(
            "--otlp-endpoint / PARCELHOOK_OTLP_ENDPOINT needs the otel extra: "
            "pip install 'parcelhook[otel]'"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": "parcelhook"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
    )
    return provider.get_tracer(INSTRUMENTATION)


def tracer_from_provider(provider: Any) -> Any:
    return provider.get_tracer(INSTRUMENTATION)


def client_kind() -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind.CLIENT


def server_kind() -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind.SERVER


def mark_error(span: Any, description: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, description))
