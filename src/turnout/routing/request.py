"""What the routing engine sees of a request, and how attribute references read it.

``RequestView`` is built by the gateway from the parsed request; everything here is
pure so that routing can be tested and benchmarked without a server. Query string
and cookies are parsed only when a config refers to them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from turnout.config.attributes import AttrRef

_UNSET: Any = object()


class RequestView:
    """The attributes of one request. ``headers`` must answer ``get(lowercase_name)``."""

    __slots__ = ("_cookies", "_query", "body", "headers", "path", "query_string")

    def __init__(
        self,
        path: str,
        headers: Mapping[str, str],
        body: Mapping[str, Any],
        query_string: str = "",
    ) -> None:
        self.path = path
        self.headers = headers
        self.body = body
        self.query_string = query_string
        self._query: dict[str, str] = _UNSET
        self._cookies: dict[str, str] = _UNSET

    @property
    def query(self) -> dict[str, str]:
        if self._query is _UNSET:
            # First value wins for repeated parameters, as most frameworks do.
            q: dict[str, str] = {}
            for k, v in parse_qsl(self.query_string, keep_blank_values=True):
                q.setdefault(k, v)
            self._query = q
        return self._query

    @property
    def cookies(self) -> dict[str, str]:
        if self._cookies is _UNSET:
            self._cookies = parse_cookie_header(self.headers.get("cookie", ""))
        return self._cookies


def parse_cookie_header(header: str) -> dict[str, str]:
    """Lenient: one malformed pair is skipped, never the whole header; first value wins.

    (http.cookies.SimpleCookie drops every cookie when one pair is malformed, which
    would silently turn cookie stickiness into random assignment.)
    """
    cookies: dict[str, str] = {}
    for pair in header.split(";"):
        name, sep, value = pair.partition("=")
        name = name.strip()
        if sep and name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            cookies.setdefault(name, value)
    return cookies


Getter = Callable[[RequestView], Any]


def getter(ref: AttrRef) -> Getter:
    """Compile a reference into a function returning the raw value, or None if absent."""
    name = ref.name
    if ref.source == "header":
        return lambda v: v.headers.get(name)
    if ref.source == "query":
        return lambda v: v.query.get(name)
    if ref.source == "cookie":
        return lambda v: v.cookies.get(name)
    if ref.source == "path":
        return lambda v: v.path
    keys = ref.path
    if len(keys) == 1:
        return lambda v: v.body.get(name)

    def walk(v: RequestView) -> Any:
        node: Any = v.body
        for k in keys:
            if not isinstance(node, Mapping):
                return None
            node = node.get(k)
        return node

    return walk


def as_text(value: Any) -> str | None:
    """The text form used for comparisons, keys and templates.

    Strings stay as they are, booleans become ``true``/``false`` and numbers their
    JSON spelling, so ``body:user`` = 42 and header ``x-user-id: 42`` hash alike.
    Objects, arrays and null have no text form.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return None
