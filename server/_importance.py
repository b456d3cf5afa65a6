"""Parameter importance for ``archsearch show``: which architecture and data parameters
explain a study's first objective.

The trials come over the wire (``pb.Trial``: parameters as JSON, no distributions), so they
are rebuilt as an in-memory Optuna study: a numeric parameter gets the range of its observed
values, any other one a categorical distribution over them (a parameter with a single
observed value explains nothing and is left out, as Optuna does). Optuna's fANOVA evaluator
(:class:`optuna.importance.FanovaImportanceEvaluator`, a random forest's functional ANOVA,
fixed seed) then scores each parameter present in every counted trial. Counted: COMPLETE
trials that were trained (a repeated candidate carries an earlier result; a DyLoRA rank trial
its training trial's parameters; an AutoDistil student only its rank job's proxy scores). When
every counted trial has the same value there is nothing to explain (fANOVA would fail on the
zero variance).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from archsearch.server._format import rank_trials_of, table
from archsearch.v1 import archsearch_pb2 as pb

#: Fewer complete trials than this give no importance (a forest on a handful of points says
#: nothing reliable).
MIN_TRIALS = 8
EVALUATOR = "fANOVA"


def _distribution(values: list[Any]) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if numeric and all(math.isfinite(v) for v in values):
        return FloatDistribution(float(min(values)), float(max(values)))
    choices = sorted({json.dumps(v, sort_keys=True) for v in values})
    return CategoricalDistribution(choices)


def param_importances(
    trials: Sequence[pb.Trial], objective: int = 0
) -> tuple[dict[str, float], int]:
    """Importance of each parameter for objective ``objective`` (fANOVA), best first.

    Returns:
        The importances (empty when fewer than :data:`MIN_TRIALS` trials count, or no
        parameter varies) and the number of trials counted.
    """
    rows = _counted(trials, objective)
    if len(rows) < MIN_TRIALS:
        return {}, len(rows)
    import optuna
    from optuna.trial import create_trial

    names = set(rows[0][0]).intersection(*(set(p) for p, _ in rows[1:]))
    dists = {n: _distribution([p[n] for p, _ in rows]) for n in sorted(names)}
    dists = {n: d for n, d in dists.items() if not d.single()}
    if not dists or _constant(rows):  # nothing to explain
        return {}, len(rows)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line in show
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    for params, value in rows:
        shown = {
            n: float(params[n])
            if isinstance(d, optuna.distributions.FloatDistribution)
            else json.dumps(params[n], sort_keys=True)
            for n, d in dists.items()
        }
        study.add_trial(create_trial(params=shown, distributions=dists, value=value))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    got = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {k: float(v) for k, v in got.items()}, len(rows)


def importance_dict(trials: Sequence[pb.Trial], metric: str) -> dict[str, Any]:
    """``show --json``'s ``importance``: evaluator, objective, trials counted, and the
    importances (or a note when too few trials count)."""
    got, n = param_importances(trials)
    out: dict[str, Any] = {"evaluator": EVALUATOR, "objective": metric, "trials": n}
    if got:
        out["importances"] = got
    else:
        out["note"] = _why_none(n, trials)
    return out


def format_importance(trials: Sequence[pb.Trial], metric: str) -> str:
    """The text ``show`` prints: a table of importances, or why there is none."""
    got, n = param_importances(trials)
    if not got:
        return f"parameter importance: {_why_none(n, trials)}"
    head = f"parameter importance ({EVALUATOR} on {metric}, {n} complete trials):"
    return (
        head + "\n" + table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in got.items()])
    )


def _counted(trials: Sequence[pb.Trial], objective: int) -> list[tuple[dict[str, Any], float]]:
    """(parameters, value of objective ``objective``) of each trial counted (see the module
    docstring)."""
    ranks = rank_trials_of(trials)
    rows = []
    for t in trials:
        if t.state != pb.COMPLETE or t.duplicate_of >= 0 or t.number in ranks:
            continue
        if t.HasField("derived_from"):  # an AutoDistil student: scored by a rank job
            continue
        if len(t.values) <= objective or not math.isfinite(t.values[objective]):
            continue
        params = json.loads(t.params_json or "{}")
        if params:
            rows.append((params, t.values[objective]))
    return rows


def _constant(rows: Sequence[tuple[dict[str, Any], float]]) -> bool:
    return len({value for _, value in rows}) == 1


def _why_none(n: int, trials: Sequence[pb.Trial]) -> str:
    if n < MIN_TRIALS:
        return f"needs at least {MIN_TRIALS} complete trials, has {n}"
    rows = _counted(trials, 0)
    if _constant(rows):
        return f"the objective is {rows[0][1]:.4g} in every one of the {n} trials counted"
    return "no parameter varies across the complete trials"
