"""What the ``autodistil`` loop reads from stored trials: a scored student as the pick sees
it, which students a plain BERT can hold, a student's mean dev loss, and a job's state."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

from archsearch.search._base import TrialView
from archsearch.spaces import DEV_LOSS
from archsearch.spaces._autodistil import AutoDistilSpace
from archsearch.spaces._students import is_tied


@dataclasses.dataclass(frozen=True)
class Student:
    """A recorded student trial, as the pick reads it."""

    number: int
    key: str
    subspace: str
    supernet_trial: int
    proxy: float
    cost: float
    #: The mean dev loss over the proxy tasks (+inf when the trial has none, or the tie
    #: break is the cost alone).
    tie: float


def stand_alone(space: AutoDistilSpace, keys: Iterable[str]) -> list[str]:
    """The students of ``keys`` a plain BERT can hold (``hidden = heads x head size``), each
    once: the ones a stand-alone job can train."""
    return sorted(
        {k for k in keys if k in space.student_keys and is_tied(space.teacher, space.student(k))}
    )


def mean_dev_loss(metrics: Mapping[str, float]) -> float:
    """The mean of a trial's dev losses: ``dev_loss`` (one task) or every ``<task>.dev_loss``
    (several); +inf when it has none or one is not finite (it then sorts last)."""
    values = [v for k, v in metrics.items() if k.rpartition(".")[2] == DEV_LOSS]
    if not values or not all(math.isfinite(v) for v in values):
        return math.inf
    return math.fsum(values) / len(values)


def job_status(trials: list[TrialView]) -> str:
    """A job's state from its trials: ``done`` (the number of its COMPLETE trial), or
    ``active``, ``pruned`` (a stored study's pruner stopped it: never asked again), ``failed``
    (tried, nothing in flight: the server gave up) or ``todo``. A
    trial ``stop --cancel-running`` ended does not count as tried: ``resume`` runs the job
    again (the study completed "every stage done" with no student ranked)."""
    trials = [t for t in trials if not t.cancelled]
    for t in trials:
        if t.state == "COMPLETE":
            return str(t.number)
    if any(t.active for t in trials):
        return "active"
    if any(t.state == "PRUNED" for t in trials):
        return "pruned"
    return "failed" if trials else "todo"
