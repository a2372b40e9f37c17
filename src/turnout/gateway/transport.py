"""The seam between the pipeline and the network: calling an upstream.

``Transport`` is what the pipeline needs; ``AiohttpTransport`` is the real one, a
single pooled keep-alive client shared by every request of a process. Network
failures come out as ``UpstreamFailed``/``UpstreamTimeout``, never as aiohttp
exceptions, so the pipeline does not depend on the client library.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp

from turnout.exceptions import UpstreamFailed, UpstreamTimeout
from turnout.snapshot import UpstreamTarget


class UpstreamResponse(Protocol):
    status: int
    content_type: str
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...
    def chunks(self) -> AsyncIterator[bytes]: ...
    def close(self) -> None: ...

    @property
    def at_end(self) -> bool:
        """True once the whole body has arrived and been taken, so that the chunk
        just taken was the last (False while unknown): its write can end the answer."""
        ...


class Transport(Protocol):
    async def send(
        self, target: UpstreamTarget, endpoint: str, body: bytes, first_byte: float
    ) -> UpstreamResponse:
        """POST ``body`` to the target's endpoint; returns once the headers arrived.
        ``first_byte`` (seconds, at most the target's own limit, less when the
        request's deadline is near) bounds the wait for the headers and, for
        streams, for the first chunk after them."""
        ...

    async def close(self) -> None: ...


def _translate(exc: BaseException, target: UpstreamTarget) -> UpstreamFailed | UpstreamTimeout:
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"upstream {target.name!r} timed out")
    return UpstreamFailed(f"upstream {target.name!r} failed: {type(exc).__name__}: {exc}")


class _AiohttpResponse:
    __slots__ = ("_first_by", "_resp", "_target", "content_type", "headers", "status")

    def __init__(
        self, resp: aiohttp.ClientResponse, target: UpstreamTarget, first_by: float
    ) -> None:
        self._resp = resp
        self._target = target
        self._first_by = first_by  # loop time by which the first chunk must arrive
        self.status = resp.status
        self.content_type = resp.content_type
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        try:
            async with asyncio.timeout(self._target.idle_timeout):
                return await self._resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc, self._target) from None
        finally:
            self._resp.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        # One timeout object re-armed before each read: the idle limit covers the
        # wait on the upstream only, not the time the client takes to accept a chunk.
        # The first chunk is the first token: it is due by the first-byte limit.
        loop = asyncio.get_running_loop()
        idle = self._target.idle_timeout
        reader = self._resp.content.iter_any().__aiter__()
        first = True
        try:
            async with asyncio.timeout(None) as deadline:
                while True:
                    due = loop.time() + idle
                    if first:
                        due, first = min(due, self._first_by), False
                    deadline.reschedule(due)
                    try:
                        chunk = await reader.__anext__()
                    except StopAsyncIteration:
                        return
                    deadline.reschedule(None)
                    yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc, self._target) from None

    @property
    def at_end(self) -> bool:
        return self._resp.content.at_eof()

    def close(self) -> None:
        # Closing (not releasing) drops the connection, so an upstream still
        # generating a stream the client abandoned stops being read and paid for.
        self._resp.close()


class AiohttpTransport:
    def __init__(self, max_connections: int = 1024) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._max_connections = max_connections
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}

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
        key = (t.total_timeout, t.connect_timeout)
        timeout = self._timeouts.get(key)
        if timeout is None:
            # No sock_read: aiohttp would start it when the request is sent, so it would
            # also bound the wait for headers; first_byte and idle are enforced here.
            timeout = aiohttp.ClientTimeout(total=key[0], sock_connect=key[1])
            self._timeouts[key] = timeout
        return timeout

    async def send(
        self, target: UpstreamTarget, endpoint: str, body: bytes, first_byte: float
    ) -> UpstreamResponse:
        first_by = asyncio.get_running_loop().time() + first_byte
        try:
            async with asyncio.timeout_at(first_by):
                resp = await self._client().post(
                    target.urls[endpoint],
                    data=body,
                    headers=target.headers,
                    timeout=self._timeout(target),
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _translate(exc, target) from None
        return _AiohttpResponse(resp, target, first_by)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
