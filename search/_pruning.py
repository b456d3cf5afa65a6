"""Pruning decisions made on the server, for single- and multi-objective studies.

Workers report intermediate values of the study's *intermediate metric*, which is always the
metric of the first objective. The server writes them to the storage and asks an Optuna pruner.

Optuna refuses ``Trial.report``/``should_prune`` in multi-objective studies. archsearch's rule
for them, applied with the same pruners: **a multi-objective trial is judged on its first
objective alone** — the pruner sees a view of the study whose single direction is the first
objective's, and compares the trial's intermediate values with those of the other trials at
the same steps exactly as it would in a single-objective study. The other objectives (size,
FLOPs, latency) are known before training and do not change while it runs, so early-stopping on
them would be meaningless; the score is the only objective a learning curve predicts.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.study import StudyDirection

from archsearch.spaces import SpecError

log = logging.getLogger("archsearch.server")

_PRUNER_OPTIONS: dict[str, set[str]] = {
    "none": set(),
    "median": {"n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"},
    "successive_halving": {
        "min_resource",
        "reduction_factor",
        "min_early_stopping_rate",
        "bootstrap_count",
    },
    "hyperband": {"min_resource", "max_resource", "reduction_factor", "bootstrap_count"},
}

#: The least value of each integer pruner option (0 for the rest).
_LEAST = {"min_resource": 1, "max_resource": 1, "reduction_factor": 2, "interval_steps": 1}


def make_pruner(config: dict[str, Any] | None, n_objectives: int = 1) -> optuna.pruners.BasePruner:
    """Builds a pruner from the spec's ``pruner`` object; SpecError on bad input."""
    config = dict(config or {"type": "none"})
    kind = config.pop("type", "none")
    if not isinstance(kind, str) or kind not in _PRUNER_OPTIONS:
        raise SpecError(
            "pruner.type", f"unknown pruner {kind!r}", f"one of {', '.join(_PRUNER_OPTIONS)}"
        )
    unknown = sorted(set(config) - _PRUNER_OPTIONS[kind])
    if unknown:
        raise SpecError(
            f"pruner.{unknown[0]}",
            f"not an option of the {kind} pruner",
            f"options: {', '.join(sorted(_PRUNER_OPTIONS[kind])) or 'none'}",
        )
    for key, value in config.items():
        # Optuna's pruners keep these unchecked until a trial reports; a string or a float
        # would pass the launch and then fail every report.
        auto = (kind, key) in (
            ("successive_halving", "min_resource"),
            ("hyperband", "max_resource"),
        )
        if auto and value == "auto":
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            kinds = 'an int or "auto"' if auto else "an int"
            raise SpecError(f"pruner.{key}", f"must be {kinds}, got {value!r}")
        # Hyperband checks none of these before the first report (reduction_factor 1 was a
        # ZeroDivisionError there, max_resource 0 a math domain error, on every report)
        least = _LEAST.get(key, 0)
        if value < least:
            raise SpecError(f"pruner.{key}", f"must be at least {least}, got {value}")
    low, high = config.get("min_resource", 1), config.get("max_resource", "auto")
    if kind == "hyperband" and high != "auto" and low != "auto" and high < low:
        raise SpecError(
            "pruner.max_resource",
            f"{high} is below min_resource {low}",
            "max_resource is the last step a trial reports (recipe.max_steps)",
        )
    if kind == "hyperband" and n_objectives > 1:
        # Hyperband's bracket studies re-open the study from storage and so see every
        # objective's direction; Optuna's Hyperband cannot run on a multi-objective study.
        raise SpecError(
            "pruner.type",
            "hyperband cannot prune a multi-objective study",
            "use median or successive_halving, which archsearch applies to the first objective",
        )
    try:
        if kind == "none":
            return optuna.pruners.NopPruner()
        if kind == "median":
            return optuna.pruners.MedianPruner(**config)
        if kind == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(**config)
        return optuna.pruners.HyperbandPruner(**config)
    except (TypeError, ValueError) as e:
        raise SpecError("pruner", f"{kind}: {e}") from e


class ServerStudy(optuna.Study):
    """The study object the server opens for every archsearch study.

    Identical to ``optuna.Study`` except that ``direction`` answers the first objective's
    direction in multi-objective studies instead of raising. Optuna's TPE sampler ranks PRUNED
    trials with ``study.direction`` even in multi-objective studies (it never expects them
    there); under archsearch's rule pruned trials are ranked on the first objective, so this is
    the direction it must see.
    """

    @property
    def direction(self) -> StudyDirection:
        return self.directions[0]


class PrimaryObjectiveView(ServerStudy):
    """A study that presents only the first objective to a pruner (see the module docstring).

    It shares the sampler and pruner of ``study`` and reads ``storage``, the study's own
    (Optuna gives a study no public accessor for it; the server passes the one it opened).
    """

    def __init__(self, study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
        super().__init__(
            study_name=study.study_name,
            storage=storage,
            sampler=study.sampler,
            pruner=study.pruner,
        )
        self._directions = self._directions[:1]


def should_prune(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    trial_id: int,
    final_step: int | None = None,
) -> bool:
    """Asks the study's pruner about the trial's latest intermediate value.

    Args:
        study: the study (multi-objective ones are judged on their first objective).
        storage: the storage ``study`` was opened on.
        trial_id: the trial's storage id.
        final_step: the candidate's last training step (``recipe.max_steps``). A value
            reported at or after it is the final evaluation: training is over, so stopping
            saves nothing, and the trial completes with its full result instead.
    """
    if isinstance(study.pruner, optuna.pruners.NopPruner):
        return False
    frozen = storage.get_trial(trial_id)
    if final_step is not None and frozen.last_step is not None and frozen.last_step >= final_step:
        return False
    view = study if len(study.directions) == 1 else PrimaryObjectiveView(study, storage)
    try:
        return bool(study.pruner.prune(view, frozen))
    except (ArithmeticError, ValueError) as e:
        # a study launched before its settings were checked (a Hyperband reduction_factor of
        # 1 divides by zero here): its trials train on unpruned, said once per study
        if study.study_name not in _WARNED:
            _WARNED.add(study.study_name)
            log.warning(
                "study %s: its pruner cannot decide (%s: %s); its trials are not pruned",
                study.study_name,
                type(e).__name__,
                e,
            )
        return False


#: Studies whose pruner failed, said once each.
_WARNED: set[str] = set()
