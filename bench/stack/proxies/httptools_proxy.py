"""Hand-written asyncio Protocol HTTP/1.1 server on httptools (uvloop) + aiohttp client.

Keep-alive and pipelining (responses kept in order) are handled; nothing else
(no Expect: 100-continue, no write back-pressure): a floor for Python servers.
"""

from __future__ import annotations

import asyncio

import httptools

import common as c

REASONS = {200: b"OK", 400: b"Bad Request", 502: b"Bad Gateway"}


class Proxy(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.last: asyncio.Task | None = None  # previous response on this connection

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            self.transport.close()

    def on_message_begin(self) -> None:
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        keep = self.parser.should_keep_alive()
        self.last = asyncio.ensure_future(
            self.handle(self.headers, b"".join(self.body), keep, self.last)
        )

    async def handle(self, headers: dict, body: bytes, keep: bool, prev) -> None:
        try:
            await self.relay(headers, body, prev)
        except Exception:  # upstream failed or bad JSON: answer 502, drop the connection
            self.transport.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            keep = False
        if not keep:
            self.transport.close()

    async def relay(self, headers: dict, body: bytes, prev) -> None:
        stream = c.wants_stream(body)
        variant = c.variant_for(headers.get("x-user-id", ""))
        async with SESSION.post(
            c.UPSTREAM[variant] + c.PATH, data=body, headers=c.forward_headers(headers.get)
        ) as up:
            data = b"" if stream else await up.read()
            if prev is not None:
                await prev  # keep responses in request order
            t = self.transport
            head = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\nx-variant: %s\r\n" % (
                up.status, REASONS.get(up.status, b"X"),
                up.headers.get("content-type", "application/json").encode(), variant.encode(),
            )
            if not stream:
                t.write(head + b"content-length: %d\r\n\r\n" % len(data) + data)
            else:
                t.write(head + b"transfer-encoding: chunked\r\n\r\n")
                async for chunk in up.content.iter_any():  # relay chunk by chunk
                    t.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                t.write(b"0\r\n\r\n")


async def main() -> None:
    global SESSION
    SESSION = c.aiohttp_session()
    server = await asyncio.get_running_loop().create_server(Proxy, c.HOST, c.PORT, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    loop = c.new_loop(True)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main())
    except KeyboardInterrupt:
        pass
