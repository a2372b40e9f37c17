"""Experiments as the admin API and CLI see them: report, unit export, stop.

Reads run on a thread (SQLite, and statistics over every unit); stopping is one
config change through the control plane, versioned like any other: the winner
gets the route's traffic and the experiment's ``stop`` is set, so its report
stays as it was when it ended.
"""

from __future__ import annotations

import asyncio
import copy
import csv
import io
import time
from typing import Any

from turnout.config.experiment import ExperimentSpec
from turnout.control.plane import ControlPlane, Outcome
from turnout.exceptions import InvalidRequest, NotFound
from turnout.experiment.report import Unit, build_report
from turnout.experiment.units import load_units

__all__ = ["Experiments"]


class Experiments:
    def __init__(self, plane: ControlPlane, path: Any) -> None:
        self.plane = plane
        self.path = path

    def spec(self, name: str) -> ExperimentSpec:
        for spec in self.plane.snapshot.config.experiments:
            if spec.name == name:
                return spec
        raise NotFound(f"no experiment {name!r} in the live config", code="unknown_experiment")

    def _weights(self, route: str) -> dict[str, float]:
        for r in self.plane.snapshot.config.routes:
            if r.name == route:
                return {v.name: 100.0 if v.weight is None else v.weight for v in r.variants}
        raise NotFound(f"the live config has no route {route!r}", code="unknown_route")

    async def _units(self, spec: ExperimentSpec) -> list[Unit]:
        start = spec.start or 0.0
        stop = spec.stop or time.time()
        return await asyncio.to_thread(load_units, self.path, spec, start, stop)

    async def report(self, name: str) -> dict[str, Any]:
        spec = self.spec(name)
        units = await self._units(spec)
        weights = self._weights(spec.route)
        return await asyncio.to_thread(build_report, spec, weights, units)

    async def names(self) -> list[str]:
        return [s.name for s in self.plane.snapshot.config.experiments]

    async def units_csv(self, name: str) -> str:
        """One row per unit: key hash, variant(s), requests, each metric's value."""
        spec = self.spec(name)
        units = await self._units(spec)
        metrics = [m.metric for m in (spec.primary, *spec.guardrails)]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["key_hash", "variant", "requests", *metrics])
        for u in units:
            values = ["" if u.values.get(m) is None else repr(u.values[m]) for m in metrics]
            writer.writerow([u.key, "+".join(u.variants), u.requests, *values])
        return out.getvalue()

    async def stop(self, name: str, winner: str | None, author: str, reason: str) -> Outcome:
        """End the experiment; with a winner, give it all of the route's traffic."""
        spec = self.spec(name)
        doc = copy.deepcopy(self.plane.document)
        route = next(r for r in doc["routes"] if r["name"] == spec.route)
        names = [v["name"] for v in route["variants"]]
        if winner is not None:
            if winner not in names:
                raise InvalidRequest(
                    f"route {spec.route!r} has no variant {winner!r}; it has {names}",
                    code="unknown_variant",
                )
            for v in route["variants"]:
                v["weight"] = 100.0 if v["name"] == winner else 0.0
        for e in doc.get("experiments", []):
            if e["name"] == name:
                e["stop"] = time.time()
        why = reason or f"experiment {name} stopped" + (f"; {winner} wins" if winner else "")
        return await self.plane.apply(doc, author=author, reason=why, action="experiment")
