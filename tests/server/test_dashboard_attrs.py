"""Readable trial attributes for optuna-dashboard (issue 11): one row per metric, info entry
and recipe/data choice next to the JSON the machines read; table suggestions mapped to rows."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from _procs import TABLE, table_spec
from optuna.trial import TrialState

from archsearch.server._dashboard_attrs import (
    candidate_rows,
    completion_attrs,
    info_rows,
    metric_rows,
)
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import StudyManager
from archsearch.spaces import FlexiBertSmallSpace, load_table
from archsearch.worker._table_trainer import TableTrainer
from archsearch.worker._trainer import TrainContext

TINY_BERT = {
    "name": "d",
    "space": "bert",
    "n_trials": 6,
    "loop": "random",
    "space_options": {
        "num_hidden_layers": [1],
        "hidden_size": [64],
        "num_attention_heads": [2],
        "intermediate_ratio": [1, 2],
    },
    "recipe": {"distill": {"mode": "logits"}, "learning_rate": 1e-3},
}


@pytest.fixture
def manager(tmp_path: Path):
    m = StudyManager(f"sqlite:///{tmp_path / 's.db'}", lease_duration_s=30, heartbeat_interval_s=5)
    yield m
    m.close()


def test_rows_are_one_value_each() -> None:
    metrics = {"accuracy": 0.8, "params": 4_000_000, "latency_ms": 3.5, "sst2.accuracy": 0.7}
    assert metric_rows(metrics) == {
        "metric.accuracy": 0.8,
        "metric.params": 4e6,
        "metric.latency_ms": 3.5,
        "metric.sst2.accuracy": 0.7,
    }
    assert all(type(v) is float for v in metric_rows(metrics).values())
    assert info_rows({"device": "cpu"}) == {"info.device": "cpu"}
    user = completion_attrs(metrics, {"device": "cpu"})
    assert user["metrics"] == metrics and user["info"] == {"device": "cpu"}  # JSON kept
    assert user["metric.params"] == 4e6 and user["info.device"] == "cpu"
    assert "info" not in completion_attrs(metrics, {})
    rows = candidate_rows(
        {"recipe": {"seed": 0, "distill": {"mode": "logits"}}, "data": {"tasks": ["sst2"]}}
    )
    assert rows == {
        "recipe.seed": 0,
        "recipe.distill": '{"mode":"logits"}',
        "data.tasks": '["sst2"]',
    }


def test_completed_trials_and_repeats_carry_a_row_per_metric(manager, tmp_path) -> None:
    """What the dashboard reads (a plain Optuna study on the storage): every raw metric, cost
    metrics included, is its own numeric attribute, on trained trials and on repeats (which
    reuse an earlier result); the JSON attributes stay for the CLI and clients."""
    manager.launch(SearchSpec.from_dict(TINY_BERT))
    trained = 0
    while (g := manager.acquire("w", ("bert",))) is not None:
        trained += 1
        size = g.candidate.architecture["intermediate_size"]
        metrics = {"accuracy": size / 1000, "params": 1000.0 * size, "latency_ms": 2.5}
        manager.complete(g.lease_id, metrics, {"device": "cpu", "trainer": "bert"})
    study = optuna.load_study(study_name="d", storage=f"sqlite:///{tmp_path / 's.db'}")
    trials = study.get_trials()
    # Two distinct candidates for a budget of 6: both are trained, then the loop proposes only
    # repeats, which are recorded (not trained, not counted) until the repeat rule ends the study.
    assert trained == 2 and len(trials) > 2
    assert any("duplicate_of" in t.user_attrs for t in trials)  # repeats were made
    for t in trials:
        assert t.state == TrialState.COMPLETE
        u = t.user_attrs
        assert {k: u[f"metric.{k}"] for k in u["metrics"]} == u["metrics"]
        assert u["metric.params"] == 1000.0 * u["candidate"]["architecture"]["intermediate_size"]
        assert u["metric.latency_ms"] == 2.5
        assert u["recipe.learning_rate"] == 1e-3 and u["recipe.distill"] == '{"mode":"logits"}'
        assert u["data.task"] == "sst2"
        assert u["candidate"]["recipe"]["learning_rate"] == 1e-3  # the JSON stays
        if "duplicate_of" not in t.user_attrs:
            assert u["info"] == {"device": "cpu", "trainer": "bert"}
            assert u["info.device"] == "cpu" and u["info.trainer"] == "bert"


def test_a_retry_keeps_the_candidate_rows(manager) -> None:
    manager.launch(SearchSpec.from_dict({**TINY_BERT, "n_trials": 1}))
    g = manager.acquire("w", ("bert",))
    assert g is not None
    assert manager.fail(g.lease_id, "worker lost its GPU", retryable=True)
    retry = manager.acquire("w", ("bert",))
    assert retry is not None and retry.trial_number != g.trial_number
    manager.complete(retry.lease_id, {"accuracy": 0.5}, {})
    t = next(t for t in manager.trials(manager.get("d")) if t.number == retry.trial_number)
    assert t.user_attrs["recipe.learning_rate"] == 1e-3 and t.user_attrs["metric.accuracy"] == 0.5


def test_table_suggestions_are_mapped_to_rows_and_recorded(manager) -> None:
    """The table-restricted flexibert-small space has per-layer parameters; a sampler's
    suggestion that is no table row is trained as its nearest row, and the trial records the
    suggestion (``mapped_from``) and the row's parameters (``row.<param>``); the table trainer
    scores every candidate."""
    manager.launch(SearchSpec.from_dict(table_spec("t", 12, seed=1)))
    space = FlexiBertSmallSpace(table=TABLE, task="sst2")
    trainer = TableTrainer(TABLE)
    while (g := manager.acquire("w", ("table",))) is not None:
        result = trainer.train(g.candidate, TrainContext(objective_metrics=g.objective_metrics))
        manager.complete(g.lease_id, result.metrics, result.info)
    trials = manager.trials(manager.get("t"))
    assert len(trials) == 12 and all(t.state == TrialState.COMPLETE for t in trials)
    mapped = [t for t in trials if "mapped_from" in t.user_attrs]
    assert mapped  # random per-layer suggestions are rarely among the 620 rows
    table = load_table(TABLE)
    for t in trials:
        arch = t.user_attrs["candidate"]["architecture"]
        assert table.score(arch, "sst2") is not None
        assert t.user_attrs["metric.accuracy"] == table.score(arch, "sst2")
        assert max(len(d.choices) for d in t.distributions.values()) <= 3  # type: ignore[attr-defined]
        assert space.suggest(optuna.trial.FixedTrial(t.params)) == arch  # type: ignore[arg-type]
        row = {k[4:]: v for k, v in t.user_attrs.items() if k.startswith("row.")}
        if t in mapped:
            assert t.user_attrs["mapped_from"] != t.user_attrs["arch"]
            # the row trained, plottable beside the suggestion (the trial's parameters)
            assert row == space.to_params(arch) != t.params
        else:
            assert row == {}
