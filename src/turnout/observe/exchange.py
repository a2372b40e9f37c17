"""What one request did: filled in by the pipeline as it goes, read by the observers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from turnout.exceptions import GatewayError, UpstreamFailed, UpstreamTimeout
from turnout.store.entry import EntryValues

if TYPE_CHECKING:
    from turnout.observe.metrics import Series

# Error classes, in the order every view lists them.
CLIENT_4XX = "client_4xx"  # the client's request was refused (by turnout or the upstream)
RATE_LIMITED = "rate_limited"  # the upstream answered 429
UPSTREAM_5XX = "upstream_5xx"
TIMEOUT = "timeout"
CONNECTION = "connection"  # refused, reset, DNS
UPSTREAM_ERROR = "upstream_error"  # an error inside a 200: garbage body, error event in a stream
ERROR_CLASSES: tuple[str, ...] = (
    CLIENT_4XX,
    RATE_LIMITED,
    UPSTREAM_5XX,
    TIMEOUT,
    CONNECTION,
    UPSTREAM_ERROR,
)
ERROR_INDEX = {name: i for i, name in enumerate(ERROR_CLASSES)}


def error_class_of(exc: GatewayError) -> str:
    """The class a refused or failed request counts under."""
    if isinstance(exc, UpstreamTimeout):
        return TIMEOUT
    if isinstance(exc, UpstreamFailed):
        return CONNECTION if exc.code == "upstream_unavailable" else UPSTREAM_ERROR
    return error_class_of_status(exc.status) or CLIENT_4XX


def error_class_of_status(status: int) -> str | None:
    if status < 400:
        return None
    if status == 429:
        return RATE_LIMITED
    return CLIENT_4XX if status < 500 else UPSTREAM_5XX


@dataclass(slots=True)
class Exchange:
    """One request through the gateway. Times are ``perf_counter`` seconds."""

    request_id: str
    wall_start: float  # unix time, for the request log
    start: float
    route: str | None = None
    variant: str | None = None
    upstream: str | None = None
    model: str | None = None  # as sent upstream, for prices
    key: str | None = None  # raw stickiness key; only its keyed hash is ever stored
    stream: bool = False
    operation: str = ""  # the endpoint: chat/completions, completions, embeddings
    status: int = 0
    error_class: str | None = None
    sent: float | None = None  # request handed to the upstream
    first_chunk: float | None = None  # first body chunk of a stream
    upstream_done: float | None = None  # last byte from the upstream
    end: float = 0.0
    input_tokens: int | None = None
    output_tokens: int | None = None
    attempts: int = 0  # calls to upstreams: 1 + retries + fallbacks
    retries: int = 0  # calls repeated on the same upstream
    fallbacks: int = 0  # moves to the next upstream of the variant's chain
    request_body: bytes | None = None  # only when body sampling picked this request
    response_body: bytes | None = None
    kept: list[bytes] | None = None  # the live answer's bytes, kept when a shadow compares
    client_gone: bool = False  # the client left before the end of the response
    track: Series | None = None  # the metrics series it is counted in (Observer.begin)
    cost_nano: int = 0  # set when it finishes
    redact_spec: str | None = None  # the route's redaction hook, when bodies were sampled

    def log_values(self) -> EntryValues:
        """Its request log entry, in the wire form (``store.entry.EntryValues``). Called
        when the log seals a batch, after the request finished: nothing changes it then."""
        start, first, cost = self.start, self.first_chunk, self.cost_nano
        return (
            self.request_id, self.wall_start, self.route, self.variant, self.upstream,
            self.status, self.error_class, (self.end - start) * 1000.0,
            None if first is None else (first - start) * 1000.0,
            self.input_tokens, self.output_tokens, cost / 1e9 if cost else None,
            self.key, self.stream, self.attempts or 1,
            self.request_body, self.response_body, self.redact_spec,
        )  # fmt: skip

    @property
    def total(self) -> float:
        return self.end - self.start

    @property
    def upstream_time(self) -> float | None:
        if self.sent is None or self.upstream_done is None:
            return None
        return self.upstream_done - self.sent

    @property
    def ttft(self) -> float | None:
        return None if self.first_chunk is None else self.first_chunk - self.start
