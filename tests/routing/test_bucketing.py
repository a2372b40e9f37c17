"""The assignment hash contract, version 1 (docs/hashing.md).

``docs/hash_vectors.json`` is committed data for SDK authors in other languages.
It is produced by the independent reference implementation in this module, never
by turnout itself, and never at test time. After changing ``HASH_CASES`` or
``RANGE_CASES`` (which a contract change would require), regenerate it with:

    python tests/routing/test_bucketing.py

and commit the result. ``test_vectors_file_is_current`` fails until you do.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.routing import BUCKETS, HASH_VERSION, bucket
from turnout.routing.bucketing import pick, range_ends, salt_prefix, weight_units

VECTORS_PATH = Path(__file__).resolve().parents[2] / "docs" / "hash_vectors.json"

# --- the independent reference (no turnout code) -------------------------------------------------


def reference_digest64(salt: str, key: str) -> int:
    """First 8 bytes of SHA-256(utf8(salt) || 0x00 || utf8(key)), unsigned big-endian."""
    data = bytes(salt, "utf-8") + bytes([0]) + bytes(key, "utf-8")
    (value,) = struct.unpack(">Q", hashlib.sha256(data).digest()[:8])
    return value


def reference_bucket(salt: str, key: str) -> int:
    return reference_digest64(salt, key) % 10_000


def reference_variant(weights: list[float], b: int) -> int:
    """Walk the declared ranges: percent x 100 buckets each, in order; empty ones skipped."""
    start = 0
    for i, w in enumerate(weights):
        size = round(w * 100)
        if start <= b < start + size:
            return i
        start += size
    raise AssertionError(f"bucket {b} is outside every range of {weights}")


HASH_CASES: list[tuple[str, str]] = [
    # ASCII, the common shape
    ("checkout", "user-1"),
    ("checkout", "user-2"),
    ("checkout", "user-42"),
    ("checkout", "42"),
    ("search", "user-1"),
    ("search", "42"),
    ("chat", "alice@example.com"),
    ("chat", "true"),
    ("chat", "1.5"),
    # empty key (routers treat an empty key as missing, the hash itself accepts it)
    ("checkout", ""),
    ("a", ""),
    # non-ASCII: UTF-8 bytes are hashed, not code points or UTF-16 units
    ("checkout", "é"),
    ("checkout", "e\u0301"),  # decomposed é: different bytes, different bucket
    ("checkout", "café"),
    ("checkout", "日本語"),
    ("checkout", "🙂"),
    ("checkout", "user-🚀-日本"),
    ("résumé", "user-1"),
    ("日本語", "ключ"),
    # salts with spaces, colons and other punctuation
    ("checkout flow", "user-1"),
    (" leading and trailing ", "user-1"),
    ("route:v2:2024", "user-1"),
    ("a:b", "c"),
    ("a", ":b:c"),
    ("tenant=acme;exp=7", "user-1"),
    # long keys across SHA-256 block and padding boundaries (55, 56, 64, 65 bytes hashed)
    ("s", "k" * 53),
    ("s", "k" * 54),
    ("s", "k" * 62),
    ("s", "k" * 63),
    ("checkout", "x" * 1000),
    ("checkout", "日本語" * 300),
    ("checkout", "user-" + "0123456789" * 50),
]

RANGE_CASES: list[tuple[list[float], int]] = [
    ([100], 0),
    ([100], 9999),
    ([50, 50], 0),
    ([50, 50], 4999),
    ([50, 50], 5000),
    ([50, 50], 9999),
    ([90, 10], 8999),
    ([90, 10], 9000),
    ([95, 5], 9499),
    ([95, 5], 9500),
    ([0, 100], 0),
    ([100, 0], 9999),
    ([99.99, 0.01], 9998),
    ([99.99, 0.01], 9999),
    ([0.01, 99.99], 0),
    ([0.01, 99.99], 1),
    ([33.33, 33.33, 33.34], 3332),
    ([33.33, 33.33, 33.34], 3333),
    ([33.33, 33.33, 33.34], 6665),
    ([33.33, 33.33, 33.34], 6666),
    ([33.33, 33.33, 33.34], 9999),
    ([10, 0, 90], 999),
    ([10, 0, 90], 1000),
    ([25, 25, 25, 25], 7500),
]


def generate_vectors() -> dict[str, object]:
    """The content of docs/hash_vectors.json, from the reference above."""
    return {
        "hash_version": 1,
        "buckets": 10_000,
        "formula": "uint64_be(sha256(utf8(salt) || 0x00 || utf8(key))[0:8]) mod 10000",
        "vectors": [
            {
                "salt": salt,
                "key": key,
                "digest64_hex": f"{reference_digest64(salt, key):016x}",
                "bucket": reference_bucket(salt, key),
            }
            for salt, key in HASH_CASES
        ],
        "ranges": [
            {"weights": weights, "bucket": b, "variant_index": reference_variant(weights, b)}
            for weights, b in RANGE_CASES
        ],
    }


def write_vectors(path: Path = VECTORS_PATH) -> None:
    text = json.dumps(generate_vectors(), indent=2, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def load_vectors() -> dict[str, list[dict[str, object]]]:
    return json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


# --- the committed vectors -----------------------------------------------------------------------


def test_vectors_file_is_current() -> None:
    assert load_vectors() == generate_vectors(), "run: python tests/routing/test_bucketing.py"


def test_vectors_file_matches_reference() -> None:
    data = load_vectors()
    assert data["hash_version"] == 1
    assert data["buckets"] == 10_000
    for v in data["vectors"]:
        salt, key = str(v["salt"]), str(v["key"])
        assert v["bucket"] == reference_bucket(salt, key), v
        assert (
            v["digest64_hex"]
            == hashlib.sha256(salt.encode() + b"\x00" + key.encode()).digest()[:8].hex()
        ), v


def test_vectors_file_matches_turnout() -> None:
    vectors = load_vectors()["vectors"]
    assert len(vectors) >= 30
    for v in vectors:
        assert bucket(str(v["salt"]), str(v["key"])) == v["bucket"], v


def test_vectors_cover_the_required_shapes() -> None:
    keys = [str(v["key"]) for v in load_vectors()["vectors"]]
    salts = [str(v["salt"]) for v in load_vectors()["vectors"]]
    assert "" in keys
    assert any(k.isascii() and k for k in keys)
    for needle in ("é", "日本語", "🙂"):
        assert any(needle in k for k in keys), needle
    assert any(len(k.encode()) >= 1000 for k in keys)
    assert any(" " in s for s in salts)
    assert any(":" in s for s in salts)


def test_range_vectors_match_turnout() -> None:
    for case in load_vectors()["ranges"]:
        weights = [float(w) for w in case["weights"]]  # type: ignore[union-attr]
        ends = range_ends(weight_units(weights))
        assert pick(ends, int(case["bucket"])) == case["variant_index"], case  # type: ignore[call-overload]


def test_contract_constants() -> None:
    assert HASH_VERSION == 1
    assert BUCKETS == 10_000


# --- bucket() ------------------------------------------------------------------------------------

salts = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))
keys = st.text(st.characters(blacklist_categories=("Cs",)))


@given(salts, keys)
def test_bucket_agrees_with_reference(salt: str, key: str) -> None:
    b = bucket(salt, key)
    assert 0 <= b < 10_000
    assert b == reference_bucket(salt, key)


def test_bucket_range_over_many_keys() -> None:
    seen = {bucket("range", f"user-{i}") for i in range(20_000)}
    assert min(seen) >= 0
    assert max(seen) < 10_000
    # 20k draws from 10k buckets leave about e^-2 = 13.5% empty; far fewer means a skew.
    assert len(seen) > 8_000


def test_salt_prefix_is_utf8_then_nul() -> None:
    assert salt_prefix("checkout") == b"checkout\x00"
    assert salt_prefix("日本") == "日本".encode() + b"\x00"


def test_salt_and_key_are_not_simply_concatenated() -> None:
    # The NUL separator keeps ("ab", "c") and ("a", "bc") apart.
    assert reference_digest64("ab", "c") != reference_digest64("a", "bc")
    assert bucket("ab", "c") == reference_bucket("ab", "c")
    assert bucket("a", "bc") == reference_bucket("a", "bc")


# --- weight_units, range_ends, pick --------------------------------------------------------------


def test_weight_units_are_percent_times_100() -> None:
    assert weight_units([100]) == (10_000,)
    assert weight_units([50, 50]) == (5_000, 5_000)
    assert weight_units([33.33, 33.33, 33.34]) == (3333, 3333, 3334)
    assert weight_units([99.99, 0.01]) == (9999, 1)
    assert weight_units([0, 100]) == (0, 10_000)
    assert weight_units([0.07, 99.93]) == (7, 9993)


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=6))
def test_weight_units_round_trip_every_multiple_of_001(units: list[int]) -> None:
    # Every weight a config can hold (a multiple of 0.01) maps back to its exact units.
    weights = [u / 100 for u in units]
    assert weight_units(weights) == tuple(units)


def test_range_ends_are_cumulative_in_declared_order() -> None:
    assert range_ends([]) == ()
    assert range_ends([10_000]) == (10_000,)
    assert range_ends([5000, 5000]) == (5000, 10_000)
    assert range_ends([1000, 0, 9000]) == (1000, 1000, 10_000)
    assert range_ends([9000, 1000]) == (9000, 10_000)


def test_pick_boundaries() -> None:
    ends = range_ends([5000, 5000])
    assert pick(ends, 0) == 0
    assert pick(ends, 4999) == 0
    assert pick(ends, 5000) == 1
    assert pick(ends, 9999) == 1
    ends = range_ends([1, 9999])
    assert pick(ends, 0) == 0
    assert pick(ends, 1) == 1
    ends = range_ends([9999, 1])
    assert pick(ends, 9998) == 0
    assert pick(ends, 9999) == 1


@pytest.mark.parametrize(
    "units",
    [(0, 10_000), (10_000, 0), (0, 0, 10_000), (5000, 0, 5000), (0, 5000, 0, 5000, 0)],
)
def test_pick_never_returns_a_zero_weight_variant(units: tuple[int, ...]) -> None:
    ends = range_ends(units)
    picked = {pick(ends, b) for b in range(BUCKETS)}
    assert picked == {i for i, u in enumerate(units) if u > 0}


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=6), st.integers(0, 9_999))
def test_pick_agrees_with_reference_walk(raw: list[int], b: int) -> None:
    # Scale arbitrary units so they add up to exactly 10,000, as validated configs do.
    total = sum(raw) or 1
    units = [r * 10_000 // total for r in raw]
    units[-1] += 10_000 - sum(units)
    weights = [u / 100 for u in units]
    index = pick(range_ends(weight_units(weights)), b)
    assert index == reference_variant(weights, b)
    assert units[index] > 0


@settings(max_examples=25)
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=6))
def test_each_variant_gets_exactly_its_units(raw: list[int]) -> None:
    total = sum(raw) or 1
    units = [r * 10_000 // total for r in raw]
    units[-1] += 10_000 - sum(units)
    ends = range_ends(units)
    counts = [0] * len(units)
    for b in range(0, BUCKETS):
        counts[pick(ends, b)] += 1
    assert counts == units


if __name__ == "__main__":
    write_vectors()
    print(f"wrote {VECTORS_PATH}")
