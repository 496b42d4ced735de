"""The latency histogram against exact statistics of known distributions."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import statistics

import pytest

from devrouter.observe.histogram import HIGHEST, RELATIVE_ERROR, SUMMARY_PERCENTILES, Histogram

PERCENTILES = (0.0, 1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 100.0)


def exact_percentile(sorted_values: list[int], p: float) -> int:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values) - 1e-9))
    return sorted_values[rank - 1]


def uniform(rng: random.Random, n: int) -> list[int]:
    return [rng.randint(0, 1_000_000) for _ in range(n)]


def exponential(rng: random.Random, n: int) -> list[int]:
    return [int(rng.expovariate(1 / 2_000)) for _ in range(n)]


def bimodal(rng: random.Random, n: int) -> list[int]:
    # A fast mode around 300 µs and a slow one around 80 ms, one request in ten.
    return [
        int(rng.gauss(80_000, 5_000)) if rng.random() < 0.1 else int(rng.gauss(300, 30))
        for _ in range(n)
    ]


@pytest.mark.parametrize("make", [uniform, exponential, bimodal])
def test_percentiles_are_within_the_stated_relative_error(make: object) -> None:
    rng = random.Random(7)
    values = make(rng, 50_000)  # type: ignore[operator]
    h = Histogram()
    for v in values:
        h.record(v)
    values.sort()
    got = h.percentiles(PERCENTILES)
    for p, value in zip(PERCENTILES, got, strict=True):
        exact = exact_percentile(values, p)
        assert exact <= value <= exact * (1 + RELATIVE_ERROR), (p, exact, value)
        assert h.percentile(p) == value
    assert h.count() == len(values)
    assert h.max() == values[-1]
    assert h.min() == values[0]
    assert h.mean() == pytest.approx(statistics.fmean(values), rel=1e-12)
    assert h.stdev() == pytest.approx(statistics.pstdev(values), rel=1e-9)


def test_small_values_are_exact() -> None:
    h = Histogram()
    for v in range(2048):
        h.record(v)
    assert h.percentile(50) == 1023
    assert h.percentile(100) == 2047
    assert [low for low, _, _ in h.buckets()] == list(range(2048))


def test_bimodal_summary_names_and_units() -> None:
    h = Histogram()
    for _ in range(900):
        h.record(1_000)  # 1 ms
    for _ in range(100):
        h.record(50_000)  # 50 ms
    s = h.summary()
    assert list(s) == [*SUMMARY_PERCENTILES, "max", "mean", "stdev"]
    assert s["p50"] == 1.0
    assert s["p90"] == 1.0
    assert s["p99"] == 50.0
    assert s["max"] == 50.0
    assert s["mean"] == pytest.approx(5.9)


def test_merge_equals_recording_everything_in_one() -> None:
    rng = random.Random(3)
    a, b, both = Histogram(), Histogram(), Histogram()
    for v in exponential(rng, 5_000):
        a.record(v)
        both.record(v)
    for v in bimodal(rng, 5_000):
        b.record(v)
        both.record(v)
    a.merge(b)
    assert a.to_dict() == both.to_dict()
    assert a.percentiles(PERCENTILES) == both.percentiles(PERCENTILES)
    empty = Histogram()
    empty.merge(Histogram())
    assert empty.count() == 0
    empty.merge(both)
    assert empty.to_dict() == both.to_dict()


def test_record_many_equals_recording_one_by_one() -> None:
    rng = random.Random(4)
    values = [*exponential(rng, 3_000), -5, 0, HIGHEST + 1, 7]
    one, many = Histogram(), Histogram()
    many.record_many([])
    assert many.count() == 0
    for v in values[:10]:  # a batch after single records, as the metrics do
        one.record(v)
        many.record(v)
    for v in values[10:]:
        one.record(v)
    many.record_many(values[10:])
    assert many.to_dict() == one.to_dict()
    assert (many.min(), many.max(), many.mean(), many.stdev()) == (
        one.min(),
        one.max(),
        one.mean(),
        one.stdev(),
    )


def test_dict_round_trip_through_json() -> None:
    h = Histogram()
    for v in (0, 5, 5, 70_000, 3_000_000, 123_456_789):
        h.record(v)
    h.record(42, count=10)
    data = json.loads(json.dumps(h.to_dict()))
    back = Histogram.from_dict(data)
    assert back.to_dict() == h.to_dict()
    assert back.percentiles(PERCENTILES) == h.percentiles(PERCENTILES)
    assert back.count() == 16


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"format": "other"},
        {"format": "hdr-loglinear-v1", "counts": [[10**9, 1]], "total": 1},
        {
            "format": "hdr-loglinear-v1",
            "counts": [[1, 2]],
            "total": 1,
            "sum": 2,
            "sumsq": 2,
            "min": 1,
            "max": 1,
        },
        {"format": "hdr-loglinear-v1", "counts": "x"},
    ],
)
def test_from_dict_rejects_malformed_input(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Histogram.from_dict(bad)


def test_out_of_range_values_are_clamped() -> None:
    h = Histogram()
    h.record(-5)
    h.record(HIGHEST * 10)
    assert h.min() == 0
    assert h.max() == HIGHEST
    assert h.percentile(100) == HIGHEST


def test_empty_histogram() -> None:
    h = Histogram()
    assert h.percentile(99) == 0
    assert h.mean() == 0.0
    assert h.stdev() == 0.0
    assert h.summary()["max"] == 0.0
    assert "Total count    =            0" in h.percentile_distribution()


_ROW = re.compile(r"^\s*([\d.]+)\s+([\d.]+)\s+(\d+)(?:\s+([\d.]+|inf))?$")
_FOOTER = re.compile(r"^#\[(\w+)\s*=\s*([\d.]+), (\w[\w ]*?)\s*=\s*([\d.]+)\]$")


def parse_hdr(text: str) -> tuple[list[tuple[float, float, int]], dict[str, float]]:
    """A reader as plotters (HdrHistogram's plotFiles) do it: a header, rows, a footer."""
    lines = text.splitlines()
    assert lines[0].split() == ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    assert lines[1] == ""
    rows: list[tuple[float, float, int]] = []
    footer: dict[str, float] = {}
    for line in lines[2:]:
        if line.startswith("#"):
            m = _FOOTER.match(line)
            assert m, line
            footer[m.group(1)] = float(m.group(2))
            footer[m.group(3)] = float(m.group(4))
            continue
        m = _ROW.match(line)
        assert m, line
        rows.append((float(m.group(1)), float(m.group(2)), int(m.group(3))))
    return rows, footer


def test_hdrhistogram_percentile_format_parses() -> None:
    rng = random.Random(11)
    values = exponential(rng, 20_000)
    h = Histogram()
    for v in values:
        h.record(v)
    rows, footer = parse_hdr(h.percentile_distribution())
    assert len(rows) > 20
    assert rows[0][1] == 0.0
    assert rows[-1][1] == 1.0
    assert rows[-1][2] == len(values)
    assert footer["Total count"] == len(values)
    assert footer["Max"] == pytest.approx(max(values) / 1000, abs=0.001)
    assert footer["Mean"] == pytest.approx(h.mean() / 1000, abs=0.001)
    assert footer["Buckets"] > 0 and footer["SubBuckets"] == 2048
    for (v1, p1, c1), (v2, p2, c2) in itertools.pairwise(rows):
        assert v1 <= v2 and p1 <= p2 and c1 <= c2
    # Each row's value is the histogram's value at that percentile.
    for value, fraction, _count in rows[:-1]:
        assert value == pytest.approx(h.percentile(fraction * 100) / 1000, abs=0.0011)


def test_hdrhistogram_format_of_a_single_value() -> None:
    h = Histogram()
    h.record(1_500)
    rows, footer = parse_hdr(h.percentile_distribution())
    assert rows[0] == (1.5, 0.0, 1)
    assert rows[-1] == (1.5, 1.0, 1)
    assert footer["Total count"] == 1
