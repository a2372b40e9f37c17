"""Config diffs: by-name matching, complete, agreeing with canonical JSON, readable."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.config import config_from_text
from turnout.control.diff import Change, diff, format_diff, routes_touched
from turnout.store.configs import canonical_json

YAML = """
upstreams:
  - {name: openai, base_url: "https://api.openai.com/v1", api_key_env: OPENAI_API_KEY,
     labels: {provider: openai, x-region: us}}
  - {name: vllm, base_url: "http://vllm:8000/v1", timeouts: {connect: 2}}
  - {name: old, base_url: "http://old:8000/v1"}
routes:
  - name: enterprise
    match:
      all:
        - {attr: "header:x-tier", in: [gold, platinum]}
        - not: {attr: "body:metadata.region", prefix: cn-}
    sticky: {key: "body:metadata.tenant", on_missing: reject}
    variants:
      - {name: control, upstream: openai, weight: 50, model: gpt-4o}
      - {name: concise, upstream: openai, weight: 50, model: gpt-4o,
         params: {temperature: 0.2}, system_prompt: {mode: prepend, template: "Be brief."}}
  - name: support
    match: {attr: "header:x-app", prefix: support-}
    variants:
      - {name: stable, upstream: openai, weight: 95, model: gpt-4o-mini}
      - {name: canary, upstream: vllm, weight: 5, model: llama-3-70b}
  - name: batch
    match: {attr: "header:x-priority", lt: 3}
    variants: [{name: llama, upstream: vllm}]
  - name: default
    variants: [{name: main, upstream: openai}]
prices:
  gpt-4o: {input: 2.5, output: 10}
  gpt-4.1: {input: 2, output: 8}
"""

BASE: dict[str, Any] = config_from_text(YAML).model_dump(
    mode="json", by_alias=True, exclude_none=True
)
ROUTES = [r["name"] for r in BASE["routes"]]


def base() -> dict[str, Any]:
    return copy.deepcopy(BASE)


# -- expected paths, worked out independently of the module -----------------------


def leaves(
    node: Any, path: str = "", route: str | None = None
) -> list[tuple[str, Any, str | None]]:
    """(path, value, route) of every scalar in ``node``, ``name`` fields and keys with
    a dot excluded, so that no path needs quoting (test_odd_keys... covers that)."""
    out: list[tuple[str, Any, str | None]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if (k != "name" or not path.endswith("]")) and "." not in k:
                out += leaves(v, f"{path}.{k}" if path else k, route)
    elif isinstance(node, list):
        named = all(isinstance(i, dict) and "name" in i for i in node)
        for i, item in enumerate(node):
            where = f"{path}[{item['name'] if named else i}]"
            out += leaves(item, where, item["name"] if path == "routes" else route)
    else:
        out.append((path, node, route))
    return out


LEAVES = leaves(BASE)


def containers(node: Any, path: str = "", route: str | None = None) -> list[tuple[Any, str, Any]]:
    """(dict, path, route) of every mapping in ``node``."""
    out: list[tuple[Any, str, Any]] = []
    if isinstance(node, dict):
        out.append((node, path, route))
        for k, v in node.items():
            if "." in k:
                continue
            out += containers(v, f"{path}.{k}" if path else k, route)
    elif isinstance(node, list):
        named = all(isinstance(i, dict) and "name" in i for i in node)
        for i, item in enumerate(node):
            where = f"{path}[{item['name'] if named else i}]"
            out += containers(item, where, item["name"] if path == "routes" else route)
    return out


def locate(doc: Any, path: str) -> tuple[Any, Any]:
    """The container holding ``path``'s last step in ``doc``, and that step's key."""
    steps: list[Any] = []
    for part in path.replace("[", ".[").split("."):
        if part.startswith("["):
            steps.append(part[1:-1])
        elif part:
            steps.append(part)
    node: Any = doc
    for step in steps[:-1]:
        node = node[step] if isinstance(node, dict) else _item(node, step)
    last = steps[-1]
    if isinstance(node, list):
        return node, next(i for i, x in enumerate(node) if _matches(x, i, last))
    return node, last


def _item(items: list[Any], step: str) -> Any:
    return next(x for i, x in enumerate(items) if _matches(x, i, step))


def _matches(item: Any, index: int, step: str) -> bool:
    if isinstance(item, dict) and "name" in item:
        return bool(item["name"] == step)
    return str(index) == step


def changed_value(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    return f"{value}-changed"


# -- properties -------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, width=16),
    st.sampled_from(["", "a", "b", "gpt-4o", "x y"]),
)
json_keys = st.sampled_from(["name", "a", "b", "weight", "x-y", "1", "é"])


def named_lists(kids: st.SearchStrategy[Any]) -> st.SearchStrategy[list[dict[str, Any]]]:
    item = st.dictionaries(json_keys.filter(lambda k: k != "name"), kids, max_size=3)
    names = st.lists(st.sampled_from(["a", "b", "c", "0", "d e"]), unique=True, max_size=4)
    items = st.lists(item, min_size=4, max_size=4)  # at least as many as names

    def build(ns: list[str], its: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"name": n, **i} for n, i in zip(ns, its[: len(ns)], strict=True)]

    return st.builds(build, names, items)


json_values = st.recursive(
    json_scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.dictionaries(json_keys, kids, max_size=4),
        named_lists(kids),
    ),
    max_leaves=12,
)
documents = st.dictionaries(json_keys, json_values, max_size=4)


@settings(max_examples=100, deadline=None)
@given(documents)
def test_a_document_has_no_changes_against_itself(doc: dict[str, Any]) -> None:
    assert diff(doc, copy.deepcopy(doc)) == []


RETYPED: dict[str, Any] = {"1": 1.0, "1.0": True, "True": 1, "0": -0.0, "0.0": -0.0, "-0.0": 0}


def slots(node: Any) -> list[tuple[Any, Any]]:
    """(container, key or index) of every value inside ``node``."""
    out: list[tuple[Any, Any]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        out.append((node, key))
        if isinstance(value, dict | list):
            out += slots(value)
    return out


@settings(max_examples=200, deadline=None)
@given(documents, st.data())
def test_no_changes_exactly_when_the_canonical_json_is_equal(
    a: dict[str, Any], data: st.DataObject
) -> None:
    b = copy.deepcopy(a)
    how = data.draw(st.sampled_from(["other", "reorder keys", "set", "retype", "reverse"]))
    targets = slots(b)
    if how == "other":
        b = data.draw(documents)
    elif how == "reorder keys":  # key order never matters
        b = dict(reversed(list(b.items())))
    elif how == "retype":  # equal in Python, not in JSON: 1 / 1.0 / True, 0.0 / -0.0
        numbers = [(h, k) for h, k in targets if repr(h[k]) in RETYPED]
        if numbers:
            holder, key = data.draw(st.sampled_from(numbers))
            holder[key] = RETYPED[repr(holder[key])]
    elif targets:
        holder, key = data.draw(st.sampled_from(targets))
        if how == "set":  # often the same value, or 1 for 1.0, True for 1...
            holder[key] = data.draw(json_scalars)
        elif isinstance(holder[key], list):
            holder[key].reverse()
    changes = diff(a, b)
    assert (changes == []) == (canonical_json(a) == canonical_json(b))
    for c in changes:
        assert c.kind in ("added", "removed", "changed")
        assert c.before is None or c.kind != "added"
        assert c.after is None or c.kind != "removed"


def test_types_matter_as_they_do_in_json() -> None:
    assert diff({"w": 5}, {"w": 5.0}) == [Change("w", "changed", 5, 5.0)]
    assert diff({"w": 1}, {"w": True}) == [Change("w", "changed", 1, True)]
    assert diff({"w": 0.0}, {"w": -0.0}) == [Change("w", "changed", 0.0, -0.0)]
    assert diff({"w": [1]}, {"w": (1,)}) == []


@settings(max_examples=150, deadline=None)
@given(
    st.sets(st.integers(0, len(LEAVES) - 1), max_size=6),
    st.sets(st.integers(0, len(LEAVES) - 1), max_size=3),
    st.lists(st.integers(0, 10_000), max_size=3),
)
def test_every_edit_of_a_config_is_reported_at_its_path(
    to_change: set[int], to_delete: set[int], add_into: list[int]
) -> None:
    to_delete = {i for i in to_delete if not LEAVES[i][0].endswith("]")}
    doc = base()
    expected = []
    for i in sorted(to_change - to_delete):
        path, value, _ = LEAVES[i]
        holder, key = locate(doc, path)
        holder[key] = changed_value(value)
        expected.append((path, "changed", value, holder[key]))
    for i in sorted(to_delete):  # dict keys only: deleting a list item renumbers the rest
        path, value, _ = LEAVES[i]
        holder, key = locate(doc, path)
        del holder[key]
        expected.append((path, "removed", value, None))
    touched = {LEAVES[i][2] for i in to_change | to_delete} - {None}
    boxes = containers(doc)
    for n, pick in enumerate(add_into):
        box, path, route = boxes[pick % len(boxes)]
        box[f"new{n}"] = n
        expected.append((f"{path}.new{n}" if path else f"new{n}", "added", None, n))
        touched |= {route} - {None}
    changes = diff(BASE, doc)
    assert sorted((c.path, c.kind, str(c.before), str(c.after)) for c in changes) == sorted(
        (p, k, str(b), str(a)) for p, k, b, a in expected
    )
    assert routes_touched(changes) == touched


def flipped(before: list[str], after: list[str]) -> set[str]:
    """Routes whose order relative to some other route differs (pairwise)."""
    out = set()
    for x, y in itertools.combinations(before, 2):
        if after.index(x) > after.index(y):
            out |= {x, y}
    return out


@settings(max_examples=100, deadline=None)
@given(st.permutations(ROUTES), st.permutations(range(3)), st.booleans())
def test_a_reorder_of_named_items_is_one_order_change(
    order: list[str], upstream_order: list[int], also_edit: bool
) -> None:
    doc = base()
    by_name = {r["name"]: r for r in doc["routes"]}
    doc["routes"] = [by_name[n] for n in order]
    doc["upstreams"] = [doc["upstreams"][i] for i in upstream_order]
    if also_edit:
        by_name["support"]["variants"][1]["weight"] = 25.0
    expected = []
    if order != ROUTES:
        expected.append(Change("routes", "changed", ROUTES, order))
    if upstream_order != [0, 1, 2]:
        names = [u["name"] for u in BASE["upstreams"]]
        expected.append(Change("upstreams", "changed", names, [names[i] for i in upstream_order]))
    if also_edit:
        expected.append(Change("routes[support].variants[canary].weight", "changed", 5.0, 25.0))
    changes = diff(BASE, doc)
    assert sorted(changes, key=lambda c: c.path) == sorted(expected, key=lambda c: c.path)
    assert routes_touched(changes) == flipped(ROUTES, order) | ({"support"} if also_edit else set())


def test_adjacent_swap_touches_the_two_routes() -> None:
    doc = base()
    doc["routes"][1], doc["routes"][2] = doc["routes"][2], doc["routes"][1]
    assert routes_touched(diff(BASE, doc)) == {"support", "batch"}


@settings(max_examples=50, deadline=None)
@given(st.integers(0, len(ROUTES)))
def test_inserting_or_removing_a_route_reads_as_such(where: int) -> None:
    doc = base()
    new = {"name": "vip", "variants": [{"name": "main", "upstream": "openai"}]}
    doc["routes"].insert(where, new)
    assert diff(BASE, doc) == [Change("routes[vip]", "added", None, new)]
    assert routes_touched(diff(BASE, doc)) == {"vip"}
    removed = doc["routes"].pop(1 if where == 0 else 0)
    changes = diff(BASE, doc)
    assert Change(f"routes[{removed['name']}]", "removed", removed, None) in changes
    assert routes_touched(changes) == {"vip", removed["name"]}


def test_a_renamed_variant_is_removed_and_added() -> None:
    doc = base()
    doc["routes"][1]["variants"][1]["name"] = "canary-2"
    changes = diff(BASE, doc)
    assert [(c.path, c.kind) for c in changes] == [
        ("routes[support].variants[canary]", "removed"),
        ("routes[support].variants[canary-2]", "added"),
    ]
    assert routes_touched(changes) == {"support"}


def test_lists_without_names_compare_by_index() -> None:
    doc = base()
    doc["routes"][0]["match"]["all"][1]["not"]["prefix"] = "cn"
    doc["routes"][0]["match"]["all"].append({"attr": "path", "exists": True})
    doc["routes"][0]["match"]["all"][0]["in"].pop()
    assert [(c.path, c.kind) for c in diff(BASE, doc)] == [
        ("routes[enterprise].match.all[0].in[1]", "removed"),
        ("routes[enterprise].match.all[1].not.prefix", "changed"),
        ("routes[enterprise].match.all[2]", "added"),
    ]


def test_odd_keys_and_names_are_quoted_and_still_name_their_route() -> None:
    a = {"routes": [{"name": "0", "w": 1}, {"name": "a b", "w": 1}], "prices": {"gpt-4.1": 1}}
    b = {"routes": [{"name": "0", "w": 2}, {"name": "a b", "w": 2}], "prices": {"gpt-4.1": 2}}
    changes = diff(a, b)
    assert [c.path for c in changes] == ['routes["0"].w', 'routes["a b"].w', 'prices["gpt-4.1"]']
    assert routes_touched(changes) == {"0", "a b"}


def test_routes_replaced_as_a_whole_touch_every_route() -> None:
    doc = base()
    del doc["routes"]
    assert routes_touched(diff(BASE, doc)) == set(ROUTES)
    # Duplicate names (refused by the config checks) fall back to indexes: no names.
    dup = {"routes": [{"name": "a", "w": 1}, {"name": "a", "w": 1}]}
    changes = diff(dup, {"routes": [{"name": "a", "w": 1}, {"name": "a", "w": 2}]})
    assert [c.path for c in changes] == ["routes[1].w"]
    assert routes_touched(changes) == set()


def test_format_diff_reads_well() -> None:
    doc = base()
    support = doc["routes"][1]
    support["variants"][0]["weight"] = 75.0
    support["variants"][1]["weight"] = 25.0
    support["variants"][1]["model"] = "llama-3.3-70b"
    doc["routes"][0]["variants"][1]["system_prompt"]["template"] = "Be brief.\nUse bullets."
    doc["routes"].insert(3, {"name": "vip", "variants": [{"name": "main", "upstream": "vllm"}]})
    doc["routes"][0], doc["routes"][1] = doc["routes"][1], doc["routes"][0]
    del doc["upstreams"][2]
    del doc["routes"][2]["match"]  # batch
    doc["prices"]["gpt-4.1"]["output"] = 9.0
    text = format_diff(diff(BASE, doc))
    assert text == "\n".join(
        [
            "- upstreams[old]",
            "~ routes: [enterprise, support, batch, default]"
            " -> [support, enterprise, batch, vip, default]",
            '~ routes[enterprise].variants[concise].system_prompt.template: "Be brief." -> "Be'
            ' brief.\\nUse bullets."',
            "~ routes[support].variants[stable].weight: 95.0 -> 75.0",
            "~ routes[support].variants[canary].weight: 5.0 -> 25.0",
            '~ routes[support].variants[canary].model: "llama-3-70b" -> "llama-3.3-70b"',
            "- routes[batch].match",
            '+ routes[vip]: {"name": "vip", "variants": [{"name": "main", "upstream": "…',
            '~ prices["gpt-4.1"].output: 8.0 -> 9.0',
        ]
    ), text
    assert str(diff({"a": 1}, {})[0]) == "- a: 1"
    assert format_diff([]) == ""
