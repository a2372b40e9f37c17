"""Every error turnout raises on purpose, in one tree.

    TurnoutError                      base of everything below
    ├── ConfigError                   a config was refused; carries every (field path, reason)
    ├── RouteLocked                   the store refused a lock held by someone else
    └── GatewayError                  a request failed; rendered as an OpenAI-style JSON error
        ├── InvalidRequest      400   malformed JSON, wrong types, unknown forced variant
        ├── NotFound            404   no such path
        ├── NoRouteMatched      404   no route matches and the config has no catch-all route
        ├── MethodNotAllowed    405   a known path with the wrong method
        ├── Conflict            409   a change to a locked route
        ├── PayloadTooLarge     413   body over ``gateway.max_body_bytes``
        ├── HeadersTooLarge     431   request line and headers over 64 KiB
        ├── UpstreamFailed      502   refused connection, reset, garbage answer
        └── UpstreamTimeout     504   an upstream timeout elapsed

Gateway errors know their HTTP status, OpenAI ``type`` and ``code`` so that the
server turns any of them into a response in one place (``gateway.errors``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class TurnoutError(Exception):
    """Base class for errors raised by turnout."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One reason a config was refused: where (``routes[0].variants[1].weight``) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(TurnoutError):
    """A config was refused. ``errors`` lists every problem found, not only the first."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors: tuple[FieldError, ...] = tuple(errors)
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(f"invalid config ({len(self.errors)} error(s)):\n{lines}")

    @classmethod
    def single(cls, path: str, message: str) -> ConfigError:
        return cls([FieldError(path, message)])


class RouteLocked(TurnoutError):
    """``ConfigStore.lock`` found the route locked by someone else."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        super().__init__(f"route {lock.route!r} is locked by {lock.actor!r}: {lock.reason}")


class GatewayError(TurnoutError):
    """A request-level failure with its HTTP status and OpenAI error ``type``/``code``."""

    status: int = 500
    type: str = "api_error"
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class NoRouteMatched(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "no_route"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class HeadersTooLarge(GatewayError):
    status = 431
    type = "invalid_request_error"
    code = "headers_too_large"


class UpstreamFailed(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "upstream_error"
    code = "upstream_timeout"
