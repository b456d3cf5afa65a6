"""Which metric each task of a trial reports while training, and which picks its kept
checkpoint (``_result_metrics.plan_reports``)."""

from __future__ import annotations

import pytest

from archsearch.spaces import Candidate
from archsearch.worker import CandidateError, TrainContext
from archsearch.worker._plan import parse_plan
from archsearch.worker._result_metrics import plan_reports

ARCH = {
    "num_hidden_layers": 1,
    "hidden_size": 32,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def reports(metric: str, task: str = "mrpc") -> list[tuple[str | None, str]]:
    plan = parse_plan(Candidate(space="bert", architecture=ARCH, data={"task": task}))
    planned = plan_reports(plan, TrainContext(intermediate_metric=metric))
    return [(r.report_metric, r.select_metric) for r in planned]


def test_a_task_metric_is_reported_and_picks_the_checkpoint() -> None:
    assert reports("") == [("f1", "f1")]
    assert reports("accuracy") == [("accuracy", "accuracy")]


def test_the_dev_loss_is_reported_but_the_checkpoint_is_picked_by_a_score() -> None:
    # the kept weights are the best by a score (higher is better); a loss is not one
    assert reports("dev_loss") == [("dev_loss", "f1")]


def test_a_cost_first_sends_no_learning_curve_instead_of_failing_every_trial() -> None:
    # objectives ["params:min", "f1:max"]: the server asks for params, known once trained
    assert reports("params") == [(None, "f1")]


def test_a_metric_the_trial_never_produces_is_refused_with_the_choices() -> None:
    with pytest.raises(CandidateError, match=r"choose one of \['f1', 'accuracy', 'dev_loss'\]"):
        reports("bleu")
