"""Percentiles of timed calls: linear interpolation between the two nearest ranks (numpy's default)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) of `values`; NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float], percentiles: Sequence[int] = (50, 95)) -> dict[str, Any]:
    """p50/p95 (or those asked), mean, min, max and the count of a list of timings (None for each figure of an empty
    list: JSON has no NaN)."""
    if not values:
        return {**{f"p{q}": None for q in percentiles}, "mean": None, "min": None, "max": None, "n": 0}
    found: dict[str, Any] = {f"p{q}": percentile(values, q) for q in percentiles}
    found.update(mean=statistics.fmean(values), min=min(values), max=max(values), n=len(values))
    return found
