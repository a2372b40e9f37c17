"""aiohttp server + aiohttp client. `--uvloop` runs it on uvloop, else asyncio."""

from __future__ import annotations

import sys

from aiohttp import web

import common as c


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    stream = c.wants_stream(body)
    variant = c.variant_for(request.headers.get("x-user-id", ""))
    session = request.app["session"]
    async with session.post(
        c.UPSTREAM[variant] + c.PATH, data=body, headers=c.forward_headers(request.headers.get)
    ) as up:
        headers = {
            "content-type": up.headers.get("content-type", "application/json"),
            "x-variant": variant,
        }
        if not stream:
            return web.Response(status=up.status, body=await up.read(), headers=headers)
        resp = web.StreamResponse(status=up.status, headers=headers)
        await resp.prepare(request)
        async for chunk in up.content.iter_any():  # relay chunk by chunk
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def client_ctx(app: web.Application):
    app["session"] = c.aiohttp_session()
    yield
    await app["session"].close()


def main() -> None:
    app = web.Application()
    app.cleanup_ctx.append(client_ctx)
    app.router.add_post(c.PATH, chat)
    loop = c.new_loop("--uvloop" in sys.argv)
    web.run_app(app, host=c.HOST, port=c.PORT, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
