"""The line between the supervisor and its workers: a Unix socket, JSON lines.

Each worker connects once at start and answers the supervisor's questions; today
"stats" (the worker's metrics export for a window). The supervisor asks all
workers at once and merges what comes back within the timeout, so a stuck worker
delays a stats call by at most that timeout and never blocks traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
LIMIT = 64 * 1024 * 1024  # one stats export per line; generous for many series


class WorkerLink:
    """The supervisor's end of one worker's connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while line := await self._reader.readline():
                msg = orjson.loads(line)
                fut = self._waiting.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg.get("data"))
        except (ConnectionError, orjson.JSONDecodeError, ValueError):
            pass
        finally:
            self.closed.set()
            for fut in self._waiting.values():
                fut.cancel()

    async def ask(self, op: str, wait: float, **args: Any) -> Any:
        req_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = fut
        self._writer.write(orjson.dumps({"id": req_id, "op": op, **args}) + b"\n")
        try:
            await self._writer.drain()
            return await asyncio.wait_for(fut, wait)
        finally:
            self._waiting.pop(req_id, None)

    async def close(self) -> None:
        self._writer.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await self._task


class Hub:
    """The supervisor's side: accepts workers, asks them all."""

    def __init__(
        self, path: str, on_connect: Callable[[WorkerLink], Awaitable[Any]] | None = None
    ) -> None:
        self.path = path
        self.on_connect = on_connect  # e.g. hand a new worker the live config
        self.links: list[WorkerLink] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._accept, self.path, limit=LIMIT)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = WorkerLink(reader, writer)
        self.links.append(link)
        if self.on_connect is not None:
            with contextlib.suppress(Exception):  # a worker dying at start is the watcher's job
                await self.on_connect(link)
        await link.closed.wait()
        self.links.remove(link)

    async def ask_all(self, op: str, wait: float = 2.0, **args: Any) -> list[Any]:
        links = list(self.links)
        results = await asyncio.gather(
            *(link.ask(op, wait, **args) for link in links), return_exceptions=True
        )
        return [r for r in results if not isinstance(r, BaseException)]

    async def close(self) -> None:
        for link in list(self.links):
            await link.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def serve_supervisor(path: str, handler: Handler) -> None:
    """A worker's side: connect and answer until the supervisor goes away."""
    reader, writer = await asyncio.open_unix_connection(path, limit=LIMIT)
    try:
        while line := await reader.readline():
            msg = orjson.loads(line)
            try:
                data = await handler(msg)
            except Exception as exc:  # a failed answer must not end the link
                data = {"error": f"{type(exc).__name__}: {exc}"}
            writer.write(orjson.dumps({"id": msg.get("id"), "data": data}) + b"\n")
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
