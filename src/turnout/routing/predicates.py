"""Route ``match`` trees compiled into predicates, once per config.

Each node has a fast ``test`` (closures, no per-request allocation beyond the
value lookup) and an ``explain`` used by ``turnout route`` to say why a request
did or did not match. Comparisons use ``as_text`` so that header strings and JSON
numbers or booleans compare alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from turnout.config.attributes import parse_attr
from turnout.config.match import Match
from turnout.routing.request import RequestView, as_text, getter

Test = Callable[[RequestView], bool]


@dataclass(frozen=True, slots=True)
class Predicate:
    kind: str  # "all", "any", "not" or "cond"
    text: str
    test: Test
    children: tuple[Predicate, ...] = ()
    get: Callable[[RequestView], Any] | None = None

    def explain(self, view: RequestView, depth: int = 0) -> tuple[bool, list[str]]:
        """The result and one line per node, indented by depth."""
        pad = "  " * depth
        if self.kind == "cond":
            assert self.get is not None
            ok = self.test(view)
            value = self.get(view)
            seen = "absent" if value is None else repr(value)
            return ok, [f"{pad}{'✓' if ok else '✗'} {self.text} (value: {seen})"]
        results = [c.explain(view, depth + 1) for c in self.children]
        if self.kind == "all":
            ok = all(r[0] for r in results)
        elif self.kind == "any":
            ok = any(r[0] for r in results)
        else:
            ok = not results[0][0]
        lines = [f"{pad}{'✓' if ok else '✗'} {self.kind}"]
        for _, sub in results:
            lines.extend(sub)
        return ok, lines


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _numeric(get: Callable[[RequestView], Any], op: str, bound: float) -> Test:
    compare: Callable[[float], bool] = {
        "gt": lambda x: x > bound,
        "gte": lambda x: x >= bound,
        "lt": lambda x: x < bound,
        "lte": lambda x: x <= bound,
    }[op]

    def test(v: RequestView) -> bool:
        x = _to_float(get(v))
        return x is not None and compare(x)

    return test


def _condition(m: Match) -> Predicate:
    assert m.attr is not None
    ref = parse_attr(m.attr)
    get = getter(ref)
    test: Test
    if m.equals is not None:
        want = as_text(m.equals)

        def test(v: RequestView) -> bool:
            x = get(v)
            return (x if type(x) is str else as_text(x)) == want

        text = f"{ref} equals {m.equals!r}"
    elif m.in_ is not None:
        allowed = frozenset(as_text(x) for x in m.in_)

        def test(v: RequestView) -> bool:
            x = get(v)
            return (x if type(x) is str else as_text(x)) in allowed

        text = f"{ref} in {m.in_!r}"
    elif m.prefix is not None:
        prefix = m.prefix

        def test(v: RequestView) -> bool:
            s = as_text(get(v))
            return s is not None and s.startswith(prefix)

        text = f"{ref} starts with {prefix!r}"
    elif m.regex is not None:
        search = re.compile(m.regex).search

        def test(v: RequestView) -> bool:
            s = as_text(get(v))
            return s is not None and search(s) is not None

        text = f"{ref} matches /{m.regex}/"
    elif m.exists is not None:
        present = m.exists
        test = lambda v: (get(v) is not None) is present  # noqa: E731
        text = f"{ref} {'exists' if present else 'is absent'}"
    else:
        op, bound = next(
            (name, getattr(m, name))
            for name in ("gt", "gte", "lt", "lte")
            if getattr(m, name) is not None
        )
        test = _numeric(get, op, bound)
        text = f"{ref} {op} {bound:g}"
    return Predicate("cond", text, test, get=get)


# Plain loops: a generator inside all()/any() costs more than the tests it runs.
def _all(tests: tuple[Test, ...]) -> Test:
    def test(v: RequestView) -> bool:
        for t in tests:  # noqa: SIM110 (see above)
            if not t(v):
                return False
        return True

    return test


def _any(tests: tuple[Test, ...]) -> Test:
    def test(v: RequestView) -> bool:
        for t in tests:  # noqa: SIM110 (see above)
            if t(v):
                return True
        return False

    return test


def compile_match(m: Match) -> Predicate:
    if m.attr is not None:
        return _condition(m)
    if m.all is not None:
        kids = tuple(compile_match(c) for c in m.all)
        return Predicate("all", "all", _all(tuple(k.test for k in kids)), kids)
    if m.any is not None:
        kids = tuple(compile_match(c) for c in m.any)
        return Predicate("any", "any", _any(tuple(k.test for k in kids)), kids)
    assert m.not_ is not None
    kid = compile_match(m.not_)
    inner = kid.test
    return Predicate("not", "not", lambda v: not inner(v), (kid,))
