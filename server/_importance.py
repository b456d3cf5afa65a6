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

A trial's parameters are what the sampler suggested; a table space trains the table row nearest
the suggestion instead (``mapped_from``), so such a trial counts with the row's parameters (the
space's ``to_params`` of its candidate's architecture, :func:`scored_params`): the score is
credited to the values that were scored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from archsearch.server._format import table
from archsearch.server._trial_notes import rank_trials_of
from archsearch.spaces import DesignSpace
from archsearch.spaces._data_space import PARAM_PREFIX as DATA_PARAM_PREFIX
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


def study_space(spec_json: str) -> DesignSpace | None:
    """The study's space as this machine builds it, to read its trials' architectures: with
    the spec's options, else with the space's defaults (as ``show`` describes candidates; a
    table file on the server's machine only restricts which rows exist, not their parameters);
    None when neither can be built (a plugin's space not installed here, a foreign spec)."""
    from archsearch.spaces import SPACES, make_space

    try:
        spec = json.loads(spec_json or "{}")
        name = spec["space"]
    except (KeyError, TypeError, ValueError):
        return None
    try:
        return make_space(name, spec.get("space_options") or {})
    except Exception:  # a table that is not here, or a plugin's failure
        try:
            return SPACES[name]()
        except Exception:  # no such space here, or it needs its options
            return None


def scored_params(t: pb.Trial, space: DesignSpace | None) -> dict[str, Any]:
    """The parameters of what trial ``t`` scored: its own, unless its candidate's architecture
    is not the one they describe (a table space's nearest row to the suggestion): then the
    row's (``space.to_params``) with the trial's data parameters (``data.<field>``), which the
    row does not set. Its own when ``space`` is None or cannot read the candidate."""
    params: dict[str, Any] = json.loads(t.params_json or "{}")
    if space is None:
        return params
    try:
        row = space.to_params(json.loads(t.candidate_json or "{}")["architecture"])
    except Exception:  # no candidate (a rank trial), or one it cannot read
        return params
    if all(k in params and params[k] == v for k, v in row.items()):
        return params  # the suggestion was trained as it was
    return {**row, **{k: v for k, v in params.items() if k.startswith(DATA_PARAM_PREFIX)}}


def param_importances(
    trials: Sequence[pb.Trial], objective: int = 0, space: DesignSpace | None = None
) -> tuple[dict[str, float], int]:
    """Importance of each parameter for objective ``objective`` (fANOVA), best first; with the
    study's ``space`` (:func:`study_space`), over the parameters each trial scored
    (:func:`scored_params`).

    Returns:
        The importances (empty when fewer than :data:`MIN_TRIALS` trials count, or no
        parameter varies) and the number of trials counted.
    """
    rows = _counted(trials, objective, space)
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


def importance_dict(
    trials: Sequence[pb.Trial], metric: str, space: DesignSpace | None = None
) -> dict[str, Any]:
    """``show --json``'s ``importance``: evaluator, objective, trials counted, and the
    importances (or a note when too few trials count)."""
    got, n = param_importances(trials, space=space)
    out: dict[str, Any] = {"evaluator": EVALUATOR, "objective": metric, "trials": n}
    if got:
        out["importances"] = got
    else:
        out["note"] = _why_none(n, trials)
    return out


def format_importance(
    trials: Sequence[pb.Trial], metric: str, space: DesignSpace | None = None
) -> str:
    """The text ``show`` prints: a table of importances, or why there is none."""
    got, n = param_importances(trials, space=space)
    if not got:
        return f"parameter importance: {_why_none(n, trials)}"
    head = f"parameter importance ({EVALUATOR} on {metric}, {n} complete trials):"
    return (
        head + "\n" + table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in got.items()])
    )


def _counted(
    trials: Sequence[pb.Trial], objective: int, space: DesignSpace | None = None
) -> list[tuple[dict[str, Any], float]]:
    """(parameters scored, value of objective ``objective``) of each trial counted (see the
    module docstring)."""
    ranks = rank_trials_of(trials)
    rows = []
    for t in trials:
        if t.state != pb.COMPLETE or t.duplicate_of >= 0 or t.number in ranks:
            continue
        if t.HasField("derived_from"):  # an AutoDistil student: scored by a rank job
            continue
        if len(t.values) <= objective or not math.isfinite(t.values[objective]):
            continue
        params = scored_params(t, space)
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
