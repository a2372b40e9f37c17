"""The assignment hash contract, version 1 (``docs/hashing.md``; vectors in tests).

    bucket = uint64_be(sha256(utf8(salt) || 0x00 || utf8(key))[0:8]) mod 10000

Variants take consecutive bucket ranges in the order they are declared, each of
``weight * 100`` buckets, so a weight of 5 (percent) is 500 buckets. Raising the
last variant's weight only moves buckets into it; a key therefore stays in a
canary as the canary grows. SHA-256 is chosen for being available, identical,
in every language's standard library; only integer arithmetic follows it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from hashlib import sha256

HASH_VERSION = 1
BUCKETS = 10_000
UNITS_PER_PERCENT = BUCKETS // 100


def salt_prefix(salt: str) -> bytes:
    """The bytes hashed before every key of a split; computed once per config."""
    return salt.encode() + b"\x00"


def bucket_of(prefix: bytes, key: str) -> int:
    # surrogateescape: a header that is not UTF-8 arrives with its raw bytes escaped;
    # hashing those bytes back keeps the hash defined on bytes, as in other languages.
    data = prefix + key.encode("utf-8", "surrogateescape")
    return int.from_bytes(sha256(data).digest()[:8], "big") % BUCKETS


def bucket(salt: str, key: str) -> int:
    return bucket_of(salt_prefix(salt), key)


def weight_units(weights: Sequence[float]) -> tuple[int, ...]:
    """Percent weights to bucket counts; validated configs already add up to 100."""
    return tuple(round(w * UNITS_PER_PERCENT) for w in weights)


def range_ends(units: Sequence[int]) -> tuple[int, ...]:
    """Exclusive upper bucket of each variant's range, cumulative in declared order."""
    ends: list[int] = []
    total = 0
    for u in units:
        total += u
        ends.append(total)
    return tuple(ends)


def pick(ends: Sequence[int], b: int) -> int:
    """Index of the variant whose range holds bucket ``b`` (empty ranges never match)."""
    return bisect.bisect_right(ends, b)
