"""Optional OpenTelemetry traces: one span per request, after it finished.

Off by default (``tracing.enabled``). The span is built from the request's own
record, with the times it measured, so tracing adds no work while a request is in
flight; spans are exported in batches by the SDK's background thread. Attributes
follow the OpenTelemetry semantic conventions for generative AI (``gen_ai.*``),
with turnout's own under ``turnout.*``.
"""

from __future__ import annotations

from typing import Any, Protocol

from turnout.config.model import TracingSettings
from turnout.exceptions import ConfigError
from turnout.observe.exchange import Exchange

OPERATIONS = {
    "chat/completions": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}


class SpanSink(Protocol):
    def record(self, x: Exchange, provider: str | None) -> None: ...

    def close(self) -> None: ...


class OtelSpans:
    def __init__(self, settings: TracingSettings, exporter: Any = None) -> None:
        try:
            from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
            from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
            from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
            from opentelemetry.sdk.trace.sampling import TraceIdRatioBased  # noqa: PLC0415
        except ImportError:
            raise ConfigError.single(
                "tracing.enabled", "traces need the OpenTelemetry SDK: pip install 'turnout[otel]'"
            ) from None
        if exporter is None:
            exporter = _exporter(settings)
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name}),
            sampler=TraceIdRatioBased(settings.sample_rate),
        )
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("turnout")

    def record(self, x: Exchange, provider: str | None) -> None:
        operation = OPERATIONS.get(x.operation, x.operation or "request")
        start_ns = int(x.wall_start * 1e9)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider or "openai",
            "turnout.request_id": x.request_id,
            "http.response.status_code": x.status,
        }
        optional = {
            "gen_ai.request.model": x.model,
            "gen_ai.usage.input_tokens": x.input_tokens,
            "gen_ai.usage.output_tokens": x.output_tokens,
            "error.type": x.error_class,
            "turnout.route": x.route,
            "turnout.variant": x.variant,
            "turnout.upstream": x.upstream,
            "turnout.time_to_first_token_s": x.ttft,
        }
        attributes.update({k: v for k, v in optional.items() if v is not None})
        span = self._tracer.start_span(
            f"{operation} {x.model}" if x.model else operation,
            start_time=start_ns,
            attributes=attributes,
        )
        span.end(end_time=start_ns + int(x.total * 1e9))

    def close(self) -> None:
        self._provider.shutdown()


def _exporter(settings: TracingSettings) -> Any:
    if settings.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415

        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
    except ImportError:
        raise ConfigError.single(
            "tracing.exporter", "otlp needs its exporter: pip install 'turnout[otel]'"
        ) from None
    return OTLPSpanExporter(endpoint=settings.endpoint) if settings.endpoint else OTLPSpanExporter()


def open_spans(settings: TracingSettings) -> SpanSink | None:
    return OtelSpans(settings) if settings.enabled else None
