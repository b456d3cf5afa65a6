"""What a completed job adds to its study besides its own result: the completion rules.

Each rule reads a :class:`~archsearch.server._rank_trials.CompletedJob` and returns the
:class:`~archsearch.server._rank_trials.JobExtras` it adds (nothing for a job it does not
concern). ``TrialOutcomes.complete`` stores them with the job's completion, in one transaction;
the trials a rule adds carry its marker attribute, so that nothing re-leases, re-trains or
counts them against ``n_trials`` (:func:`is_derived_trial`, read by the start-up rebuild).

Rules: DyLoRA's ranks (``_rank_trials``), AutoDistil's students, the proxy scores beside a
student's true ones and what each AutoDistil trial's values are (``_student_trials``).
"""

from __future__ import annotations

from collections.abc import Callable

from optuna.trial import FrozenTrial

from archsearch.server._rank_trials import (
    RANK_OF_ATTR,
    CompletedJob,
    JobExtras,
    dylora_extras,
)
from archsearch.server._student_trials import (
    STUDENT_OF_ATTR,
    score_kind_extras,
    student_extras,
    truth_extras,
)

#: Every completion rule, in the order their extras are stored.
RULES: tuple[Callable[[CompletedJob], JobExtras], ...] = (
    dylora_extras,
    student_extras,
    truth_extras,
    score_kind_extras,
)
#: The user attributes that mark a trial a rule added (the number of the job it came from).
DERIVED_MARKERS = (RANK_OF_ATTR, STUDENT_OF_ATTR)


def completion_extras(job: CompletedJob) -> JobExtras:
    """Every rule's extras for ``job``, together."""
    out = JobExtras()
    for rule in RULES:
        extra = rule(job)
        out.trials.extend(extra.trials)
        out.user_attrs.update(extra.user_attrs)
    return out


def is_derived_trial(trial: FrozenTrial) -> bool:
    """Whether a completion rule added ``trial`` (a DyLoRA rank, an AutoDistil student)."""
    return any(marker in trial.user_attrs for marker in DERIVED_MARKERS)


def derived_from(trial: FrozenTrial) -> int:
    """The number of the job whose completion added ``trial``; -1 for a trained trial."""
    for marker in DERIVED_MARKERS:
        number = trial.user_attrs.get(marker)
        if isinstance(number, int) and not isinstance(number, bool):
            return number
    return -1


def has_measured_values(trial: FrozenTrial) -> bool:
    """Whether ``trial``'s values are what its objectives measure: every trial but an
    AutoDistil student, whose values are its proxy scores (the study's best trials are chosen
    among the others)."""
    return STUDENT_OF_ATTR not in trial.user_attrs
