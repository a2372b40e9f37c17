"""A mergeable quantile sketch with a relative-accuracy guarantee (DDSketch).

Mapping. With ``gamma = (1 + alpha) / (1 - alpha)``, a value ``x > min_indexable``
goes to bin ``i = ceil(log(x) / log(gamma))``, which holds the values in
``(gamma**(i-1), gamma**i]``. It is computed as ``ceil(log2(x) * (1 / log2(gamma)))``;
a port must use the same float expression to put boundary values in the same bins.
A quantile that falls in bin ``i`` is reported as ``2 * gamma**i / (gamma + 1)``,
within ``alpha`` relative error of every value in the bin, then clamped into
``[min, max]`` (which only brings it closer). Values ``<= min_indexable`` (zeros,
and anything too small to matter) are counted in a dedicated zero bucket and
reported as ``0.0`` clamped into ``[min, max]``.

The log is exact (``math.log2``), not DDSketch's interpolated log2: in CPython one
``math.log2`` call costs less than the ``math.frexp`` that an approximation starts
from, so the linear and cubic mappings are both slower here, and the linear one needs
1.44x the bins for the same guarantee (``bench/sketch.py`` measures them). ``log2``
rather than ``log``, which costs 2.4x as much (~60 ns against ~24): ``log`` takes an
optional base, so CPython parses its arguments the slow, general way.

Quantile semantics. ``quantile(q)`` estimates the value of rank ``floor(q * (n - 1))``
(0-based) in sorted order, the "lower" quantile; ``q = 0`` and ``q = 1`` give the exact
``min`` and ``max``.

Bounded bins. The bins are a dense list covering at most ``max_bins`` consecutive
indices. When a value would stretch the range past that, the lowest bins are folded
into the lowest bin that still fits, as DDSketch's collapsing-lowest store does: the
state is the same as if every value's index had been raised to
``max_index - max_bins + 1``. Only the lowest quantiles lose accuracy, and only when
the data spans more than ``gamma ** max_bins`` (about 6e17 at the defaults); the
upper quantiles keep the guarantee.

Merging is exact. The collapse rule depends only on the largest index seen, so the
state after any interleaving of inserts and merges is the state after inserting every
value into one sketch (same bins, count, min, max). The sum is kept as an integer
number of ``SUM_RESOLUTION`` units for the same reason: float addition is not
associative, and a merged sketch must equal the whole bit for bit. Each value counts
as its nearest number of units, ties to even (computed with float arithmetic: see
``_units``).

Cost. ``add`` does one ``log2``, one ``ceil``, one list store and a few compares.
``add_many`` checks a typical batch whole in C and bins it with neither checks nor
integer arithmetic per value: ~2.0k instructions a value against ~2.6k (callgrind). It
grows no container once the bins cover the values seen; a cleared sketch keeps its
bins' allocation, so a reused window slot does not allocate either. (CPython still
creates the transient float and int objects of the arithmetic, released in the same
call; and a count passing 256 leaves the small-int cache, one int object per bin.)
Values must be finite, non-negative and below ~1e296 (where the sum's scaling
overflows); anything else raises ValueError and records nothing.

Not thread-safe: one sketch per event loop, merged across processes with
``to_dict``/``from_dict``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from itertools import accumulate
from math import ceil, exp, floor, inf, isfinite, log, log2
from operator import add
from typing import Any, Self

__all__ = ["FORMAT_VERSION", "SUM_RESOLUTION", "DDSketch"]

FORMAT_VERSION = 1

# 2**-40 is ~0.9 picoseconds when values are seconds: far below anything measured,
# while a Python int never overflows however long the sum runs.
_SUM_SCALE = 2.0**40
SUM_RESOLUTION = 1.0 / _SUM_SCALE

# Spare bins allocated on each side when the range grows, so that a distribution
# widening one bin at a time does not reallocate on every new extreme.
_GROWTH_PAD = 16


# Values below this are rounded to SUM_RESOLUTION units by float arithmetic alone:
# ``(v + _EXACT) - _EXACT`` lands on a multiple of 2**-40 (the spacing of floats in
# [2**12, 2**13)), the nearest, ties to even; and sums of such multiples stay exact
# below 2 * _EXACT. Values at or above it are multiples of 2**-40 already.
_EXACT = 4096.0


def _units(value: float) -> int:
    """``value`` in SUM_RESOLUTION units: ``value * 2**40`` to the nearest integer,
    ties to even. Raises OverflowError for infinity or values past ~1.6e296."""
    if value < _EXACT:
        return floor(((value + _EXACT) - _EXACT) * _SUM_SCALE)
    return floor(value * _SUM_SCALE)


class DDSketch:
    """Quantiles of non-negative floats within ``alpha`` relative error; mergeable exactly."""

    __slots__ = (
        "_alpha",
        "_count",
        "_counts",
        "_gamma",
        "_log_gamma",
        "_max",
        "_max_bins",
        "_min",
        "_min_indexable",
        "_multiplier",
        "_n",
        "_offset",
        "_sum_units",
        "_value_factor",
        "_zero",
    )

    def __init__(
        self, alpha: float = 0.01, max_bins: int = 2048, min_indexable: float = 1e-9
    ) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        if isinstance(max_bins, bool) or not isinstance(max_bins, int) or max_bins < 1:
            raise ValueError(f"max_bins must be a positive int, got {max_bins!r}")
        if not (isfinite(min_indexable) and min_indexable > 0.0):
            raise ValueError(f"min_indexable must be positive and finite, got {min_indexable!r}")
        self._alpha = float(alpha)
        self._max_bins = max_bins
        self._min_indexable = float(min_indexable)
        self._gamma = (1.0 + self._alpha) / (1.0 - self._alpha)
        self._log_gamma = log(self._gamma)
        self._multiplier = 1.0 / log2(self._gamma)
        self._value_factor = 2.0 / (1.0 + self._gamma)
        # counts[j] is bin offset + j; n == len(counts) <= max_bins always, which is what
        # lets add() write anywhere inside the list without checking the collapse rule.
        self._counts: list[int] = []
        self._offset = 0
        self._n = 0
        self._count = 0
        self._zero = 0
        self._sum_units = 0
        self._min = inf
        self._max = -inf

    # -- recording -------------------------------------------------------------------

    def add(self, value: float) -> None:
        """Record one value (>= 0, finite). Raises ValueError otherwise, recording nothing."""
        if value > self._min_indexable:
            try:
                j = ceil(log2(value) * self._multiplier) - self._offset
                units = _units(value)
            except OverflowError:
                raise ValueError(f"value must be finite and < 1e296, got {value!r}") from None
            if 0 <= j < self._n:
                self._counts[j] += 1
            else:
                self._add_outside(j + self._offset)
        elif value >= 0.0:
            self._zero += 1
            units = _units(value)
        else:
            raise ValueError(f"value must be a non-negative number, got {value!r}")
        self._count += 1
        self._sum_units += units
        # Compares, not min()/max(): a builtin call costs ~40 ns each on this path.
        if value < self._min:  # noqa: PLR1730
            self._min = value
        if value > self._max:  # noqa: PLR1730
            self._max = value

    def add_many(self, values: Iterable[float]) -> None:
        """``add`` each value, in one call: for a batch (``metrics.Registry.fold``), the
        sketch's fields are read and written once. A value ``add`` refuses raises the
        same error, after the values before it were recorded.

        A batch above ``min_indexable``, of a total below ``_EXACT`` (4096), whose bins
        are allocated (nearly every batch of times in seconds, once a sketch has seen
        their range) is checked whole by C-level ``min``/``sum``/``max`` and then
        binned with no per-value checks, its sum kept in a float (exact, see
        ``_units``). Any other goes value by value (``_add_each``)."""
        if type(values) is not list:
            values = list(values)
        if not values:
            return
        lo = min(values)
        # sum() is NaN or infinite if a value is (min() and max() can skip a NaN); and a
        # total below _EXACT keeps the rounded sum below 2 * _EXACT, exact (see _units).
        if lo > self._min_indexable and sum(values) < _EXACT:
            hi = max(values)
            multiplier, offset = self._multiplier, self._offset
            if (
                ceil(log2(lo) * multiplier) >= offset
                and ceil(log2(hi) * multiplier) - offset < self._n
            ):
                counts = self._counts
                acc = 0.0
                for value in values:
                    counts[ceil(log2(value) * multiplier) - offset] += 1
                    acc += (value + _EXACT) - _EXACT
                self._count += len(values)
                self._sum_units += floor(acc * _SUM_SCALE)
                if lo < self._min:  # noqa: PLR1730
                    self._min = lo
                if hi > self._max:  # noqa: PLR1730
                    self._max = hi
                return
        self._add_each(values)

    def _add_each(self, values: list[float]) -> None:
        """``add_many`` one checked value at a time: a batch with a zero, a value out
        of the allocated bins, or a value ``add`` refuses."""
        multiplier, min_indexable = self._multiplier, self._min_indexable
        counts, offset, n = self._counts, self._offset, self._n
        count = zero = units = 0
        lo, hi = self._min, self._max
        try:
            for value in values:
                if value > min_indexable:
                    j = ceil(log2(value) * multiplier) - offset
                    # _units, inline: a call less per value
                    u = floor(
                        ((value + _EXACT) - _EXACT) * _SUM_SCALE
                        if value < _EXACT
                        else value * _SUM_SCALE
                    )
                    if 0 <= j < n:
                        counts[j] += 1
                    else:
                        # The store must be up to date for the reshape, as in add().
                        self._count += count
                        self._zero += zero
                        count = zero = 0
                        self._add_outside(j + offset)
                        counts, offset, n = self._counts, self._offset, self._n
                elif value >= 0.0:
                    zero += 1
                    u = _units(value)
                else:
                    raise ValueError(f"value must be a non-negative number, got {value!r}")
                count += 1
                units += u
                if value < lo:  # noqa: PLR1730
                    lo = value
                if value > hi:  # noqa: PLR1730
                    hi = value
        except OverflowError:
            raise ValueError(f"value must be finite and < 1e296, got {value!r}") from None
        finally:
            self._count += count
            self._zero += zero
            self._sum_units += units
            self._min, self._max = lo, hi

    def _add_outside(self, index: int) -> None:
        # Called before _count is incremented, so _store_empty() describes the old state.
        if self._store_empty():
            lo = hi = index
        else:
            lo, hi = self._used_range()
            lo = min(lo, index)
            hi = max(hi, index)
        floor_index = hi - self._max_bins + 1
        if index < floor_index and self._offset <= floor_index:
            # Already at full width: the value folds into the lowest bin, no reallocation.
            self._counts[floor_index - self._offset] += 1
            return
        floor_index = self._reshape(lo, hi)
        self._counts[max(index, floor_index) - self._offset] += 1

    def merge(self, other: DDSketch) -> None:
        """Add ``other``'s values to this sketch; same parameters required (ValueError)."""
        if not isinstance(other, DDSketch):
            raise TypeError(f"cannot merge {type(other).__name__} into DDSketch")
        if self.parameters != other.parameters:
            raise ValueError(
                f"cannot merge sketches with different parameters: "
                f"{self.parameters} vs {other.parameters}"
            )
        if other._count == 0:
            return
        if other is self:
            other = other.copy()
        if not other._store_empty():
            lo, hi = other._used_range()
            self._merge_bins(lo, other._counts[lo - other._offset : hi - other._offset + 1])
        self._count += other._count
        self._zero += other._zero
        self._sum_units += other._sum_units
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def _merge_bins(self, lo: int, bins: list[int]) -> None:
        hi = lo + len(bins) - 1
        start = lo - self._offset
        if start >= 0 and hi - self._offset < self._n:
            # Inside the allocation: no collapse can be needed (see the invariant on n).
            self._counts[start : start + len(bins)] = map(add, self._counts[start:], bins)
            return
        if self._store_empty():
            floor_index = self._reshape(lo, hi)
        else:
            own_lo, own_hi = self._used_range()
            floor_index = self._reshape(min(lo, own_lo), max(hi, own_hi))
        counts = self._counts
        # Bins below the floor fold into it (possibly all of them), the rest add in place.
        skip = min(max(0, floor_index - lo), len(bins))
        if skip < len(bins):
            start = lo + skip - self._offset
            counts[start : start + len(bins) - skip] = map(add, counts[start:], bins[skip:])
        counts[floor_index - self._offset] += sum(bins[:skip])

    def _reshape(self, lo: int, hi: int) -> int:
        """Reallocate to cover [lo, hi] (``hi`` the new top), folding what falls below the
        collapse floor; returns the lowest index kept, where lower values now belong."""
        floor_index = max(lo, hi - self._max_bins + 1)
        used = hi - floor_index + 1
        pad_hi = min(_GROWTH_PAD, self._max_bins - used)
        pad_lo = min(_GROWTH_PAD, self._max_bins - used - pad_hi)
        offset = floor_index - pad_lo
        counts = [0] * (used + pad_lo + pad_hi)
        if not self._store_empty():
            old_lo, old_hi = self._used_range()
            old = self._counts
            base = self._offset
            below = 0
            if old_lo < floor_index:
                below = sum(old[old_lo - base : floor_index - base])
                old_lo = floor_index
            if old_lo <= old_hi:
                start = old_lo - offset
                counts[start : start + old_hi - old_lo + 1] = old[old_lo - base : old_hi - base + 1]
            counts[floor_index - offset] += below
        self._counts = counts
        self._offset = offset
        self._n = len(counts)
        return floor_index

    def _store_empty(self) -> bool:
        return self._count == self._zero

    def _used_range(self) -> tuple[int, int]:
        """Lowest and highest non-empty bin indices; the store must not be empty."""
        counts = self._counts
        first = 0
        while not counts[first]:
            first += 1
        last = self._n - 1
        while not counts[last]:
            last -= 1
        return first + self._offset, last + self._offset

    def clear(self) -> None:
        """Forget every value; keeps the bins' allocation so that reuse does not allocate."""
        if self._count != self._zero:
            self._counts[:] = [0] * self._n
        self._count = 0
        self._zero = 0
        self._sum_units = 0
        self._min = inf
        self._max = -inf

    def copy(self) -> DDSketch:
        new = DDSketch.__new__(DDSketch)
        for name in DDSketch.__slots__:
            setattr(new, name, getattr(self, name))
        new._counts = self._counts.copy()
        return new

    # -- reading ---------------------------------------------------------------------

    def quantile(self, q: float) -> float | None:
        """Estimate of the value of rank ``floor(q * (count - 1))``; None when empty."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Iterable[float]) -> list[float | None]:
        """Several quantiles for the cost of one scan of the bins."""
        qs = list(qs)
        for q in qs:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantile must be in [0, 1], got {q!r}")
        n = self._count
        if n == 0:
            return [None] * len(qs)
        cumulative: list[int] | None = None
        out: list[float | None] = []
        for q in qs:
            rank = q * (n - 1)
            if rank <= 0.0:
                out.append(float(self._min))
                continue
            if rank >= n - 1:
                out.append(float(self._max))
                continue
            if rank < self._zero:
                estimate = 0.0
            else:
                if cumulative is None:
                    cumulative = list(accumulate(self._counts))
                # First bin whose running count exceeds the rank: it holds that element.
                j = bisect_right(cumulative, rank - self._zero)
                estimate = exp((j + self._offset) * self._log_gamma) * self._value_factor
            out.append(float(min(max(estimate, self._min), self._max)))
        return out

    @property
    def count(self) -> int:
        return self._count

    @property
    def zero_count(self) -> int:
        """Values at or below ``min_indexable``."""
        return self._zero

    @property
    def sum(self) -> float:
        """Sum of the values, each truncated to a multiple of ``SUM_RESOLUTION``."""
        return self._sum_units * SUM_RESOLUTION

    @property
    def mean(self) -> float | None:
        return self.sum / self._count if self._count else None

    @property
    def min(self) -> float | None:
        return float(self._min) if self._count else None

    @property
    def max(self) -> float | None:
        return float(self._max) if self._count else None

    @property
    def alpha(self) -> float:
        return self._alpha

    @property
    def max_bins(self) -> int:
        return self._max_bins

    @property
    def min_indexable(self) -> float:
        return self._min_indexable

    @property
    def parameters(self) -> tuple[float, int, float]:
        """(alpha, max_bins, min_indexable): sketches merge only when these are equal."""
        return (self._alpha, self._max_bins, self._min_indexable)

    @property
    def bin_count(self) -> int:
        """Bins allocated (the memory held), at most ``max_bins``."""
        return self._n

    @property
    def used_bin_count(self) -> int:
        """Bins from the lowest to the highest non-empty one."""
        if self._store_empty():
            return 0
        lo, hi = self._used_range()
        return hi - lo + 1

    def __repr__(self) -> str:
        return (
            f"DDSketch(alpha={self._alpha}, count={self._count}, "
            f"min={self.min}, max={self.max}, bins={self.used_bin_count})"
        )

    # -- shipping between processes -----------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot; equal for equal contents, whatever the history.

        ``sum`` is a decimal string of ``SUM_RESOLUTION`` units: it outgrows 64 bits,
        which some JSON libraries (orjson) refuse as a number.
        """
        if self._store_empty():
            offset, bins = 0, []
        else:
            lo, hi = self._used_range()
            offset, bins = lo, self._counts[lo - self._offset : hi - self._offset + 1]
        return {
            "v": FORMAT_VERSION,
            "alpha": self._alpha,
            "max_bins": self._max_bins,
            "min_indexable": self._min_indexable,
            "count": self._count,
            "zero": self._zero,
            "sum": str(self._sum_units),
            "min": self.min,
            "max": self.max,
            "offset": offset,
            "bins": bins,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Rebuild a sketch from ``to_dict()``; ValueError when the data is inconsistent."""
        try:
            if data["v"] != FORMAT_VERSION:
                raise ValueError(f"unsupported sketch format version {data['v']!r}")
            sketch = cls(data["alpha"], data["max_bins"], data["min_indexable"])
            count = _nonneg_int(data["count"], "count")
            zero = _nonneg_int(data["zero"], "zero")
            if not isinstance(data["sum"], str):
                raise TypeError("sum must be a decimal string")
            sum_units = int(data["sum"])
            offset = data["offset"]
            bins = [_nonneg_int(c, "bins") for c in data["bins"]]
            lo, hi = data["min"], data["max"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed sketch: {exc!r}") from None
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise ValueError("malformed sketch: offset must be an int")
        if len(bins) > sketch._max_bins:
            raise ValueError("malformed sketch: more bins than max_bins")
        if zero + sum(bins) != count or sum_units < 0:
            raise ValueError("malformed sketch: counts do not add up")
        if count:
            if not all(isinstance(v, int | float) and isfinite(v) for v in (lo, hi)):
                raise ValueError("malformed sketch: min and max must be finite numbers")
            if not 0.0 <= lo <= hi:
                raise ValueError("malformed sketch: needs 0 <= min <= max")
            sketch._min = float(lo)
            sketch._max = float(hi)
        sketch._counts = bins
        sketch._n = len(bins)
        sketch._offset = offset
        sketch._count = count
        sketch._zero = zero
        sketch._sum_units = sum_units
        if bins and (not bins[0] or not bins[-1]):
            raise ValueError("malformed sketch: bins must start and end non-empty")
        return sketch


def _nonneg_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"malformed sketch: {what} must hold non-negative ints")
    return value
