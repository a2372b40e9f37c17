"""The official openai client against the gateway, with only base_url changed."""

from __future__ import annotations

from tests.gateway.conftest import Running

from turnout.simulator import RunningSimulator

MESSAGES = [{"role": "user", "content": "hello there"}]


async def test_chat_completion_through_openai_client(gw: Running) -> None:
    client = gw.openai()
    raw = await client.chat.completions.with_raw_response.create(
        model="anything", messages=MESSAGES, user="alice"
    )
    completion = raw.parse()
    variant = raw.headers["x-turnout-variant"]
    assert raw.headers["x-turnout-route"] == "main"
    assert raw.headers["x-turnout-upstream"] == "sim"
    assert len(raw.headers["x-turnout-request-id"]) >= 16
    assert completion.model == f"m-{variant}"
    assert completion.choices[0].message.content.startswith(f"{variant} answer to hello there")
    assert completion.usage is not None and completion.usage.completion_tokens == 20


async def test_streaming_through_openai_client(gw: Running, sim: RunningSimulator) -> None:
    client = gw.openai()
    raw = await client.chat.completions.with_raw_response.create(
        model="anything", messages=MESSAGES, stream=True, extra_headers={"x-user-id": "bob"}
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    variant = raw.headers["x-turnout-variant"]
    pieces = []
    chunks = 0
    async for chunk in raw.parse():
        chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    text = "".join(pieces)
    assert chunks > 5  # passed through chunk by chunk, not one blob
    assert text.startswith(f"{variant} answer to hello there")
    assert len(text.split()) == 20
    assert sim.received[-1].body["stream"] is True


async def test_request_ids_are_unique(gw: Running) -> None:
    client = gw.openai()
    ids = set()
    for _ in range(20):
        raw = await client.chat.completions.with_raw_response.create(model="x", messages=MESSAGES)
        ids.add(raw.headers["x-turnout-request-id"])
    assert len(ids) == 20


async def test_completions_embeddings_and_models(gw: Running) -> None:
    client = gw.openai()
    done = await client.completions.create(model="x", prompt="say hi", user="carol")
    assert done.choices[0].text
    emb = await client.embeddings.create(model="x", input=["a", "b"], user="carol")
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0
    models = await client.models.list()
    assert sorted(m.id for m in models.data) == ["m-canary", "m-stable"]


async def test_completions_stream(gw: Running) -> None:
    client = gw.openai()
    stream = await client.completions.create(model="x", prompt="hi", stream=True)
    texts = [c.choices[0].text async for c in stream if c.choices]
    assert "".join(texts).strip()
