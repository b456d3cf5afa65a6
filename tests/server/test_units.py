"""Unit tests: search specs, lease ids, proto <-> domain conversion, generated stubs."""

from __future__ import annotations

import datetime
import types
from pathlib import Path

import optuna
import pytest
from _procs import TABLE, table_spec
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from archsearch.server import _protogen
from archsearch.server._convert import (
    grant_to_pb,
    metrics_from_pb,
    states_from_pb,
    study_to_pb,
    trial_to_pb,
)
from archsearch.server._errors import InvalidArgument, NotFound
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import COMPLETED, RUNNING, Grant, StudyManager, parse_lease_id
from archsearch.spaces import Candidate, SpecError
from archsearch.v1 import archsearch_pb2 as pb


def test_spec_defaults_and_roundtrip() -> None:
    spec = SearchSpec.from_dict(
        {
            "name": "a",
            "space": "bert",
            "n_trials": 5,
            "objectives": ["accuracy:max", "params:min"],
            "pruner": "median",
        }
    )
    assert spec.loop == "tpe" and spec.trainer == "bert" and spec.task == "sst2"
    assert [(o.metric, o.direction) for o in spec.objectives] == [
        ("accuracy", "maximize"),
        ("params", "minimize"),
    ]
    assert spec.recipe["max_steps"] == 200 and spec.data == {
        "task": "sst2",
        "train_subset": 0,
        "eval_subset": 0,
    }
    assert SearchSpec.from_json(spec.to_json()) == spec
    table = SearchSpec.from_dict(table_spec("t", 3))
    assert table.space_options == {"table": TABLE, "task": "sst2"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "bad name"}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"n_trials": True}, "n_trials"),
        ({"seed": -1}, "seed"),
        ({"max_retries": 11}, "max_retries"),
        ({"objectives": []}, "objectives"),
        ({"objectives": ["accuracy", "accuracy:min"]}, "twice"),
        ({"task": "sst2", "data": {"task": "rte"}}, "data.task"),
        ({"pruner": {"type": "median", "patience": 3}}, "pruner.patience"),
        ({"recipe": {"max_seq_length": 4096}}, "max_seq_length"),
    ],
)
def test_spec_rejects(change: dict, field: str) -> None:
    base = {"name": "ok", "space": "bert", "n_trials": 3}
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict({**base, **change})
    assert field in str(e.value)


def test_a_pruner_needs_a_first_objective_measured_while_training() -> None:
    base = {"name": "ok", "space": "bert", "n_trials": 3, "pruner": "median"}
    with pytest.raises(SpecError) as e:  # params is known once trained: no curve
        SearchSpec.from_dict({**base, "objectives": ["params:min", "accuracy:max"]})
    assert e.value.field == "pruner" and "'params' is measured once, not as training goes" in str(
        e.value
    )
    assert '"pruner": "none"' in str(e.value)
    # the dev loss is measured at every evaluation, like the task's scores
    spec = SearchSpec.from_dict({**base, "objectives": ["dev_loss:min"]})
    assert spec.intermediate_metric == "dev_loss"
    # without a pruner a cost may come first (the worker then sends no learning curve)
    plain = {**base, "pruner": "none", "objectives": ["params:min", "accuracy:max"]}
    assert SearchSpec.from_dict(plain).objectives[0].metric == "params"


def test_a_pruner_that_could_never_act_is_refused() -> None:
    """`--set recipe.max_steps=40` kept eval_every 50: a score only at the last step, where
    the pruner never stops a trial; the study ran with a pruner that did nothing."""
    base = {"name": "ok", "space": "bert", "n_trials": 3, "pruner": "median"}
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict({**base, "recipe": {"max_steps": 40}})
    assert e.value.field == "pruner"
    assert "recipe.eval_every 50 >= recipe.max_steps 40: a trial is scored only at" in str(e.value)
    assert "such as 10, or --pruner none" in str(e.value)
    # scores at 10, 20, 30 fall before a 35-step warm-up; the one at 40 is the last
    warm = {**base, "pruner": {"type": "median", "n_warmup_steps": 35}}
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict({**warm, "recipe": {"max_steps": 40, "eval_every": 10}})
    assert e.value.field == "pruner.n_warmup_steps"
    assert "35: no score falls between the warm-up and recipe.max_steps 40" in str(e.value)
    assert "a warm-up of at most 30" in str(e.value)
    assert SearchSpec.from_dict({**warm, "recipe": {"max_steps": 41, "eval_every": 10}})
    # the median pruner waits for n_startup_trials finished trials: a 3-trial study never has 5
    startup = {**base, "pruner": {"type": "median", "n_startup_trials": 5}}
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict({**startup, "recipe": {"max_steps": 40, "eval_every": 10}})
    assert e.value.field == "pruner.n_startup_trials" and "5 >= n_trials 3" in str(e.value)
    ok = SearchSpec.from_dict({**base, "recipe": {"max_steps": 40, "eval_every": 10}})
    assert ok.pruner["type"] == "median"
    # no pruner: the same recipe is fine, and a stored study is served as it was launched
    assert SearchSpec.from_dict({**base, "pruner": "none", "recipe": {"max_steps": 40}})
    stored = SearchSpec.from_dict({**base, "recipe": {"max_steps": 40, "eval_every": 10}})
    raw = {**stored.to_dict(), "recipe": {**stored.recipe, "eval_every": 50}}
    assert SearchSpec.from_dict(raw, stored=True).recipe["eval_every"] == 50


def test_an_objective_on_a_cost_must_say_its_direction() -> None:
    """A bare name means maximize: `["accuracy", "params"]` searched for the largest models."""
    base = {"name": "ok", "space": "bert", "n_trials": 3}
    for bare in ("params", {"metric": "flops"}, "latency_ms_b1", "sst2.dev_loss"):
        with pytest.raises(SpecError) as e:
            SearchSpec.from_dict({**base, "objectives": ["accuracy", bare]})
        assert e.value.field == "objectives[1]" and "is a cost" in str(e.value)
        assert ":min'" in str(e.value)
    spec = SearchSpec.from_dict({**base, "objectives": ["accuracy", "params:min"]})
    assert [o.direction for o in spec.objectives] == ["maximize", "minimize"]
    assert SearchSpec.from_dict({**base, "objectives": ["params:max"]}).objectives[0].direction == (
        "maximize"  # said on purpose: allowed
    )
    # any case (accuracy:MAX was refused, its message naming only the long forms)
    spec = SearchSpec.from_dict({**base, "objectives": ["accuracy:MAX", "params:Minimize"]})
    assert [o.direction for o in spec.objectives] == ["maximize", "minimize"]
    with pytest.raises(SpecError, match=r"maximize \(max\) or minimize \(min\)"):
        SearchSpec.from_dict({**base, "objectives": ["accuracy:up"]})


def test_lease_ids() -> None:
    assert parse_lease_id("3.17.abcdef") == (3, 17)
    for bad in ("", "3.17", "a.b.c", "3.17.", "3.-1.x", "3.17.x.y", "1." + "9" * 100 + ".x"):
        with pytest.raises(NotFound):
            parse_lease_id(bad)


def _frozen(state: TrialState, values=None) -> optuna.trial.FrozenTrial:
    now = datetime.datetime(2026, 1, 1, 12, 0, 0)
    return optuna.trial.FrozenTrial(
        number=4,
        state=state,
        value=None,
        values=values,
        datetime_start=now,
        datetime_complete=now + datetime.timedelta(seconds=5) if state.is_finished() else None,
        params={"hidden_size": 128},
        distributions={"hidden_size": CategoricalDistribution([64, 128])},
        user_attrs={
            "metrics": {"accuracy": 0.8, "params": 1e6},
            "worker": "w1",
            "candidate": {"space": "bert"},
            "fail_reason": "",
        },
        system_attrs={"retry_history": [1, 2], "failed_trial": 1},
        intermediate_values={100: 0.7, 200: 0.75},
        trial_id=9,
    )


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """This process's local time is New York's (UTC-5 on 1 January) for the test."""
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_trial_to_pb(new_york: None) -> None:
    """Optuna's naive local times come out as RFC 3339 UTC, as the proto says (a server
    under TZ=America/New_York printed them 5 hours off, with no offset)."""
    msg = trial_to_pb(_frozen(TrialState.COMPLETE, [0.8, 1e6]))
    assert msg.number == 4 and msg.state == pb.COMPLETE
    assert list(msg.values) == [0.8, 1e6]
    assert dict(msg.metrics) == {"accuracy": 0.8, "params": 1e6}
    assert dict(msg.intermediate_values) == {100: 0.7, 200: 0.75}
    assert msg.params_json == '{"hidden_size":128}'
    assert msg.attempt == 2 and msg.worker_id == "w1"
    assert msg.started_at == "2026-01-01T17:00:00+00:00"
    assert msg.finished_at == "2026-01-01T17:00:05+00:00"
    running = trial_to_pb(_frozen(TrialState.RUNNING))
    assert running.state == pb.RUNNING and not running.values and running.finished_at == ""
    assert pb.Trial.FromString(msg.SerializeToString()) == msg


def test_grant_and_states() -> None:
    assert grant_to_pb(None).has_trial is False
    cand = Candidate(space="bert", architecture={"x": 1})
    g = Grant("1.2.ab", "s", 2, 123.0, cand, "bert", ("accuracy", "params"), "accuracy")
    msg = grant_to_pb(g)
    assert msg.has_trial and msg.lease.lease_id == "1.2.ab" and msg.lease.trial_number == 2
    assert Candidate.from_json(msg.candidate_json) == cand
    assert list(msg.objective_metrics) == ["accuracy", "params"]
    assert states_from_pb([pb.COMPLETE, pb.WAITING]) == [TrialState.COMPLETE, TrialState.WAITING]
    with pytest.raises(InvalidArgument):
        states_from_pb([42])
    with pytest.raises(InvalidArgument):
        metrics_from_pb({"accuracy": float("nan")})


def test_a_completed_study_is_never_sent_with_unfinished_counts() -> None:
    """The last result commits, then the study is marked completed. A GetStudy that counted
    the trials just before that commit must not send the state set just after it (seen in CI:
    "completed" with 29 of 30 complete and 1 running)."""
    spec = SearchSpec.from_dict({"name": "s", "space": "bert", "n_trials": 2})
    h = types.SimpleNamespace(
        spec=spec, state=RUNNING, created_at="2026-01-01T00:00:00+00:00", completed_reason=""
    )

    class CommitLandsWhileCounting:
        def trials(self, handle):
            trials = [_frozen(TrialState.COMPLETE, [0.8]), _frozen(TrialState.RUNNING)]
            handle.state = COMPLETED  # the last commit and _maybe_complete, on another thread
            return trials

        def best_trials(self, handle):
            return []

        def connected_trainers(self, study=None):
            return {}

        def workers_elsewhere(self, study):
            return 0

        def workers_lacking_data(self, handle):
            return 0

        registry = types.SimpleNamespace(serves=lambda handle: True)

    msg = study_to_pb(StudyManager.snapshot(CommitLandsWhileCounting(), h))  # type: ignore[arg-type]
    assert (msg.state, msg.n_complete, msg.n_running) == (pb.STUDY_RUNNING, 1, 1)
    h.state = COMPLETED
    done = study_to_pb(StudyManager.snapshot(CommitLandsWhileCounting(), h))  # type: ignore[arg-type]
    assert done.state == pb.STUDY_COMPLETED


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    """`make proto` output is committed; it must match what the .proto files generate now."""
    for generated in _protogen.generate(tmp_path):
        committed = _protogen.STUB_DIR / generated.name
        assert committed.read_text() == generated.read_text(), (
            f"{committed} is stale: run make proto"
        )


def test_the_default_objective_is_the_tasks_own_metric() -> None:
    """`launch --task cola` without --objective was refused: the default was accuracy, which
    CoLA does not report."""
    base = {"name": "ok", "space": "bert", "n_trials": 3}
    for task, metric in [("cola", "mcc"), ("stsb", "pearson"), ("sst2", "accuracy")]:
        assert SearchSpec.from_dict({**base, "task": task}).objectives[0].metric == metric
    both = SearchSpec.from_dict({**base, "tasks": ["cola", "sst2"]})
    assert both.objectives[0].metric == "glue_avg"


def test_a_candidate_a_stop_ended_shows_no_run_time() -> None:
    """It showed the seconds from its preparation to the stop, as if it had run."""
    from archsearch.server._errors import STOPPED_REASON
    from archsearch.server._format import _duration

    times = {"started_at": "2026-12-07T10:00:00+00:00", "finished_at": "2026-12-07T10:00:03+00:00"}
    assert _duration(pb.Trial(**times)) == "3s"
    assert _duration(pb.Trial(**times, fail_reason=STOPPED_REASON)) == ""
