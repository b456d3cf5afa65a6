"""Choosing a surrogate's input features by cross-validated rank correlation.

BOSHNAS's surrogate can see a library row as its Transformer2vec embedding (the paper's), as
one-hot codes of its readable per-layer parameters, or both. Which ranks a table best depends on
the table: on the FlexiBERT-small SST-2 table the embedding alone ranks scores poorly, on
another task it may not. :func:`choose_features` decides from the loop's own observations: for
each candidate feature set it fits a Gaussian process (an RBF kernel on standardised features,
with a length scale chosen by leave-one-out likelihood) on the observed rows and scores the
leave-one-out predictions by Spearman's rank correlation with the observed performance. A GP's
leave-one-out means come in closed form from one fit (Rasmussen and Williams, eq. 5.12), so a
choice among three feature sets costs three small GP fits, well under the surrogate's own fit.

What counts is ranking, not error: the search needs the best rows first, so a rank correlation
is the yardstick.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import scipy.stats


@dataclasses.dataclass(frozen=True)
class FeatureChoice:
    """The feature set chosen and every candidate's leave-one-out Spearman correlation."""

    kind: str
    scores: dict[str, float]


#: Noise variance of the GP on normalised targets, and its candidate length scales (times the
#: median distance between observed rows).
NOISE = 0.1
LENGTH_SCALES = (0.25, 0.5, 1.0, 2.0)


def loo_spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho between ``y`` and a GP's leave-one-out predictions of it from ``x``.

    Columns of ``x`` are standardised (constant columns dropped) and ``y`` normalised; the GP
    has an RBF kernel with noise variance ``NOISE`` and the length scale, among
    ``LENGTH_SCALES`` times the median distance between the rows, with the best leave-one-out
    log likelihood. Returns -1 when the correlation is undefined (constant predictions), so
    such a feature set is never chosen.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    std = x.std(axis=0)
    keep = std > 1e-12
    if not keep.any() or np.ptp(y) == 0 or len(y) < 3:
        return -1.0
    z = (x[:, keep] - x[:, keep].mean(axis=0)) / std[keep]
    yn = (y - y.mean()) / y.std()
    sq = np.sum((z[:, None, :] - z[None, :, :]) ** 2, axis=-1)
    median = float(np.sqrt(np.median(sq[np.triu_indices(len(z), 1)]))) or 1.0
    best: tuple[float, np.ndarray] | None = None
    for factor in LENGTH_SCALES:
        k = np.exp(-sq / (2 * (factor * median) ** 2)) + NOISE * np.eye(len(z))
        k_inv = np.linalg.inv(k)
        alpha, diag = k_inv @ yn, np.diag(k_inv)
        loo = yn - alpha / diag  # Rasmussen and Williams, eq. 5.12
        log_lik = float(np.sum(0.5 * np.log(diag) - 0.5 * alpha**2 / diag))
        if best is None or log_lik > best[0]:
            best = (log_lik, loo)
    assert best is not None
    loo = best[1]
    if np.ptp(loo) == 0:
        return -1.0
    rho = scipy.stats.spearmanr(loo, yn).statistic
    return float(rho) if np.isfinite(rho) else -1.0


def choose_features(
    candidates: Mapping[str, np.ndarray], rows: np.ndarray, performance: np.ndarray
) -> FeatureChoice:
    """The candidate whose features rank the observed ``performance`` best (leave-one-out).

    Args:
        candidates: Feature-set name -> library features ``(N, d)``, in order of preference
            (a tie goes to the earlier one).
        rows: Observed library rows.
        performance: Their performance (higher is better), same order.
    """
    from threadpoolctl import threadpool_limits

    if not candidates:
        raise ValueError("no candidate feature sets to choose from")
    with threadpool_limits(1):  # small matrices: threads only contend (up to 20x slower under load)
        scores = {
            name: loo_spearman(np.asarray(features)[rows], performance)
            for name, features in candidates.items()
        }
    best = max(scores, key=lambda name: scores[name])  # the first of equals
    return FeatureChoice(best, scores)
