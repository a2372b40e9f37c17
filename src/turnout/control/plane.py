"""The control plane: the one place the live config changes.

Every change (a whole new config, one route's weights, a promotion, a rollback, a
file edit) goes the same way: build the new document, validate it completely
(schema, cross-field checks, secrets), refuse it if it touches a locked route,
store it as a new version with its audit entry, then publish the compiled
snapshot to every process serving traffic. A refused change leaves the live config
as it was. Changes are serialised, so versions are a straight line.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from turnout.config import Config, config_from_mapping
from turnout.control.diff import Change, diff, routes_touched
from turnout.exceptions import ConfigError, Conflict, InvalidRequest, NotFound
from turnout.snapshot import Snapshot, build_snapshot
from turnout.store.configs import ConfigStore, RouteLocked, StoredVersion, VersionInfo

Publish = Callable[[Snapshot], Awaitable[None]]


def document_of(config: Config) -> dict[str, Any]:
    """The canonical document form of a config, as stored and diffed."""
    return config.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(frozen=True)
class Outcome:
    version: int
    changed: bool
    changes: list[Change]
    propagation_ms: float | None = None  # stored → every serving process acknowledged


class ControlPlane:
    def __init__(self, store: ConfigStore, base_dir: Path, publish: Publish) -> None:
        self.store = store
        self.base_dir = base_dir
        self._publish = publish
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="turnout-config")
        self.live: Snapshot | None = None
        self.document: dict[str, Any] = {}

    async def _run(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kw))

    def _compile(self, config: Config, version: int) -> Snapshot:
        return build_snapshot(config, version=version, base_dir=self.base_dir)

    async def bootstrap(self, file_config: Config, *, source: str, prefer_file: bool) -> Snapshot:
        """The config to start on: the last accepted version, unless told to use the file."""
        latest: StoredVersion | None = await self._run(self.store.latest)
        if latest is not None and not prefer_file:
            config = config_from_mapping(latest.document)
            snapshot = self._compile(config, latest.version)
        else:
            snapshot = self._compile(file_config, 0)  # validates secrets before storing
            stored = await self._run(
                self.store.add_version,
                document_of(file_config),
                author="turnout",
                reason=f"started from {source}",
                source="file",
                action="start",
            )
            snapshot = snapshot.with_version(stored.version)
        self.live = snapshot
        self.document = document_of(snapshot.config)
        return snapshot

    @property
    def snapshot(self) -> Snapshot:
        assert self.live is not None, "bootstrap() first"
        return self.live

    async def apply(
        self,
        document: Mapping[str, Any],
        *,
        author: str,
        reason: str,
        source: str = "api",
        action: str = "apply",
        force: bool = False,
    ) -> Outcome:
        """Validate and publish a whole config; ConfigError/Conflict leave everything as is."""
        async with self._lock:
            try:
                config = config_from_mapping(copy.deepcopy(dict(document)))
                new_doc = document_of(config)
                changes = diff(self.document, new_doc)
                snapshot = self._compile(config, 0) if changes else None
            except ConfigError as exc:
                detail = {"reason": reason, "errors": [str(e) for e in exc.errors][:50]}
                await self._run(self.store.record, "refused", author, detail)
                raise
            if snapshot is None:
                return Outcome(self.snapshot.version, False, [])
            locked = routes_touched(changes) & set(await self._run(self.store.locks))
            if locked and not force:
                await self._run(
                    self.store.record,
                    "refused",
                    author,
                    {"reason": reason, "locked_routes": sorted(locked)},
                )
                raise Conflict(
                    f"route(s) {sorted(locked)} are locked; unlock them first"
                    + (" or force the rollback" if action == "rollback" else ""),
                    code="route_locked",
                )
            stored = await self._run(
                self.store.add_version,
                new_doc,
                author=author,
                reason=reason,
                source=source,
                action=action,
                detail={"changes": [c.path for c in changes][:200]},
            )
            snapshot = snapshot.with_version(stored.version)
            started = time.perf_counter()
            await self._publish(snapshot)
            propagation = (time.perf_counter() - started) * 1000.0
            self.live, self.document = snapshot, new_doc
            return Outcome(stored.version, True, changes, propagation)

    def _route(self, doc: dict[str, Any], name: str) -> dict[str, Any]:
        for route in doc.get("routes", []):
            if route.get("name") == name:
                found: dict[str, Any] = route
                return found
        raise NotFound(f"no route {name!r}", code="unknown_route")

    async def set_weights(
        self, route: str, weights: Mapping[str, Any], *, author: str, reason: str
    ) -> Outcome:
        doc = copy.deepcopy(self.document)
        variants = self._route(doc, route)["variants"]
        names = {v["name"] for v in variants}
        unknown = sorted(set(weights) - names)
        if unknown:
            raise InvalidRequest(
                f"route {route!r} has no variant(s) {unknown}; it has {sorted(names)}",
                code="unknown_variant",
            )
        for v in variants:
            if v["name"] in weights:
                v["weight"] = weights[v["name"]]
        return await self.apply(doc, author=author, reason=reason, action="weights")

    async def promote(self, route: str, variant: str, *, author: str, reason: str) -> Outcome:
        names = [v["name"] for v in self._route(self.document, route)["variants"]]
        if variant not in names:
            raise NotFound(f"route {route!r} has no variant {variant!r}", code="unknown_variant")
        weights = {n: (100 if n == variant else 0) for n in names}
        return await self.set_weights(route, weights, author=author, reason=reason)

    async def rollback(
        self, to: int | None, *, author: str, reason: str, force: bool = False
    ) -> Outcome:
        """Go back to version ``to`` (default: the one before the live one), as a new version."""
        target = self.snapshot.version - 1 if to is None else to
        stored: StoredVersion | None = await self._run(self.store.get, target)
        if stored is None:
            raise NotFound(f"no config version {target}", code="unknown_version")
        return await self.apply(
            stored.document,
            author=author,
            reason=reason or f"rollback to version {target}",
            source="rollback",
            action="rollback",
            force=force,
        )

    async def lock(self, route: str, *, author: str, reason: str) -> None:
        self._route(self.document, route)
        try:
            await self._run(self.store.lock, route, author, reason)
        except RouteLocked as exc:
            raise Conflict(
                f"route {route!r} is already locked by {exc.lock.actor}: {exc.lock.reason}",
                code="route_locked",
            ) from None

    async def unlock(self, route: str, *, author: str) -> None:
        await self._run(self.store.unlock, route, author)

    async def versions(self, limit: int) -> list[VersionInfo]:
        result: list[VersionInfo] = await self._run(self.store.versions, limit)
        return result

    async def version(self, number: int) -> StoredVersion:
        stored: StoredVersion | None = await self._run(self.store.get, number)
        if stored is None:
            raise NotFound(f"no config version {number}", code="unknown_version")
        return stored

    async def locks(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._run(self.store.locks)
        return result

    async def close(self) -> None:
        await self._run(self.store.close)
        self._executor.shutdown(wait=True)
