"""Per-series statistics (a route's variant, or an upstream) over sliding windows.

Recording is on the request path, so it is plain arithmetic and sketch inserts on
objects allocated once. Views and exports, for the admin API, are built on demand.
Two rings keep memory fixed: 10 s slots for the 1 and 5 minute windows, 60 s slots
for the hour; the cumulative total rides on the fine ring.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from math import floor
from typing import Any

from turnout.observe.exchange import ERROR_CLASSES, ERROR_INDEX, Exchange
from turnout.observe.sketch import DDSketch
from turnout.observe.windows import Windowed
from turnout.shadow.agreement import Tally

FINE = 10.0  # seconds per fine slot
WINDOWS: dict[str, float | None] = {"60s": 60.0, "300s": 300.0, "3600s": 3600.0, "cumulative": None}
NANO = 1_000_000_000  # cost kept in integer nano-dollars so merged sums are exact
BATCH = 64  # finished requests queued before they are recorded (Registry.record)


class SeriesStats:
    """Counters and sketches of one series in one slot; mergeable exactly."""

    __slots__ = (
        "absorbed",
        "cost_nano",
        "errors",
        "fallbacks",
        "input_tokens",
        "latency",
        "output_tokens",
        "overhead",
        "requests",
        "retries",
        "tps",
        "ttft",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.errors = [0] * len(ERROR_CLASSES)
        # Failed attempts a retry or fallback hid from the client, by class.
        self.absorbed = [0] * len(ERROR_CLASSES)
        self.retries = 0
        self.fallbacks = 0
        self.latency = DDSketch()
        self.overhead = DDSketch()
        self.ttft = DDSketch()
        # Output tokens per *millisecond* of generation: a batch's sum then stays in the
        # sketch's fast path (DDSketch.add_many); shown per second.
        self.tps = DDSketch()
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_nano = 0

    def record_many(self, batch: Sequence[Exchange]) -> None:
        """Finished requests, each with its ``cost_nano`` set. Their times are read once
        into locals and the sketches get each batch in one call: attribute and call
        overhead, not arithmetic, is most of the cost of recording."""
        latency: list[float] = []
        overhead: list[float] = []
        ttft: list[float] = []
        tps: list[float] = []
        errors = self.errors
        tokens_in = tokens_out = cost = retries = fallbacks = 0
        for x in batch:
            error = x.error_class
            if error is not None:
                errors[ERROR_INDEX[error]] += 1
            start, sent, done, first = x.start, x.sent, x.upstream_done, x.first_chunk
            total = x.end - start
            latency.append(total)
            if sent is not None and done is not None:
                own = total - (done - sent)
                overhead.append(own if own > 0.0 else 0.0)
            if first is not None:
                ttft.append(first - start)
            tokens = x.input_tokens
            if tokens:
                tokens_in += tokens
            out = x.output_tokens
            if out:
                tokens_out += out
                # Generation time: streams from the first chunk, whole answers from the send.
                begin = first if first is not None else sent
                if done is not None and begin is not None and done > begin:
                    tps.append(out / ((done - begin) * 1000.0))
            cost += x.cost_nano
            if x.attempts > 1:
                retries += x.retries
                fallbacks += x.fallbacks
        self.requests += len(batch)
        self.input_tokens += tokens_in
        self.output_tokens += tokens_out
        self.cost_nano += cost
        self.retries += retries
        self.fallbacks += fallbacks
        self.latency.add_many(latency)
        if overhead:
            self.overhead.add_many(overhead)
        if ttft:
            self.ttft.add_many(ttft)
        if tps:
            self.tps.add_many(tps)

    def fold_absorbed(self) -> None:
        """Seen from the upstream, an absorbed failure is a request that failed:
        count it so (the upstream views, made from tracks, hold no absorbed errors)."""
        for i, n in enumerate(self.absorbed):
            if n:
                self.requests += n
                self.errors[i] += n
                self.absorbed[i] = 0

    def absorb(self, error_class: str) -> None:
        self.absorbed[ERROR_INDEX[error_class]] += 1

    def merge(self, other: SeriesStats, /) -> None:
        self.requests += other.requests
        for i, n in enumerate(other.errors):
            self.errors[i] += n
        for i, n in enumerate(other.absorbed):
            self.absorbed[i] += n
        self.retries += other.retries
        self.fallbacks += other.fallbacks
        self.latency.merge(other.latency)
        self.overhead.merge(other.overhead)
        self.ttft.merge(other.ttft)
        self.tps.merge(other.tps)
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_nano += other.cost_nano

    def clear(self) -> None:
        self.requests = self.input_tokens = self.output_tokens = self.cost_nano = 0
        self.retries = self.fallbacks = 0
        self.errors[:] = [0] * len(ERROR_CLASSES)
        self.absorbed[:] = [0] * len(ERROR_CLASSES)
        for sketch in (self.latency, self.overhead, self.ttft, self.tps):
            sketch.clear()

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": list(self.errors),
            "absorbed": list(self.absorbed),
            "retries": self.retries,
            "fallbacks": self.fallbacks,
            "latency": self.latency.to_dict(),
            "overhead": self.overhead.to_dict(),
            "ttft": self.ttft.to_dict(),
            "tps": self.tps.to_dict(),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_nano": self.cost_nano,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SeriesStats:
        s = cls()
        s.requests = int(data["requests"])
        s.errors = [int(n) for n in data["errors"]]
        s.absorbed = [int(n) for n in data.get("absorbed", s.absorbed)]
        s.retries = int(data.get("retries", 0))
        s.fallbacks = int(data.get("fallbacks", 0))
        s.latency = DDSketch.from_dict(data["latency"])
        s.overhead = DDSketch.from_dict(data["overhead"])
        s.ttft = DDSketch.from_dict(data["ttft"])
        s.tps = DDSketch.from_dict(data["tps"])
        s.input_tokens = int(data["input_tokens"])
        s.output_tokens = int(data["output_tokens"])
        s.cost_nano = int(data["cost_nano"])
        return s

    def view(self, span: float, in_flight: int) -> dict[str, Any]:
        """The JSON shape of one series (docs/metrics.md)."""
        n = self.requests
        cost = self.cost_nano / NANO
        return {
            "requests": n,
            "throughput_rps": n / span if span > 0 else 0.0,
            "in_flight": in_flight,
            "errors": dict(zip(ERROR_CLASSES, self.errors, strict=True)),
            "error_rate": sum(self.errors) / n if n else 0.0,
            "absorbed_errors": dict(zip(ERROR_CLASSES, self.absorbed, strict=True)),
            "retries": self.retries,
            "fallbacks": self.fallbacks,
            "latency_ms": _percentiles(self.latency, 1000.0),
            "overhead_ms": _percentiles(self.overhead, 1000.0),
            "ttft_ms": _percentiles(self.ttft, 1000.0),
            "output_tokens_per_s": _percentiles(self.tps, 1000.0),
            "tokens": {"input": self.input_tokens, "output": self.output_tokens},
            "cost_usd": cost,
            "cost_per_request_usd": cost / n if n else None,
        }


def _percentiles(sketch: DDSketch, scale: float) -> dict[str, float | None]:
    p50, p95, p99 = sketch.quantiles((0.5, 0.95, 0.99))
    mean = sketch.mean
    return {
        "count": sketch.count,
        "p50": None if p50 is None else p50 * scale,
        "p95": None if p95 is None else p95 * scale,
        "p99": None if p99 is None else p99 * scale,
        "mean": None if mean is None else mean * scale,
    }


class Series:
    """One series over time: fine and coarse rings, and what is in flight now.

    Requests are recorded into the fine ring only; each 10 s slot, once finished,
    is merged into the coarse ring as a whole (one merge per 10 s instead of a
    second set of inserts per request).
    """

    __slots__ = ("_epoch", "_head", "_next_roll", "coarse", "fine", "in_flight", "queued")

    def __init__(self, now: float) -> None:
        self.fine: Windowed[SeriesStats] = Windowed(
            SeriesStats, interval=FINE, horizon=300.0, start=now
        )
        self.coarse: Windowed[SeriesStats] = Windowed(
            SeriesStats, interval=60.0, horizon=3600.0, start=now
        )
        self.in_flight = 0
        self.queued: list[Exchange] = []  # finished, to record in a batch (Registry.record)
        self._epoch = floor(now / FINE)
        self._next_roll = (self._epoch + 1) * FINE
        self._head = self.fine.current(now)

    def _roll(self, now: float) -> SeriesStats:
        if now < self._next_roll:
            return self._head
        epoch = floor(now / FINE)
        if epoch > self._epoch:
            # The finished slot is still intact: the fine ring clears a slot only
            # when it is reused, which happens in the current() call below.
            self.coarse.current(self._epoch * FINE).merge(self._head)
            self._epoch = epoch
            self._next_roll = (epoch + 1) * FINE
            self._head = self.fine.current(now)
        return self._head

    def record(self, x: Exchange) -> None:
        """A finished request (``cost_nano`` set), at its end."""
        self._roll(x.end).record_many((x,))

    def record_many(self, batch: list[Exchange]) -> None:
        """Finished requests in the order they ended; split where a slot ends."""
        if batch[-1].end < self._next_roll:
            self._head.record_many(batch)  # all in the open slot: nearly always
            return
        for x in batch:
            self.record(x)

    def flush(self) -> None:
        """Record what is queued."""
        queued = self.queued
        if queued:
            self.record_many(queued)
            queued.clear()

    def absorb(self, error_class: str, now: float) -> None:
        self._roll(now).absorb(error_class)

    def window(self, name: str, now: float) -> tuple[SeriesStats, float]:
        """The aggregate for a named window (a new object) and the seconds it covers."""
        head = self._roll(now)
        seconds = WINDOWS[name]
        if seconds is None:
            span = self.fine.cumulative_span(now)
            return self.fine.cumulative(), span
        if seconds <= self.fine.horizon:
            return self.fine.window(now, seconds), self.fine.window_span(now, seconds)
        out = self.coarse.window(now, seconds)
        out.merge(head)  # the open fine slot has not been rolled up yet
        return out, self.coarse.window_span(now, seconds)


Track = tuple[str, str, str]  # route, variant, upstream


class Registry:
    """Every series of one process. ``now`` is a monotonic clock, passed in.

    Live traffic is recorded once per request, in the series of its *track*: the
    route, the variant and the upstream that answered. The per-variant and
    per-upstream numbers are merges of tracks, made when exported (merging is exact),
    so a request costs one set of sketch inserts instead of two.

    Finished requests are recorded in batches (``record``): queued in their track as
    they end, recorded ``BATCH`` at a time, and before every export, so views are
    always whole. Queued per track, so that nothing regroups them by track when they
    are recorded. Folded one by one between requests, the sketch inserts ran ~3x
    slower than in a loop (bench/stack), the other work of a request having evicted
    their code and data from the CPU caches in between.
    """

    def __init__(self) -> None:
        self.tracks: dict[Track, Series] = {}
        # Shadow calls, never in the tracks: their numbers must not mix with live ones.
        self.shadows: dict[tuple[str, str], Series] = {}
        self.tallies: dict[tuple[str, str], Tally] = {}  # mirroring and agreement, cumulative

    def track(self, route: str, variant: str, upstream: str, now: float) -> Series:
        key = (route, variant, upstream)
        series = self.tracks.get(key)
        if series is None:
            series = self.tracks[key] = Series(now)
        return series

    def record(self, x: Exchange) -> None:
        """Record a finished request, which must not change after, into its track
        (``x.track``, set by ``Observer.begin``), with its ``cost_nano`` set."""
        track = x.track
        assert track is not None
        queued = track.queued
        queued.append(x)
        if len(queued) >= BATCH:
            track.flush()

    def fold(self) -> None:
        """Record what is queued, each track's requests in the order they finished."""
        for series in self.tracks.values():
            series.flush()

    def shadow_series(self, route: str, shadow: str, now: float) -> Series:
        key = (route, shadow)
        series = self.shadows.get(key)
        if series is None:
            series = self.shadows[key] = Series(now)
        return series

    def tally(self, route: str, shadow: str) -> Tally:
        key = (route, shadow)
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = Tally()
        return tally

    def export(self, window: str, now: float) -> dict[str, Any]:
        """This process's numbers for one window, to merge with other processes'."""
        self.fold()
        variants: dict[tuple[str, str], tuple[SeriesStats, float, int]] = {}
        upstreams: dict[str, tuple[SeriesStats, float, int]] = {}
        for (route, variant, upstream), series in self.tracks.items():
            stats, span = series.window(window, now)
            _add(upstreams, upstream, stats, span, series.in_flight)
            _add(variants, (route, variant), stats, span, series.in_flight)
        for stats, _, _ in upstreams.values():
            stats.fold_absorbed()
        return {
            "window": window,
            "variants": [
                {"route": r, "variant": v, **_exported(*item)} for (r, v), item in variants.items()
            ],
            "upstreams": [{"upstream": u, **_exported(*item)} for u, item in upstreams.items()],
            # Tallies are cumulative whatever the window.
            "shadows": [
                {
                    "route": r,
                    "shadow": name,
                    **_export(self.shadow_series(r, name, now), window, now),
                    "tally": self.tally(r, name).to_dict(),
                }
                for r, name in self.shadows.keys() | self.tallies.keys()
            ],
        }


def _add(
    table: dict[Any, tuple[SeriesStats, float, int]],
    key: Any,
    stats: SeriesStats,
    span: float,
    in_flight: int,
) -> None:
    have = table.get(key)
    if have is None:
        own = SeriesStats()  # ``stats`` goes into two tables: each merges into its own
        own.merge(stats)
        table[key] = (own, span, in_flight)
        return
    have[0].merge(stats)
    # Lanes of one series cover the same stretch of time: the span is the longest.
    table[key] = (have[0], max(have[1], span), have[2] + in_flight)


def _exported(stats: SeriesStats, span: float, in_flight: int) -> dict[str, Any]:
    return {"stats": stats.to_dict(), "span": span, "in_flight": in_flight}


def _export(series: Series, window: str, now: float) -> dict[str, Any]:
    stats, span = series.window(window, now)
    return _exported(stats, span, series.in_flight)


class Merged:
    """Exports from several processes (or hosts) merged into one set of series."""

    def __init__(self) -> None:
        self.variants: dict[tuple[str, str], tuple[SeriesStats, float, int]] = {}
        self.upstreams: dict[str, tuple[SeriesStats, float, int]] = {}
        self.sources = 0
        self.request_log = {"written": 0, "dropped": 0}
        self.health: dict[str, list[dict[str, Any]]] = {}  # upstream -> one view per process
        self.shadows: dict[tuple[str, str], tuple[SeriesStats, float, int]] = {}
        self.tallies: dict[tuple[str, str], Tally] = {}

    def add(self, export: Mapping[str, Any]) -> None:
        self.sources += 1
        log = export.get("request_log") or {}
        for name in self.request_log:
            self.request_log[name] += int(log.get(name, 0))
        for item in export["variants"]:
            _merge_into(self.variants, (item["route"], item["variant"]), item)
        for item in export["upstreams"]:
            _merge_into(self.upstreams, item["upstream"], item)
        for name, view in (export.get("upstream_health") or {}).items():
            self.health.setdefault(name, []).append(view)
        for item in export.get("shadows") or ():
            key = (item["route"], item["shadow"])
            _merge_into(self.shadows, key, item)
            tally = Tally.from_dict(item.get("tally") or {})
            have = self.tallies.get(key)
            if have is None:
                self.tallies[key] = tally
            else:
                have.merge(tally)

    def variant_views(self) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
        for key, (stats, span, in_flight) in self.variants.items():
            yield key, stats.view(span, in_flight)

    def upstream_views(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, (stats, span, in_flight) in self.upstreams.items():
            yield key, stats.view(span, in_flight)

    def shadow_views(self) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
        for key, (stats, span, in_flight) in self.shadows.items():
            yield key, stats.view(span, in_flight)


def _merge_into(table: dict[Any, tuple[SeriesStats, float, int]], key: Any, item: Any) -> None:
    stats = SeriesStats.from_dict(item["stats"])
    have = table.get(key)
    if have is None:
        table[key] = (stats, float(item["span"]), int(item["in_flight"]))
        return
    have[0].merge(stats)
    # Processes cover the same stretch of wall time: the span is the longest, not a sum.
    table[key] = (have[0], max(have[1], float(item["span"])), have[2] + int(item["in_flight"]))
