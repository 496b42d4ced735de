"""A fixed-memory latency histogram, after Gil Tene's HdrHistogram.

Theory of operation: values are non-negative integers (microseconds, by convention) in the
range 0 to `HIGHEST` (one hour). The range is cut into power-of-two *buckets*, and each
bucket into `SUB_BUCKETS` equal-width *sub-buckets*: values below 2048 are counted exactly,
values from 2048 to 4095 in steps of 2, 4096 to 8191 in steps of 4, and so on. So a count
stands for an interval whose width is at most 1/1024 of its lowest value, and every
statistic read back from the histogram is within `RELATIVE_ERROR` (0.098 %) of the exact
one, whatever the distribution. The counts live in one flat array of 23,552 integers
(about 184 KiB), allocated once: recording is a shift, an add and an index, and memory does
not grow with the number of values.

Indexing follows HdrHistogram with a unit magnitude of 0: for a value v, the bucket is
`b = max(0, bit_length(v) - 11)` and the sub-bucket is `v >> b`, which lies in 1024..2047
for every bucket but the first. Bucket 0 uses the whole sub-bucket range 0..2047; later
buckets only its upper half, since their lower half is the previous bucket at finer steps.

The count, exact minimum and maximum, and the sums of values and of their squares are kept
beside the counts, so `mean()`, `stdev()` and `max()` are exact and a merge is exact.
Percentiles use the nearest-rank definition (the smallest recorded value with at least p %
of the values at or below it) and report the highest value equivalent to its sub-bucket,
capped at the exact maximum, as HdrHistogram does.

Histograms cross process boundaries with `to_dict()` / `from_dict()` (a sparse, JSON-safe
form), and `percentile_distribution()` writes HdrHistogram's text format, which plotting
tools such as HdrHistogram's own plotter read. No I/O happens here.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

#: Significant decimal digits kept; decides SUB_BUCKETS.
SIGNIFICANT_DIGITS = 3
#: Sub-buckets per bucket: the smallest power of two >= 2 * 10**SIGNIFICANT_DIGITS.
SUB_BUCKETS = 2048
_HALF_MAGNITUDE = 10  # log2(SUB_BUCKETS) - 1
_HALF = SUB_BUCKETS // 2
_MASK = SUB_BUCKETS - 1
#: The largest value kept exactly enough; larger values are counted as HIGHEST.
HIGHEST = 3_600_000_000  # one hour in microseconds
#: Upper bound on |reported - exact| / exact for any percentile.
RELATIVE_ERROR = 1 / _HALF
_BUCKETS = (HIGHEST | _MASK).bit_length() - _HALF_MAGNITUDE  # 22
_LENGTH = (_BUCKETS + 1) * _HALF
#: The percentiles `summary()` reports, by name.
SUMMARY_PERCENTILES: Mapping[str, float] = {
    "p50": 50.0,
    "p75": 75.0,
    "p90": 90.0,
    "p99": 99.0,
    "p999": 99.9,
}
_FORMAT = "hdr-loglinear-v1"


def _lowest(index: int) -> int:
    """The lowest value counted at `index`."""
    bucket = (index >> _HALF_MAGNITUDE) - 1
    sub = (index & (_HALF - 1)) + _HALF
    if bucket < 0:
        sub -= _HALF
        bucket = 0
    return sub << bucket


def _width(index: int) -> int:
    return 1 << max(0, (index >> _HALF_MAGNITUDE) - 1)


class Histogram:
    """Counts of integer values (microseconds by convention) with bounded relative error."""

    __slots__ = ("_counts", "_max", "_min", "_sum", "_sumsq", "_total")

    def __init__(self) -> None:
        self._counts = array("q", bytes(8 * _LENGTH))
        self._total = 0
        self._sum = 0
        self._sumsq = 0
        self._min = 0
        self._max = 0

    # --- recording ------------------------------------------------------------------------

    def record(self, value: int, count: int = 1) -> None:
        """Count `value` (clamped to 0..HIGHEST) `count` times."""
        if value < 0:
            value = 0
        elif value > HIGHEST:
            value = HIGHEST
        bucket = (value | _MASK).bit_length() - _HALF_MAGNITUDE - 1
        self._counts[((bucket + 1) << _HALF_MAGNITUDE) + (value >> bucket) - _HALF] += count
        if self._total == 0 or value < self._min:
            self._min = value
        if value > self._max:
            self._max = value
        self._total += count
        self._sum += value * count
        self._sumsq += value * value * count

    def record_many(self, values: list[int]) -> None:
        """Count each of `values` once: `record` in one loop, for a batch (the metrics
        count the fast path's exchanges this way)."""
        counts = self._counts
        total, low, high = self._total, self._min, self._max
        total_sum, total_sumsq = self._sum, self._sumsq
        for value in values:
            if value < 0:
                value = 0
            elif value > HIGHEST:
                value = HIGHEST
            bucket = (value | _MASK).bit_length() - _HALF_MAGNITUDE - 1
            counts[((bucket + 1) << _HALF_MAGNITUDE) + (value >> bucket) - _HALF] += 1
            if total == 0 or value < low:
                low = value
            if value > high:
                high = value
            total += 1
            total_sum += value
            total_sumsq += value * value
        self._total, self._min, self._max = total, low, high
        self._sum, self._sumsq = total_sum, total_sumsq

    def merge(self, other: Histogram) -> None:
        """Add every count of `other` to this histogram."""
        if other._total == 0:
            return
        counts = self._counts
        for i, c in enumerate(other._counts):
            if c:
                counts[i] += c
        self._min = other._min if self._total == 0 else min(self._min, other._min)
        self._max = max(self._max, other._max)
        self._total += other._total
        self._sum += other._sum
        self._sumsq += other._sumsq

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    # --- reading --------------------------------------------------------------------------

    def count(self) -> int:
        return self._total

    def min(self) -> int:
        return self._min

    def max(self) -> int:
        return self._max

    def mean(self) -> float:
        return self._sum / self._total if self._total else 0.0

    def stdev(self) -> float:
        """Population standard deviation."""
        if not self._total:
            return 0.0
        mean = self._sum / self._total
        return math.sqrt(max(0.0, self._sumsq / self._total - mean * mean))

    def percentile(self, p: float) -> int:
        """The nearest-rank `p`-th percentile (0 <= p <= 100), within RELATIVE_ERROR."""
        return self.percentiles([p])[0]

    def percentiles(self, ps: Sequence[float]) -> list[int]:
        """Several percentiles in one pass over the counts."""
        if not self._total:
            return [0] * len(ps)
        # The epsilon keeps 99.9 % of 1000 values at rank 999, whatever the float rounding.
        ranks = [
            max(1, math.ceil(min(max(p, 0.0), 100.0) / 100.0 * self._total - 1e-9)) for p in ps
        ]
        order = sorted(range(len(ps)), key=ranks.__getitem__)
        out = [self._max] * len(ps)
        k = 0
        seen = 0
        for i, c in enumerate(self._counts):
            if c:
                seen += c
                while k < len(order) and seen >= ranks[order[k]]:
                    out[order[k]] = self._reported(i)
                    k += 1
                if k == len(order):
                    break
        return out

    def _reported(self, index: int) -> int:
        """The value reported for a sub-bucket: its highest, within the exact min and max."""
        return max(self._min, min(_lowest(index) + _width(index) - 1, self._max))

    def buckets(self) -> Iterator[tuple[int, int, int]]:
        """(lowest value, highest value, count) for each non-empty sub-bucket, ascending."""
        for i, c in enumerate(self._counts):
            if c:
                low = _lowest(i)
                yield low, low + _width(i) - 1, c

    def summary(self, scale: float = 1e-3) -> dict[str, float]:
        """p50 .. p999, max, mean and stdev, each multiplied by `scale` (µs to ms by default)."""
        values = self.percentiles(list(SUMMARY_PERCENTILES.values()))
        out = {name: v * scale for name, v in zip(SUMMARY_PERCENTILES, values, strict=True)}
        out["max"] = self._max * scale
        out["mean"] = self.mean() * scale
        out["stdev"] = self.stdev() * scale
        return out

    # --- serialisation --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form: the non-empty counts as [index, count] pairs."""
        return {
            "format": _FORMAT,
            "counts": [[i, c] for i, c in enumerate(self._counts) if c],
            "total": self._total,
            "sum": self._sum,
            "sumsq": self._sumsq,
            "min": self._min,
            "max": self._max,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        """The inverse of `to_dict`; raises ValueError on anything else."""
        if data.get("format") != _FORMAT:
            raise ValueError(f"not a {_FORMAT} histogram")
        h = cls()
        try:
            for i, c in data["counts"]:
                if not 0 <= int(i) < _LENGTH or int(c) < 0:
                    raise ValueError(f"bad histogram entry {[i, c]!r}")
                h._counts[int(i)] += int(c)
            h._total = int(data["total"])
            h._sum = int(data["sum"])
            h._sumsq = int(data["sumsq"])
            h._min = int(data["min"])
            h._max = int(data["max"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed histogram: {exc}") from None
        if sum(h._counts) != h._total:
            raise ValueError("histogram counts do not add up to its total")
        return h

    def percentile_distribution(self, scale: float = 1e-3, ticks_per_half_distance: int = 5) -> str:
        """HdrHistogram's `outputPercentileDistribution` text, values multiplied by `scale`
        (µs to ms by default).

        Rows follow HdrHistogram's percentile iterator: `ticks_per_half_distance` rows each
        time the distance to 100 % halves, then a last row at 100 %.
        """
        rows: list[str] = [
            f"{'Value':>12} {'Percentile':>14} {'TotalCount':>10} {'1/(1-Percentile)':>14}",
            "",
        ]
        total = self._total
        if total:
            level = 0.0
            value = 0
            for index, _count, seen in self._cumulative():
                value = self._reported(index)
                current = 100.0 * seen / total
                while level <= current:
                    fraction = level / 100.0
                    rows.append(
                        f"{value * scale:12.3f} {fraction:14.12f} {seen:10d} "
                        f"{1.0 / (1.0 - fraction):14.2f}"
                    )
                    halvings = int(math.log2(100.0 / (100.0 - level))) + 1
                    level += 100.0 / (ticks_per_half_distance * (1 << halvings))
                    if seen >= total:
                        break
            rows.append(f"{value * scale:12.3f} {1.0:14.12f} {total:10d}")
        mean, stdev = self.mean() * scale, self.stdev() * scale
        rows.append(f"#[Mean    = {mean:12.3f}, StdDeviation   = {stdev:12.3f}]")
        rows.append(f"#[Max     = {self._max * scale:12.3f}, Total count    = {total:12d}]")
        rows.append(f"#[Buckets = {_BUCKETS:12d}, SubBuckets     = {SUB_BUCKETS:12d}]")
        return "\n".join(rows) + "\n"

    def _cumulative(self) -> list[tuple[int, int, int]]:
        out: list[tuple[int, int, int]] = []
        seen = 0
        for i, c in enumerate(self._counts):
            if c:
                seen += c
                out.append((i, c, seen))
        return out

    def __repr__(self) -> str:
        return f"<Histogram count={self._total} max={self._max}>"


__all__ = ["HIGHEST", "RELATIVE_ERROR", "SUMMARY_PERCENTILES", "Histogram"]
