"""``show``'s note column says where a running trial is: a job's progress (an AutoDistil
supernet's distillation loss, kept as the trial's progress, not the objective's curve) or the
objective's last intermediate value."""

from __future__ import annotations

import datetime

from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from archsearch.server._convert import trial_to_pb
from archsearch.server._trial_notes import trial_note
from archsearch.server._trial_writes import PROGRESS_STEP_ATTR, PROGRESS_VALUE_ATTR
from archsearch.v1 import archsearch_pb2 as pb


def _running(user_attrs: dict, intermediate: dict[int, float]) -> FrozenTrial:
    return FrozenTrial(
        number=3,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.datetime(2026, 12, 7, 12, 0),
        datetime_complete=None,
        params={"x": 0.5},
        distributions={"x": FloatDistribution(0.0, 1.0)},
        user_attrs={"worker": "w1", **user_attrs},
        system_attrs={},
        intermediate_values=intermediate,
        trial_id=4,
    )


def test_a_running_job_shows_its_progress() -> None:
    job = trial_to_pb(_running({PROGRESS_STEP_ATTR: 40, PROGRESS_VALUE_ATTR: 1.8125}, {}))
    assert job.progress_step == 40 and job.progress_value == 1.8125
    assert not job.intermediate_values
    # its own step count, not the study's recipe.max_steps
    assert trial_note(job, max_steps=8) == "step 40: 1.812"
    assert pb.Trial.FromString(job.SerializeToString()) == job


def test_a_running_trial_shows_its_last_intermediate_value() -> None:
    trial = trial_to_pb(_running({}, {2: 0.5, 4: 0.8125}))
    assert not trial.HasField("progress_step")
    assert trial_note(trial, max_steps=8) == "step 4 of 8: 0.8125"
    assert trial_note(trial_to_pb(_running({}, {}))) == ""  # nothing reported yet


def test_a_finished_trial_keeps_its_other_notes() -> None:
    done = trial_to_pb(_running({PROGRESS_STEP_ATTR: 40, PROGRESS_VALUE_ATTR: 1.5}, {}))
    done.state = pb.FAIL
    done.fail_reason = "lease expired"
    assert trial_note(done) == "lease expired"
