"""Feedback: a named score or event attached to a request, or to a stickiness key.

    {"request_id": "...", "name": "thumbs_up", "value": 1}
    {"key": "alice", "route": "chat", "name": "converted", "value": true}

By request id, the variant is the one that served it (from the request log). By
key, it is the variant that key is assigned to by the live config's hash, so
business events that happen away from any request still reach the comparison.
All SQLite work runs on one store thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from turnout.exceptions import InvalidRequest, NotFound
from turnout.routing.bucketing import bucket_of, pick
from turnout.snapshot import Snapshot
from turnout.store.feedback import FeedbackStore, FeedbackSummary
from turnout.store.requestlog import RequestLog

# Names become metric labels: keep them short and tame.
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")
# The request log writes in batches; a request answered a moment ago may not be
# there yet, so a lookup is retried for about this long before a 404.
FIND_PATIENCE = 1.0


def _value(raw: Any) -> float:
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, int | float) and math.isfinite(raw):
        return float(raw)
    raise InvalidRequest("value must be a finite number or a boolean", param="value")


class FeedbackService:
    def __init__(
        self,
        store: FeedbackStore,
        log: RequestLog | None,
        snapshot: Callable[[], Snapshot],
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.store = store
        self.log = log
        self.snapshot = snapshot
        self.executor = executor or ThreadPoolExecutor(1, thread_name_prefix="turnout-store")

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def record(self, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise InvalidRequest("feedback must be a JSON object")
        name = payload.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise InvalidRequest(
                "name must be 1-64 characters: a letter, then letters, digits, _ . : -",
                param="name",
            )
        value = _value(payload.get("value"))
        request_id = payload.get("request_id")
        if request_id is not None:
            route, variant, key_hash = await self._by_request(request_id)
        else:
            route, variant, key_hash = await self._by_key(payload.get("key"), payload.get("route"))
        await self._run(
            self.store.add, request_id, key_hash, route, variant, name, value, time.time()
        )
        return {
            "request_id": request_id,
            "route": route,
            "variant": variant,
            "name": name,
            "value": value,
        }

    async def _by_request(self, request_id: Any) -> tuple[str, str, str | None]:
        if not isinstance(request_id, str) or not request_id:
            raise InvalidRequest("request_id must be a string", param="request_id")
        if self.log is None:
            raise NotFound(
                "feedback by request_id needs the request log (request_log.enabled)",
                code="request_log_disabled",
            )
        deadline = time.monotonic() + FIND_PATIENCE
        while True:
            row = await self._run(self.log.find, request_id)
            if row is not None or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        if row is None:
            raise NotFound(f"unknown request_id {request_id!r}", code="unknown_request_id")
        if not row.get("variant"):
            raise InvalidRequest(
                f"request {request_id!r} was refused before a variant was chosen",
                param="request_id",
            )
        return str(row["route"]), str(row["variant"]), row.get("key_hash")

    async def _by_key(self, key: Any, route_name: Any) -> tuple[str, str, str | None]:
        if not isinstance(key, str) or not key or not isinstance(route_name, str):
            raise InvalidRequest("give request_id, or key and route (strings)", param="key")
        route = next((r for r in self.snapshot().router.routes if r.name == route_name), None)
        if route is None:
            raise NotFound(f"unknown route {route_name!r}", code="unknown_route")
        variant = route.variants[pick(route.ends, bucket_of(route.prefix, key))]
        key_hash = await self._run(self.log.hash_key, key) if self.log is not None else None
        return route.name, variant.name, key_hash

    async def summaries(self, since: float | None) -> list[FeedbackSummary]:
        result: list[FeedbackSummary] = await self._run(self.store.summary, None, since)
        return result

    async def close(self) -> None:
        await self._run(self.store.close)
        self.executor.shutdown(wait=True)
