"""A variant's overrides applied to a request body: model, parameters, system prompt."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any

from turnout.config.attributes import AttrRef, Template
from turnout.routing.request import RequestView, as_text, getter

if TYPE_CHECKING:
    from turnout.routing.router import CompiledVariant, Decision

# A compiled template part: literal text, or a function of (request, names) giving text.
Part = str | Callable[[RequestView, dict[str, str]], str]


def _placeholder(part: AttrRef | tuple[str]) -> Callable[[RequestView, dict[str, str]], str]:
    if isinstance(part, AttrRef):
        get = getter(part)
        return lambda view, names: as_text(get(view)) or ""
    name = part[0]
    return lambda view, names: names.get(name, "")


def compile_template(template: Template) -> tuple[Part, ...]:
    """Resolve placeholders to getters once per config, not once per request."""
    return tuple(p if isinstance(p, str) else _placeholder(p) for p in template.parts)


def render(parts: tuple[Part, ...], view: RequestView, names: dict[str, str]) -> str:
    return "".join(p if isinstance(p, str) else p(view, names) for p in parts)


def _apply_system_prompt(messages: list[Any], mode: str, text: str) -> None:
    # The first system (or, for newer models, developer) message is the system prompt,
    # wherever it stands; without one, a system message is put first.
    target = next(
        (m for m in messages if isinstance(m, dict) and m.get("role") in ("system", "developer")),
        None,
    )
    if target is None:
        messages.insert(0, {"role": "system", "content": text})
        return
    current = target.get("content")
    if mode == "replace" or not current:
        target["content"] = text
    elif isinstance(current, str):
        target["content"] = f"{text}\n\n{current}" if mode == "prepend" else f"{current}\n\n{text}"
    elif isinstance(current, list):
        # Structured content: add a text part, keep the client's parts as they are.
        part = {"type": "text", "text": text}
        target["content"] = [part, *current] if mode == "prepend" else [*current, part]
    else:
        target["content"] = text


def apply_variant(decision: Decision, body: dict[str, Any], view: RequestView) -> dict[str, Any]:
    """Apply overrides to ``body`` in place (the gateway owns the parsed body) and return it."""
    return apply_bundle(decision.variant, decision.route.name, body, view)


def apply_bundle(
    variant: CompiledVariant, route: str, body: dict[str, Any], view: RequestView
) -> dict[str, Any]:
    """A variant's (or a shadow's) model, params and system prompt, set in ``body``."""
    if variant.model is not None:
        body["model"] = variant.model
    if variant.params:
        body.update(variant.params)
    if variant.prompt is not None and variant.prompt_mode is not None:
        messages = body.get("messages")
        if isinstance(messages, list):
            names = {
                "route": route,
                "variant": variant.name,
                "model": as_text(body.get("model")) or "",
            }
            _apply_system_prompt(messages, variant.prompt_mode, render(variant.prompt, view, names))
    return body


class Usage(Enum):
    """Who asked the upstream for a stream's usage; it decides what the gateway's
    stream tap does with the stream (``gateway.sse``)."""

    NOT_ASKED = "not_asked"  # none will come: the events are counted instead
    BY_CLIENT = "by_client"  # the client gets the usage event, as it asked
    BY_TURNOUT = "by_turnout"  # recorded, and removed before the client sees it


def stream_usage(body: dict[str, Any], endpoint: str, ask: bool) -> Usage:
    """Who asks for a stream's usage in its final chunk: the client, or turnout when
    ``ask`` (the upstream takes ``stream_options``), which sets it in ``body``."""
    if endpoint == "embeddings":
        return Usage.NOT_ASKED
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return Usage.BY_CLIENT
    if not ask:
        return Usage.NOT_ASKED
    if isinstance(options, dict):
        body["stream_options"] = {**options, "include_usage": True}
    else:
        body["stream_options"] = {"include_usage": True}
    return Usage.BY_TURNOUT
