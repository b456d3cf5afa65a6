"""The statistics of ``archsearch replay``: targets, evaluations to reach them, regret.

* The *targets* of the top k% are the rows at least as good as the k-th best score (k =
  ``ceil(k% x rows)``, at least 1): every row tied with the k-th best is a target too, so a
  search that finds one of them has reached the top k%.
* A search's *evaluations to the top k%* is the number of distinct rows it evaluated until the
  first target (a search that never reaches one counts ``evals + 1``, so a median with more
  than half failing is a lower bound).
* Random search's median is known exactly (uniform draws without replacement, every target
  counted): :func:`random_search_median`.
* Intervals are percentile-bootstrap intervals of the median over seeds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


@dataclasses.dataclass
class Run:
    """One search: the best score after each distinct evaluation.

    Attributes:
        loop: The loop's name (``name@label`` for a labelled variant).
        seed: Its seed.
        best: The best score found after each evaluation (in the table's units).
        asks: Suggestions asked (repeats included).
        seconds: Wall-clock seconds of the search.
        evaluated: The row key of each evaluation, in order (what each one cost).
    """

    loop: str
    seed: int
    best: list[float] = dataclasses.field(default_factory=list)
    asks: int = 0
    seconds: float = 0.0
    direction: str = "maximize"
    evaluated: list[str] = dataclasses.field(default_factory=list)

    def reached(self, score: float, threshold: float) -> bool:
        return score >= threshold if self.direction == "maximize" else score <= threshold

    def evals_to(self, threshold: float) -> int | None:
        """Evaluations until the best reached ``threshold``; None when it never did."""
        for i, b in enumerate(self.best):
            if self.reached(b, threshold):
                return i + 1
        return None


@dataclasses.dataclass(frozen=True)
class Targets:
    """The top k% of a table: the threshold score, k, and how many rows reach it (ties)."""

    threshold: float
    k: int
    count: int
    best: float
    rows: int


def top_targets(scores: Sequence[float], top_percent: float, direction: str) -> Targets:
    """The targets of the top ``top_percent`` % of ``scores`` (see the module docstring)."""
    arr = np.asarray(scores, dtype=float)
    if not len(arr):
        raise ValueError("no scores")
    good = arr if direction == "maximize" else -arr
    k = max(1, math.ceil(top_percent / 100 * len(arr)))
    k = min(k, len(arr))
    threshold_good = float(np.sort(good)[-k])
    count = int((good >= threshold_good).sum())
    sign = 1.0 if direction == "maximize" else -1.0
    return Targets(sign * threshold_good, k, count, sign * float(good.max()), len(arr))


def random_search_median(n_rows: int, n_top: int, evals: int) -> int:
    """The exact median evaluations to a target for uniform random search without
    replacement (a distinct row per evaluation), with ``n_top`` targets among ``n_rows``.

    The first hit is after ``n`` evaluations or fewer with probability
    ``1 - C(n_rows - n_top, n) / C(n_rows, n)``; the median is the smallest ``n`` where that
    reaches 1/2 (``evals + 1`` when it does not within ``evals``, as for a failed seed).
    """
    for n in range(1, min(evals, n_rows) + 1):
        if 1 - math.comb(n_rows - n_top, n) / math.comb(n_rows, n) >= 0.5:
            return n
    return evals + 1


def median_interval(
    counts: Sequence[float], level: float = 0.9, draws: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """A percentile-bootstrap interval for the median of ``counts`` (seeds resampled; a single
    run is its own interval)."""
    import scipy.stats

    data = np.asarray(counts, dtype=float)
    if len(data) < 2 or np.all(data == data[0]):
        return float(data[0]), float(data[0])
    ci = scipy.stats.bootstrap(
        (data,),
        np.median,
        confidence_level=level,
        n_resamples=draws,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return float(ci.low), float(ci.high)


def summarise(
    runs: Sequence[Run], targets: Targets, evals: int, checkpoints: Sequence[int]
) -> dict[str, Any]:
    """Median evaluations to the targets with its interval, seeds that reached them, the
    median regret (distance from the table's best to the best found) at each checkpoint."""
    hits = [r.evals_to(targets.threshold) for r in runs]
    counted = [h if h is not None else evals + 1 for h in hits]
    regrets = {}
    for c in checkpoints:
        vals = [abs(targets.best - r.best[min(c, len(r.best)) - 1]) for r in runs if r.best]
        regrets[c] = float(np.median(vals)) if vals else float("nan")
    # Half the seeds or more never reached the target: the median is not known, only that it
    # is past the budget (the mean of a hit and the "budget + 1" placeholder is no count).
    ordered = sorted(counted)
    censored = ordered[len(ordered) // 2] > evals if ordered else False
    return {
        "median_evals": float(evals + 1) if censored else float(np.median(counted)),
        "interval": median_interval(counted),
        "reached": sum(h is not None for h in hits),
        "n": len(runs),
        "regret": regrets,
        "seconds": float(np.mean([r.seconds for r in runs])),
        "asks": float(np.mean([r.asks for r in runs])),
    }


def regret_plot(
    all_runs: Mapping[str, Sequence[Run]], best: float, evals: int, path: Path, title: str
) -> None:
    """Median regret vs distinct evaluations per loop, with quartile bands, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.arange(1, evals + 1)
    for name, runs in all_runs.items():
        curves = []
        for r in runs:
            if not r.best:  # the loop proposed nothing
                continue
            b = np.array(r.best + [r.best[-1]] * (evals - len(r.best)))[:evals]
            curves.append(np.abs(best - b))
        if not curves:
            continue
        arr = np.array(curves)
        ax.plot(x[: arr.shape[1]], np.median(arr, axis=0), label=f"{name} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(
                x[: arr.shape[1]],
                np.percentile(arr, 25, axis=0),
                np.percentile(arr, 75, axis=0),
                alpha=0.15,
            )
    ax.set_xlabel("distinct evaluations")
    ax.set_ylabel("regret (|best in table - best found|)")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
