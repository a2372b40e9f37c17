"""Starlette app + aiohttp client; served by uvicorn (or any ASGI server)."""

from __future__ import annotations

import contextlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

import common as c


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    app.state.session = c.aiohttp_session()
    yield
    await app.state.session.close()


async def chat(request: Request) -> Response:
    body = await request.body()
    stream = c.wants_stream(body)
    variant = c.variant_for(request.headers.get("x-user-id", ""))
    up = await request.app.state.session.post(
        c.UPSTREAM[variant] + c.PATH, data=body, headers=c.forward_headers(request.headers.get)
    )
    headers = {"x-variant": variant}
    media_type = up.headers.get("content-type", "application/json")
    if not stream:
        async with up:
            data = await up.read()
        return Response(data, status_code=up.status, headers=headers, media_type=media_type)

    async def relay():
        async with up:
            async for chunk in up.content.iter_any():  # relay chunk by chunk
                yield chunk

    return StreamingResponse(relay(), status_code=up.status, headers=headers, media_type=media_type)


app = Starlette(routes=[Route(c.PATH, chat, methods=["POST"])], lifespan=lifespan)
