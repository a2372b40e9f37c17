"""The seam between the pipeline and the network: calling an upstream.

``Transport`` is what the pipeline needs; ``AiohttpTransport`` is the real one, a
single pooled keep-alive client shared by every request of a process. Network
failures come out as ``UpstreamFailed``/``UpstreamTimeout``, never as aiohttp
exceptions, so the pipeline does not depend on the client library.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

import aiohttp

from turnout.exceptions import UpstreamFailed, UpstreamTimeout
from turnout.snapshot import UpstreamTarget


class UpstreamResponse(Protocol):
    status: int
    content_type: str

    async def read(self) -> bytes: ...
    def chunks(self) -> AsyncIterator[bytes]: ...
    def close(self) -> None: ...


class Transport(Protocol):
    async def send(self, target: UpstreamTarget, endpoint: str, body: bytes) -> UpstreamResponse:
        """POST ``body`` to the target's endpoint; returns once the headers arrived."""
        ...

    async def close(self) -> None: ...


def _translate(exc: BaseException, target: UpstreamTarget) -> UpstreamFailed | UpstreamTimeout:
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"upstream {target.name!r} timed out")
    return UpstreamFailed(f"upstream {target.name!r} failed: {type(exc).__name__}: {exc}")


class _AiohttpResponse:
    __slots__ = ("_resp", "_target", "content_type", "status")

    def __init__(self, resp: aiohttp.ClientResponse, target: UpstreamTarget) -> None:
        self._resp = resp
        self._target = target
        self.status = resp.status
        self.content_type = resp.content_type

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc, self._target) from None
        finally:
            self._resp.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc, self._target) from None

    def close(self) -> None:
        # Closing (not releasing) drops the connection, so an upstream still
        # generating a stream the client abandoned stops being read and paid for.
        self._resp.close()


class AiohttpTransport:
    def __init__(self, max_connections: int = 1024) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._max_connections = max_connections
        self._timeouts: dict[tuple[float, float, float], aiohttp.ClientTimeout] = {}

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily: a session must be made inside the running event loop.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=30, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector, skip_auto_headers=("User-Agent",), auto_decompress=True
            )
        return self._session

    def _timeout(self, t: UpstreamTarget) -> aiohttp.ClientTimeout:
        key = (t.total_timeout, t.connect_timeout, t.idle_timeout)
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=key[0], sock_connect=key[1], sock_read=key[2])
            self._timeouts[key] = timeout
        return timeout

    async def send(self, target: UpstreamTarget, endpoint: str, body: bytes) -> UpstreamResponse:
        try:
            async with asyncio.timeout(target.first_byte_timeout):
                resp = await self._client().post(
                    target.urls[endpoint],
                    data=body,
                    headers=target.headers,
                    timeout=self._timeout(target),
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _translate(exc, target) from None
        return _AiohttpResponse(resp, target)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
