"""The syntax of request attribute references and prompt templates.

An attribute reference names one value of a request, written ``source:name``:

    header:x-user-id      HTTP header (case-insensitive)
    query:uid             URL query parameter
    cookie:session        cookie
    body:user             JSON body field; dots walk into objects: body:metadata.tenant
    path                  the request path, e.g. /v1/chat/completions (no name)

Routes match on them, stickiness keys hash them and prompt templates interpolate
them (``{{header:x-tenant}}``), so the syntax is parsed in one place, here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Source = Literal["header", "query", "cookie", "body", "path"]
_NAMED_SOURCES: frozenset[str] = frozenset({"header", "query", "cookie", "body"})


@dataclass(frozen=True, slots=True)
class AttrRef:
    source: Source
    name: str = ""

    @property
    def path(self) -> tuple[str, ...]:
        """For body references, the keys to walk (``metadata.tenant`` → two keys)."""
        return tuple(self.name.split(".")) if self.source == "body" else (self.name,)

    def __str__(self) -> str:
        return self.source if self.source == "path" else f"{self.source}:{self.name}"


def parse_attr(text: str) -> AttrRef:
    """Parse ``source:name``; raises ValueError with a message fit for a config error."""
    if text == "path":
        return AttrRef("path")
    source, sep, name = text.partition(":")
    if not sep or source not in _NAMED_SOURCES:
        raise ValueError(
            f"{text!r} is not an attribute reference; write header:NAME, query:NAME, "
            "cookie:NAME, body:FIELD[.FIELD...] or path"
        )
    if not name or name != name.strip():
        raise ValueError(f"{text!r} has an empty or padded name after {source}:")
    if source == "body" and any(not part for part in name.split(".")):
        raise ValueError(f"{text!r} has an empty field between dots")
    if source == "header":
        name = name.lower()
    return AttrRef(source, name)  # type: ignore[arg-type]


_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
TEMPLATE_NAMES: frozenset[str] = frozenset({"route", "variant", "model"})


@dataclass(frozen=True, slots=True)
class Template:
    """A template split into literal text and placeholders, parsed once per config.

    ``parts`` alternates: a ``str`` is literal text, an ``AttrRef`` or a bare name
    (``route``, ``variant``, ``model``) wrapped in a one-tuple is a placeholder.
    """

    source: str
    parts: tuple[str | AttrRef | tuple[str], ...]


def parse_template(text: str) -> Template:
    """Parse ``{{header:x-tenant}}``-style placeholders; raises ValueError on a bad one."""
    parts: list[str | AttrRef | tuple[str]] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        inner = m.group(1)
        if inner in TEMPLATE_NAMES:
            parts.append((inner,))
        else:
            try:
                parts.append(parse_attr(inner))
            except ValueError as exc:
                raise ValueError(
                    f"placeholder {{{{{inner}}}}}: {exc}; or use one of {sorted(TEMPLATE_NAMES)}"
                ) from None
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    return Template(text, tuple(parts))
