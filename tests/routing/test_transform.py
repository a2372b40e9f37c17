"""``apply_variant``: model and params overrides, system prompt modes and templates."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from multidict import CIMultiDict

from turnout.config import config_from_mapping
from turnout.routing import RequestView, Router, apply_variant

UPSTREAMS = [{"name": "up", "base_url": "http://upstream.test/v1"}]


def run(
    variant: dict[str, Any],
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    query: str = "",
    route_name: str = "chat",
) -> dict[str, Any]:
    """Route a request to a single-variant route and apply that variant to ``body``."""
    cfg = config_from_mapping(
        {
            "upstreams": UPSTREAMS,
            "routes": [
                {"name": route_name, "variants": [{"name": "v", "upstream": "up", **variant}]}
            ],
        }
    )
    view = RequestView("/v1/chat/completions", CIMultiDict(headers or {}), body, query)
    decision = Router(cfg).decide(view)
    out = apply_variant(decision, body, view)
    assert out is body  # in place
    return out


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "client-model", "messages": list(messages), **extra}


USER = {"role": "user", "content": "hi"}


def prompt(template: str, mode: str = "replace") -> dict[str, Any]:
    return {"system_prompt": {"mode": mode, "template": template}}


# --- model and params ----------------------------------------------------------------------------


def test_no_overrides_leave_the_body_alone() -> None:
    body = chat(USER, temperature=0.2)
    before = copy.deepcopy(body)
    assert run({}, body) == before


def test_model_override() -> None:
    assert run({"model": "gpt-x"}, chat(USER))["model"] == "gpt-x"
    # Also when the client sent none.
    assert run({"model": "gpt-x"}, {"messages": [USER]})["model"] == "gpt-x"
    # No override: the client's model stays.
    assert run({}, chat(USER))["model"] == "client-model"


def test_params_override_replaces_existing_keys_and_keeps_others() -> None:
    body = chat(USER, temperature=0.9, top_p=0.5, user="u1")
    out = run({"params": {"temperature": 0.1, "max_tokens": 64, "seed": None}}, body)
    assert out["temperature"] == 0.1
    assert out["max_tokens"] == 64
    assert out["seed"] is None
    assert out["top_p"] == 0.5
    assert out["user"] == "u1"
    assert out["messages"] == [USER]
    assert out["model"] == "client-model"


def test_params_nested_values_are_set_whole() -> None:
    body = chat(USER, response_format={"type": "text", "extra": 1})
    out = run({"params": {"response_format": {"type": "json_object"}}}, body)
    assert out["response_format"] == {"type": "json_object"}


# --- system prompt modes -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["replace", "prepend", "append"])
def test_system_prompt_inserted_when_there_is_none(mode: str) -> None:
    out = run(prompt("Be brief.", mode), chat(USER))
    assert out["messages"] == [{"role": "system", "content": "Be brief."}, USER]


@pytest.mark.parametrize("mode", ["replace", "prepend", "append"])
def test_system_prompt_inserted_into_empty_messages(mode: str) -> None:
    out = run(prompt("Be brief.", mode), chat())
    assert out["messages"] == [{"role": "system", "content": "Be brief."}]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("replace", "Be brief."),
        ("prepend", "Be brief.\n\nYou are helpful."),
        ("append", "You are helpful.\n\nBe brief."),
    ],
)
@pytest.mark.parametrize("role", ["system", "developer"])
def test_system_prompt_modes_with_an_existing_system_message(
    mode: str, expected: str, role: str
) -> None:
    body = chat({"role": role, "content": "You are helpful."}, USER)
    out = run(prompt("Be brief.", mode), body)
    assert out["messages"] == [{"role": role, "content": expected}, USER]


@pytest.mark.parametrize("mode", ["prepend", "append"])
def test_prepend_append_to_an_empty_system_message(mode: str) -> None:
    out = run(prompt("Be brief.", mode), chat({"role": "system", "content": ""}, USER))
    assert out["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("replace", "Be brief."),
        ("prepend", [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Hi."}]),
        ("append", [{"type": "text", "text": "Hi."}, {"type": "text", "text": "Be brief."}]),
    ],
)
def test_structured_system_content_keeps_the_clients_parts(mode: str, expected: object) -> None:
    structured = [{"type": "text", "text": "Hi."}]
    body = chat({"role": "system", "content": structured}, USER)
    out = run(prompt("Be brief.", mode), body)
    assert out["messages"] == [{"role": "system", "content": expected}, USER]


def test_a_later_system_message_is_the_system_prompt() -> None:
    body = chat(USER, {"role": "system", "content": "late"})
    out = run(prompt("Be brief.", "append"), body)
    assert out["messages"] == [USER, {"role": "system", "content": "late\n\nBe brief."}]


def test_other_message_fields_are_kept() -> None:
    body = chat({"role": "system", "content": "a", "name": "sys"}, USER)
    out = run(prompt("b", "append"), body)
    assert out["messages"][0] == {"role": "system", "content": "a\n\nb", "name": "sys"}


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "prompt": "Once upon a time"},
        {"model": "m", "input": ["embed me"]},
        {"model": "m", "messages": "not a list"},
        {"model": "m", "messages": None},
        {"model": "m", "messages": {"role": "user"}},
    ],
)
def test_non_chat_bodies_are_untouched_by_the_prompt(body: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    out = run({"params": {"temperature": 0}, **prompt("Be brief.")}, body)
    assert out == {**before, "temperature": 0}


# --- templates -----------------------------------------------------------------------------------


def test_template_renders_attributes_and_names() -> None:
    template = (
        "tenant={{header:X-Tenant}} user={{body:user}} n={{ body:metadata.n }} "
        "flag={{body:metadata.flag}} lang={{query:lang}} cookie={{cookie:c}} path={{path}} "
        "route={{route}} variant={{variant}} model={{model}}"
    )
    body = chat(USER, user="u-7", metadata={"n": 42, "flag": True})
    out = run(
        {"model": "gpt-x", **prompt(template)},
        body,
        headers={"x-tenant": "acme", "cookie": "c=choc"},
        query="lang=fr",
        route_name="support",
    )
    assert out["messages"][0]["content"] == (
        "tenant=acme user=u-7 n=42 flag=true lang=fr cookie=choc path=/v1/chat/completions "
        "route=support variant=v model=gpt-x"
    )


def test_template_model_is_the_clients_without_override() -> None:
    out = run(prompt("{{model}}"), chat(USER))
    assert out["messages"][0]["content"] == "client-model"


def test_missing_attributes_render_empty() -> None:
    template = "[{{header:x-missing}}|{{body:nope.deeper}}|{{query:q}}|{{cookie:c}}|{{body:obj}}]"
    out = run(prompt(template), chat(USER, obj={"a": 1}))
    assert out["messages"][0]["content"] == "[||||]"


def test_missing_model_renders_empty() -> None:
    out = run(prompt("model=[{{model}}]"), {"messages": [USER]})
    assert out["messages"][0]["content"] == "model=[]"


def test_null_model_renders_empty() -> None:
    out = run(prompt("model=[{{model}}]"), {"model": None, "messages": [USER]})
    assert out["messages"][0]["content"] == "model=[]"


def test_template_literal_braces_and_text_are_kept() -> None:
    out = run(prompt("{ {x} } {{variant}}}"), chat(USER))
    assert out["messages"][0]["content"] == "{ {x} } v}"


def test_prepend_template_with_attributes() -> None:
    body = chat({"role": "developer", "content": "Base."}, USER)
    out = run(prompt("Tenant {{header:x-tenant}}.", "prepend"), body, {"x-tenant": "acme"})
    assert out["messages"][0] == {"role": "developer", "content": "Tenant acme.\n\nBase."}
