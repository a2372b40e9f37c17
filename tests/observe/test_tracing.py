"""Tracing on: one span per proxied request, with the GenAI attributes and real times."""

from __future__ import annotations

import copy

import openai
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.gateway.conftest import split_config

from turnout.config import config_from_mapping
from turnout.config.model import TracingSettings
from turnout.gateway.server import serve_gateway
from turnout.observe.observer import Observer
from turnout.observe.tracing import OtelSpans
from turnout.simulator import RunningSimulator
from turnout.snapshot import build_snapshot


async def test_spans_follow_genai_conventions(sim: RunningSimulator) -> None:
    config = copy.deepcopy(split_config(sim.base_url))
    config["upstreams"][0]["labels"] = {"provider": "simulator"}
    exporter = InMemorySpanExporter()
    spans = OtelSpans(TracingSettings(enabled=True), exporter=exporter)
    observer = Observer(spans=spans)
    snapshot = build_snapshot(config_from_mapping(config))
    gateway, server = await serve_gateway(snapshot, host="127.0.0.1", port=0, observer=observer)
    try:
        client_url = f"http://127.0.0.1:{server.port}/v1"
        client = openai.AsyncOpenAI(base_url=client_url, api_key="x", max_retries=0)
        raw = await client.chat.completions.with_raw_response.create(
            model="x", messages=[{"role": "user", "content": "one two"}], user="alice"
        )
        variant = raw.headers["x-turnout-variant"]
    finally:
        await server.close()
        await gateway.close()
        spans.close()  # flushes the batch processor
    (span,) = exporter.get_finished_spans()
    attrs = dict(span.attributes or {})
    assert span.name == f"chat m-{variant}"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "simulator"
    assert attrs["gen_ai.request.model"] == f"m-{variant}"
    assert attrs["gen_ai.usage.input_tokens"] == 2
    assert attrs["gen_ai.usage.output_tokens"] == 20
    assert attrs["turnout.route"] == "main" and attrs["turnout.variant"] == variant
    assert attrs["turnout.request_id"] == raw.headers["x-turnout-request-id"]
    assert span.end_time is not None and span.start_time is not None
    assert 0 < span.end_time - span.start_time < 5e9


def test_tracing_is_off_by_default() -> None:
    config = config_from_mapping(split_config("http://127.0.0.1:9/v1"))
    assert config.tracing.enabled is False
