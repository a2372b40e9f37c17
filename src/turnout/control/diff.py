"""What changed between two config documents, one ``Change`` per field path.

Pure: no I/O, no clock. The documents are JSON-shaped (``Config.model_dump(mode=
"json", by_alias=True, exclude_none=True)`` or a stored version), but any nesting
of mappings, lists and scalars works.

Lists whose items are all mappings with a distinct string ``name`` (upstreams,
routes, variants) are matched by name, not by position: inserting a route before
another reads as one route added, not as every later route changed, and a rename
reads as one item removed and one added. Their order still matters (routes are
tried in order, variants take bucket ranges in order), so when the items present
on both sides are in a different order the list itself is reported as "changed",
with the two name orders as before and after. Other lists compare by index.

Two leaves are equal only if they have the same type and value, so ``5`` and
``5.0``, or ``1`` and ``true``, differ: exactly when their canonical JSON differs
(``store.configs.canonical_json``), so "no changes" and "the same text" agree.

Paths read like the config: ``routes[main].variants[canary].weight``,
``upstreams[1]`` (an index, in a list without names), ``prices["gpt-4.1"].input``
(a key that is not a plain word is quoted, as is a name that is all digits or has
brackets or quotes in it, so it cannot be mistaken for an index).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Change", "ChangeKind", "diff", "format_diff", "routes_touched"]

ChangeKind = Literal["added", "removed", "changed"]

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_VALUE_WIDTH = 60  # characters of one value in format_diff before it is cut


@dataclass(frozen=True, slots=True)
class Change:
    """One difference. ``before`` is None for "added", ``after`` for "removed". The
    values are the documents' own objects, not copies."""

    path: str
    kind: ChangeKind
    before: Any
    after: Any

    def __str__(self) -> str:
        return _line(self)


def diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Change]:
    """The changes that turn document ``a`` into ``b``, in document order (``a``'s,
    then what only ``b`` has); empty exactly when the two are equal."""
    out: list[Change] = []
    _walk(a, b, "", out)
    return out


# -- walking ----------------------------------------------------------------------


def _walk(a: Any, b: Any, path: str, out: list[Change]) -> None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        _mappings(a, b, path, out)
    elif _is_list(a) and _is_list(b):
        names_a, names_b = _names(a), _names(b)
        if names_a is not None and names_b is not None:
            _named_lists(a, b, names_a, names_b, path, out)
        else:
            _indexed_lists(a, b, path, out)
    elif not _same_leaf(a, b):
        out.append(Change(path or "<root>", "changed", a, b))


def _mappings(a: Mapping[Any, Any], b: Mapping[Any, Any], path: str, out: list[Change]) -> None:
    for key, value in a.items():
        where = _key_path(path, key)
        if key in b:
            _walk(value, b[key], where, out)
        else:
            out.append(Change(where, "removed", value, None))
    for key, value in b.items():
        if key not in a:
            out.append(Change(_key_path(path, key), "added", None, value))


def _named_lists(
    a: Sequence[Any],
    b: Sequence[Any],
    names_a: list[str],
    names_b: list[str],
    path: str,
    out: list[Change],
) -> None:
    by_name_a = dict(zip(names_a, a, strict=True))
    by_name_b = dict(zip(names_b, b, strict=True))
    # Only the items on both sides decide whether the order changed: an insertion or
    # a removal alone is reported as itself, not also as a new order.
    if [n for n in names_a if n in by_name_b] != [n for n in names_b if n in by_name_a]:
        out.append(Change(path, "changed", names_a, names_b))
    for name in names_a:
        where = f"{path}[{_name_selector(name)}]"
        if name in by_name_b:
            _walk(by_name_a[name], by_name_b[name], where, out)
        else:
            out.append(Change(where, "removed", by_name_a[name], None))
    for name in names_b:
        if name not in by_name_a:
            out.append(Change(f"{path}[{_name_selector(name)}]", "added", None, by_name_b[name]))


def _indexed_lists(a: Sequence[Any], b: Sequence[Any], path: str, out: list[Change]) -> None:
    for i in range(max(len(a), len(b))):
        where = f"{path}[{i}]"
        if i >= len(b):
            out.append(Change(where, "removed", a[i], None))
        elif i >= len(a):
            out.append(Change(where, "added", None, b[i]))
        else:
            _walk(a[i], b[i], where, out)


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _names(items: Sequence[Any]) -> list[str] | None:
    """The items' names if every item is a mapping with a string name and no two
    share one; otherwise None (the list is then compared by index)."""
    names: list[str] = []
    for item in items:
        name = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(name, str):
            return None
        names.append(name)
    return names if len(set(names)) == len(names) else None


def _same_leaf(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        # repr, not ==: NaN equals itself and -0.0 differs from 0.0, as in JSON text.
        return repr(a) == repr(b)
    return bool(a == b)


# -- paths ------------------------------------------------------------------------


def _key_path(path: str, key: Any) -> str:
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{_quote(str(key))}]"


def _name_selector(name: str) -> str:
    if _PLAIN_NAME.fullmatch(name) and not name.isdigit():
        return name
    return _quote(name)


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


# -- routes touched ---------------------------------------------------------------


def routes_touched(changes: Iterable[Change]) -> set[str]:
    """Names of the routes a change set touches, to enforce route locks.

    A route is touched when anything under ``routes[name]`` changed, it was added
    or removed, or a reorder changed which routes come before it (routes are tried
    in order, so that changes what it receives). Changes elsewhere, e.g. to an
    upstream a route uses, touch no route. Index paths (``routes[2]``) name no
    route; they only occur when route names are missing or repeated, which the
    config checks refuse, so diff validated configs.
    """
    touched: set[str] = set()
    for change in changes:
        if change.path == "routes":
            touched |= _whole_list_touched(change.before, change.after)
        else:
            name = _route_of(change.path)
            if name is not None:
                touched.add(name)
    return touched


def _route_of(path: str) -> str | None:
    prefix = "routes["
    if not path.startswith(prefix):
        return None
    rest = path[len(prefix) :]
    if rest.startswith('"'):
        name, end = json.JSONDecoder().raw_decode(rest)
        return name if isinstance(name, str) and rest[end : end + 1] == "]" else None
    selector = rest.split("]", 1)[0]
    return None if selector.isdigit() else selector


def _whole_list_touched(before: Any, after: Any) -> set[str]:
    if _is_str_list(before) and _is_str_list(after):  # a reorder: the two name orders
        common = set(before) & set(after)
        ahead_before, ahead_after = _ahead(before, common), _ahead(after, common)
        return {n for n in common if ahead_before[n] != ahead_after[n]}
    # The list replaced as a whole (or added, or removed): every route in it.
    touched: set[str] = set()
    for side in (before, after):
        if _is_list(side):
            touched |= {
                item["name"]
                for item in side
                if isinstance(item, Mapping) and isinstance(item.get("name"), str)
            }
    return touched


def _is_str_list(value: Any) -> bool:
    return _is_list(value) and all(isinstance(v, str) for v in value)


def _ahead(order: Sequence[str], common: set[str]) -> dict[str, frozenset[str]]:
    """For each name in ``common``, the names of ``common`` before it in ``order``."""
    seen: set[str] = set()
    out: dict[str, frozenset[str]] = {}
    for name in order:
        if name in common:
            out[name] = frozenset(seen)
            seen.add(name)
    return out


# -- text -------------------------------------------------------------------------


def format_diff(changes: Iterable[Change]) -> str:
    """One line per change: ``~ path: before -> after``, ``+ path: value``,
    ``- path`` (with the old value when it was a scalar); long values are cut, a
    new order is written out, e.g. ``~ routes: [a, b, c] -> [b, a, c]``."""
    return "\n".join(_line(c) for c in changes)


def _line(change: Change) -> str:
    if change.kind == "added":
        return f"+ {change.path}: {_short(change.after)}"
    if change.kind == "removed":
        if isinstance(change.before, Mapping) or _is_list(change.before):
            return f"- {change.path}"
        return f"- {change.path}: {_short(change.before)}"
    if _is_str_list(change.before) and _is_str_list(change.after):
        # Two name orders (a whole list of strings only changes this way): written
        # out in full, since the order is the whole point.
        return f"~ {change.path}: {_names_text(change.before)} -> {_names_text(change.after)}"
    return f"~ {change.path}: {_short(change.before)} -> {_short(change.after)}"


def _names_text(names: Sequence[str]) -> str:
    return "[" + ", ".join(_name_selector(n) for n in names) + "]"


def _short(value: Any) -> str:
    # JSON keeps strings quoted and escapes newlines, so each change stays one line.
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=repr)
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 1] + "…"
