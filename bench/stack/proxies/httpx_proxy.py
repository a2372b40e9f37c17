"""aiohttp server (uvloop) + httpx client: isolates the cost of the httpx client."""

from __future__ import annotations

import httpx
from aiohttp import web

import common as c


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    stream = c.wants_stream(body)
    variant = c.variant_for(request.headers.get("x-user-id", ""))
    client: httpx.AsyncClient = request.app["client"]
    req = client.build_request(
        "POST", c.UPSTREAM[variant] + c.PATH, content=body,
        headers=c.forward_headers(request.headers.get),
    )
    up = await client.send(req, stream=True)
    try:
        headers = {
            "content-type": up.headers.get("content-type", "application/json"),
            "x-variant": variant,
        }
        if not stream:
            return web.Response(status=up.status_code, body=await up.aread(), headers=headers)
        resp = web.StreamResponse(status=up.status_code, headers=headers)
        await resp.prepare(request)
        async for chunk in up.aiter_raw():  # relay chunk by chunk
            await resp.write(chunk)
        await resp.write_eof()
        return resp
    finally:
        await up.aclose()


async def client_ctx(app: web.Application):
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256, keepalive_expiry=60)
    app["client"] = httpx.AsyncClient(limits=limits, timeout=30)
    yield
    await app["client"].aclose()


def main() -> None:
    app = web.Application()
    app.cleanup_ctx.append(client_ctx)
    app.router.add_post(c.PATH, chat)
    web.run_app(app, host=c.HOST, port=c.PORT, access_log=None, print=None, loop=c.new_loop(True))


if __name__ == "__main__":
    main()
