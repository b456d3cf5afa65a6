"""AutoDistil student trials: each student a ``rank`` job scored becomes its own COMPLETE trial.

A ``rank`` job of the ``autodistil`` loop scores every student of one sub-space from its trained
supernet and reports each student's metrics as ``<metric>@<student key>``
(``accuracy@L3_A6_H192_I576``, ``relation_loss@...``, ``params@...``, ``flops@...``). When it
completes, :func:`student_extras` adds one COMPLETE trial per student (the same mechanism as
DyLoRA's ranks, ``server/_rank_trials.py``, stored in the rank job's transaction):

* parameters: ``target`` "student", ``student`` (its key, as the ``autodistil`` space names it),
  ``subspace``, and its knobs ``layers``, ``heads``, ``hidden``, ``intermediate``;
* metrics: the rank job's, each labelled one taken at that student, with ``params`` and
  ``flops`` from the shared cost model when the worker did not report them and no worker time,
  as the JSON ``metrics`` and as ``proxy.<metric>`` rows (never ``metric.<metric>``: in the
  dashboard's table those columns hold measured scores); ``score_kind`` "proxy";
* values: the study's objectives from those metrics (a missing one at its worst, +/-inf);
* user attribute :data:`STUDENT_OF_ATTR` (the rank trial's number) and ``supernet_trial``;
  system attribute ``autodistil:student`` (what the loop's pick reads).

When a ``train`` job of a picked student completes (stage 3), :func:`truth_extras` stores beside
its true scores the student's proxy scores (``proxy.<metric>``) and ``proxy_trial``, the number
of the student trial: proxy and truth sit on one trial, linked to the student's. Every job's
completion stores ``score_kind`` (:func:`score_kind_extras`): "measured" for a trained
student, "none" for a supernet or rank job.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from archsearch.search._autodistil_loop import STUDENT_ATTR
from archsearch.server._errors import InvalidArgument
from archsearch.server._objectives import objective_values
from archsearch.server._rank_trials import CompletedJob, JobExtras, metrics_by_label
from archsearch.server._spec import SearchSpec
from archsearch.spaces._autodistil import AutoDistilSpace

#: User attribute of a student trial: the number of the rank trial that scored it.
STUDENT_OF_ATTR = "student_of"
#: User attribute of every completed trial of an autodistil study: what its values are.
SCORE_KIND_ATTR = "score_kind"
#: ... a student's proxy scores (its rank job's), the scores a trained student measured, or
#: none (a supernet or rank job: its values are the worst, +/-inf).
PROXY_SCORES, MEASURED_SCORES, NO_SCORES = "proxy", "measured", "none"
#: User attribute of a stage-3 trial: the number of the student trial it was picked from.
PROXY_TRIAL_ATTR = "proxy_trial"
PROXY_PREFIX = "proxy."
STUDENT_LABEL = re.compile(r"L[1-9][0-9]*_A[1-9][0-9]*_H[1-9][0-9]*_I[1-9][0-9]*")


def job_values(spec: SearchSpec, metrics: Mapping[str, float]) -> list[float]:
    """The study's objectives from ``metrics``, each missing one at its worst (-inf for a
    maximised objective, +inf for a minimised one): for trials that train no candidate of
    their own (a supernet, a rank job) or a student scored without some objective."""
    try:
        return objective_values(spec, dict(metrics))
    except InvalidArgument:
        pass
    out = []
    for o in spec.objectives:
        try:
            out.append(objective_values(_one(spec, o.metric), dict(metrics))[0])
        except InvalidArgument:
            out.append(-math.inf if o.direction == "maximize" else math.inf)
    return out


def _one(spec: SearchSpec, metric: str) -> SearchSpec:
    keep = tuple(o for o in spec.objectives if o.metric == metric)
    return dataclasses.replace(spec, objectives=keep)


def _supernet_number(ref: Any) -> int | None:
    """The trial number of a ``trial:<study>:<number>`` (or ``trial:<number>``) reference,
    as ``recipe.transfer_from`` takes it (``worker/_checkpoint_artifacts.py``)."""
    if not isinstance(ref, str) or not ref.startswith("trial:"):
        return None
    _, _, number = ref.rpartition(":")
    return int(number) if number.isdigit() else None


def student_extras(job: CompletedJob) -> JobExtras:
    """The completion rule of an ``autodistil`` rank job: its student trials."""
    space, cand = job.space, job.candidate
    if cand.kind != "rank" or not isinstance(space, AutoDistilSpace):
        return JobExtras()
    sub = cand.architecture.get("subspace")
    name = sub.get("name") if isinstance(sub, dict) else None
    supernet = _supernet_number((cand.recipe.get("rank") or {}).get("supernet"))
    per_student = metrics_by_label(job.metrics, STUDENT_LABEL)
    if name not in space.students or supernet is None:
        return JobExtras()
    teacher = space.teacher
    biggest = max(st.intermediate for sts in space.students.values() for st in sts)
    distributions: dict[str, Any] = {
        "target": CategoricalDistribution(("subspace", "student")),
        "student": CategoricalDistribution(space.student_keys),
        "subspace": CategoricalDistribution(tuple(s.name for s in space.subspaces)),
        "layers": IntDistribution(1, teacher.layers),
        "heads": IntDistribution(1, teacher.heads),
        "hidden": IntDistribution(1, teacher.hidden),
        "intermediate": IntDistribution(1, max(biggest, teacher.intermediate)),
    }
    trials = []
    for student in space.students[name]:
        key = student.key()
        if key not in per_student:
            continue  # the worker did not score it: nothing to rank it by
        metrics = {
            "params": float(space.params(student)),
            "flops": float(space.flops(student)),
            **per_student[key],
        }
        info = {
            "key": key,
            "subspace": name,
            "rank_trial": job.number,
            "supernet_trial": supernet,
        }
        trials.append(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                params={"target": "student", "student": key, "subspace": name, **student.to_dict()},
                distributions=distributions,
                values=job_values(job.spec, metrics),
                user_attrs={
                    "metrics": metrics,  # what the pick, show and the trained trial read
                    **proxy_rows(metrics),  # not metric.*: those columns hold true scores
                    SCORE_KIND_ATTR: PROXY_SCORES,
                    STUDENT_OF_ATTR: job.number,
                    "arch": f"student {key} of {name} (scored by rank #{job.number})",
                    "supernet_trial": supernet,
                    "student": key,
                },
                system_attrs={STUDENT_ATTR: info},
            )
        )
    return JobExtras(trials=trials)


def truth_extras(job: CompletedJob) -> JobExtras:
    """The completion rule of an ``autodistil`` train job: its student's proxy scores."""
    space, cand = job.space, job.candidate
    if cand.kind != "train" or not isinstance(space, AutoDistilSpace):
        return JobExtras()
    init = cand.recipe.get("init")
    supernet = _supernet_number(init.get("supernet") if isinstance(init, dict) else None)
    student = cand.architecture.get("student")
    if supernet is None or not isinstance(student, dict):
        return JobExtras()
    key = space.to_params(dict(cand.architecture))["student"]
    for t in job.load_trials():
        info = t.system_attrs.get(STUDENT_ATTR)
        if (
            isinstance(info, dict)
            and info.get("key") == key
            and info.get("supernet_trial") == supernet
            and t.state == TrialState.COMPLETE
        ):
            rows = proxy_rows(t.user_attrs.get("metrics") or {})
            return JobExtras(user_attrs={PROXY_TRIAL_ATTR: t.number, **rows})
    return JobExtras()


def proxy_rows(metrics: Mapping[str, float]) -> dict[str, float]:
    """``proxy.<name>`` -> a student's proxy metric: the dashboard rows of its proxy scores,
    on its student trial and beside the true ones of its trained trial."""
    return {f"{PROXY_PREFIX}{name}": float(value) for name, value in metrics.items()}


def score_kind_extras(job: CompletedJob) -> JobExtras:
    """The completion rule of every ``autodistil`` job: :data:`SCORE_KIND_ATTR`, measured for
    a trained student, none for a supernet or rank job (its student trials say proxy)."""
    if not isinstance(job.space, AutoDistilSpace):
        return JobExtras()
    kind = MEASURED_SCORES if job.candidate.kind == "train" else NO_SCORES
    return JobExtras(user_attrs={SCORE_KIND_ATTR: kind})


def is_student_trial(trial: FrozenTrial) -> bool:
    """Whether ``trial`` was added by :func:`student_extras`."""
    return STUDENT_OF_ATTR in trial.user_attrs
