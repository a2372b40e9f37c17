"""The pipeline's last stage: every finished request into the metrics and the log.

Both are cheap on the request path: metrics are in-memory arithmetic, and the
request log only appends a tuple to a bounded queue; a writer process does the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from turnout.observe.exchange import Exchange
from turnout.observe.metrics import Registry
from turnout.observe.tracing import SpanSink
from turnout.store.entry import EntryValues, LogEntry, Loggable

if TYPE_CHECKING:
    from turnout.config import Config
    from turnout.snapshot import Snapshot


class LogSink(Protocol):
    def submit(self, entry: LogEntry | EntryValues | Loggable) -> bool: ...


class Observer:
    def __init__(
        self,
        registry: Registry | None = None,
        log: LogSink | None = None,
        metrics: bool = True,
        spans: SpanSink | None = None,
    ) -> None:
        self.registry = registry if registry is not None else Registry()
        self.log = log
        self.spans = spans
        self.metrics = metrics  # off only to measure what metrics cost (bench/)

    def begin(self, x: Exchange, variant: str, upstream: str) -> None:
        """The request has a variant and an upstream: it counts as in flight in
        their track (``Registry``), which it is recorded in when it finishes."""
        route = x.route
        assert route is not None
        x.variant = variant
        x.upstream = upstream
        if self.metrics:
            # The registry's lookup, inline: a call less on every request.
            track = self.registry.tracks.get((route, variant, upstream))
            if track is None:
                track = self.registry.track(route, variant, upstream, x.start)
            x.track = track
            track.in_flight += 1

    def moved(self, x: Exchange, upstream: str) -> None:
        """The request goes on to another upstream (a fallback): in flight there now."""
        track = x.track
        if track is not None and x.route is not None and x.variant is not None:
            track.in_flight -= 1
            track = x.track = self.registry.track(x.route, x.variant, upstream, x.start)
            track.in_flight += 1
        x.upstream = upstream

    def absorbed(self, x: Exchange, upstream: str, error_class: str, now: float) -> None:
        """An attempt failed and a retry or fallback follows: the client does not see
        the failure, but it counts against the upstream and, as absorbed, the variant."""
        if not self.metrics or x.route is None or x.variant is None:
            return
        self.registry.track(x.route, x.variant, upstream, now).absorb(error_class, now)

    def finish(self, x: Exchange, snap: Snapshot) -> None:
        x.cost_nano = snap.cost_nano(x.model, x.input_tokens, x.output_tokens)
        track = x.track
        if track is not None:
            track.in_flight -= 1
            self.registry.record(x)
        if self.log is not None:
            if x.route and (x.request_body is not None or x.response_body is not None):
                sampler = snap.body_sampling.get(x.route)
                if sampler is not None and sampler.redact is not None:
                    x.redact_spec = _redact_spec(snap.config, x.route)
            # Queued as it is; its entry is built with the rest of its batch, when
            # the log seals it (Exchange.log_values), with the code and data still
            # in the CPU's caches from the entry before.
            self.log.submit(x)
        if self.spans is not None and x.upstream is not None:
            target = snap.upstreams.get(x.upstream)
            self.spans.record(x, target.labels.get("provider") if target else None)


# The last config seen, and its routes' hooks: one slot, as configs change rarely.
_specs: list[tuple[Config | None, dict[str, str]]] = [(None, {})]


def _redact_spec(config: Config, route: str) -> str | None:
    """The route's redaction hook as the config names it ("module:function"), which
    the writer process imports; the function itself cannot cross to it. Looked up
    per config, for sampled requests only."""
    seen, specs = _specs[0]
    if seen is not config:
        specs = {
            r.name: r.log_bodies.redact
            for r in config.routes
            if r.log_bodies is not None and r.log_bodies.redact is not None
        }
        _specs[0] = (config, specs)
    return specs.get(route)
