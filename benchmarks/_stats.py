"""Small statistics the benchmarks share."""

from __future__ import annotations

import math
import statistics


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its two-sided Student-t interval (0 for a single value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    from scipy.stats import t

    q = float(t.ppf(0.5 + confidence / 2, len(values) - 1))
    return mean, q * statistics.stdev(values) / math.sqrt(len(values))
