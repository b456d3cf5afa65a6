"""The best trials of a study: the one best (one objective) or the Pareto front (several),
among trials whose values were measured, each result once.

Optuna's ``best_trials`` counts every COMPLETE trial; here a repeated candidate (``duplicate_of``:
it carries an earlier trial's result, which stands for it) and a DyLoRA training trial and its
rank trial at r_max (the same values) are one result each, and an AutoDistil job's ±inf or a
student's proxy scores are never the study's best. Optuna's
``best_trial``/``best_trials`` cannot leave trials out, so ``StudyManager.best_trials`` takes
Optuna's answer when it holds none to leave out, and :func:`best_of` only otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import optuna
from optuna.trial import FrozenTrial

from archsearch.server._derived_trials import has_measured_values
from archsearch.server._rank_trials import RANK_OF_ATTR

#: Trial user attribute of a repeated candidate: the number of the trial whose result it carries
#: (``server/_candidate_store.py``).
REPEAT_OF_ATTR = "duplicate_of"


def is_repeat(t: FrozenTrial) -> bool:
    """Whether ``t`` repeats an earlier trial's candidate (and carries its result)."""
    return REPEAT_OF_ATTR in t.user_attrs


def one_per_result(best: list[FrozenTrial]) -> list[FrozenTrial]:
    """``best`` with each result once: less the repeats of a candidate (equal values, so their
    original, the lowest number, is among ``best`` too), and less each DyLoRA training trial
    whose rank trial at r_max, which repeats its values, is there too (named by its rank)."""
    ranked = {
        (t.user_attrs[RANK_OF_ATTR], tuple(t.values or ()))
        for t in best
        if RANK_OF_ATTR in t.user_attrs
    }
    return [t for t in best if not is_repeat(t) and (t.number, tuple(t.values or ())) not in ranked]


def rankable(t: FrozenTrial) -> bool:
    """A COMPLETE trial whose values can be the study's best: finite and measured (not an
    AutoDistil job's ±inf, nor a student's proxy scores)."""
    return has_measured_values(t) and all(math.isfinite(v) for v in t.values or [float("nan")])


def best_of(
    trials: Iterable[FrozenTrial], directions: list[optuna.study.StudyDirection]
) -> list[FrozenTrial]:
    """The best of ``trials`` that are :func:`rankable` and no repeat (:func:`is_repeat`: its
    original stands for it): the one best for a single objective (the lowest number on a tie,
    as Optuna), the Pareto front for several (equal values all on it, as Optuna; kept as it
    grows: each trial is compared with the current front only)."""
    signs = [1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in directions]

    def key(t: FrozenTrial) -> list[float]:
        return [s * v for s, v in zip(signs, t.values, strict=True)]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    front: list[tuple[list[float], FrozenTrial]] = []
    for t in sorted(
        (t for t in trials if rankable(t) and not is_repeat(t)), key=lambda t: t.number
    ):
        k = key(t)
        if len(signs) == 1:
            if not front or k < front[0][0]:
                front = [(k, t)]
            continue
        if any(dominates(f, k) for f, _ in front):
            continue
        front = [(f, u) for f, u in front if not dominates(k, f)] + [(k, t)]
    return [t for _, t in front]
