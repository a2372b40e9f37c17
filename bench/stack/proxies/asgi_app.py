"""A bare ASGI app (no framework) + aiohttp client; served by granian or uvicorn."""

from __future__ import annotations

import common as c

_session = None


def session():
    global _session
    if _session is None:  # created lazily, inside the server's running loop
        _session = c.aiohttp_session()
    return _session


async def lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _session is not None:
                await _session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    stream = c.wants_stream(body)
    variant = c.variant_for(headers.get("x-user-id", ""))
    async with session().post(
        c.UPSTREAM[variant] + c.PATH, data=body, headers=c.forward_headers(headers.get)
    ) as up:
        out = [
            (b"content-type", up.headers.get("content-type", "application/json").encode()),
            (b"x-variant", variant.encode()),
        ]
        if not stream:
            data = await up.read()
            out.append((b"content-length", str(len(data)).encode()))
            await send({"type": "http.response.start", "status": up.status, "headers": out})
            await send({"type": "http.response.body", "body": data})
            return
        await send({"type": "http.response.start", "status": up.status, "headers": out})
        async for chunk in up.content.iter_any():  # relay chunk by chunk
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
