"""BertTrainer on tiny students and small GLUE slices (a few seconds on two CPU cores)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from _tiny import TINY_BERT
from sklearn.metrics import accuracy_score

from archsearch.spaces import Candidate, bert_parameter_count
from archsearch.worker import CandidateError, TrainContext, TrialStopped
from archsearch.worker._bert_trainer import COST_METRICS, BertTrainer

TINY = TINY_BERT


@pytest.fixture(scope="module")
def trainer() -> BertTrainer:
    return BertTrainer()  # shared: the tokenizer and tokenised slices are cached on it


def candidate(
    task: str = "sst2", architecture: dict[str, Any] | None = None, **recipe: Any
) -> Candidate:
    return Candidate(
        space="bert",
        architecture=architecture or TINY,
        recipe={
            "max_steps": 20,
            "batch_size": 32,
            "max_seq_length": 32,
            "learning_rate": 1e-3,
            "eval_every": 5,
            "seed": 7,
            **recipe,
        },
        data={"task": task, "train_subset": 256, "eval_subset": 64},
    )


class Reports:
    """A report callback that records (step, value) and prunes when told to."""

    def __init__(self, prune_at: int | None = None) -> None:
        self.calls: list[tuple[int, float]] = []
        self.prune_at = prune_at

    def __call__(self, step: int, value: float) -> bool:
        self.calls.append((step, value))
        return self.prune_at is not None and step >= self.prune_at


def test_trains_reports_and_scores(trainer: BertTrainer) -> None:
    reports = Reports()
    context = TrainContext(
        report=reports, intermediate_metric="accuracy", objective_metrics=("accuracy", "params")
    )
    result = trainer.train(candidate(), context)

    assert [step for step, _ in reports.calls] == [5, 10, 15, 20]
    assert len(trainer.last_predictions) == len(trainer.last_labels) == 64
    expected = accuracy_score(trainer.last_labels, trainer.last_predictions)
    assert result.metrics["accuracy"] == pytest.approx(expected)
    assert reports.calls[-1][1] == result.metrics["accuracy"]
    assert result.metrics["params"] == bert_parameter_count(TINY)
    assert result.metrics["eval_samples"] == 64
    assert result.metrics["train_seconds"] > 0
    unprefixed = {"accuracy", "dev_loss", *COST_METRICS}
    assert set(result.metrics) == unprefixed | {f"sst2.{name}" for name in unprefixed}
    assert set(result.metrics) == set(BertTrainer.metric_names("sst2"))
    assert all(result.metrics[f"sst2.{name}"] == result.metrics[name] for name in unprefixed)
    assert all(type(v) is float and math.isfinite(v) for v in result.metrics.values())
    assert result.info["task"] == "sst2" and result.info["seed"] == "7"
    # a model that gives every dev example one class is said (this tiny one often does)
    collapsed = len(set(trainer.last_predictions)) == 1
    assert ("collapsed_warning" in result.info) == collapsed
    assert set(result.info) - {"collapsed_warning"} == {
        "device",
        "device_name",
        "seed",
        "data_hash",
        "dev_hash",  # of the dev data alone: show compares a study's
        "task",
        "torch_version",
        "transformers_version",
        "archsearch_version",
        "code_version",
        "glue_dir",
        "data_source",
        "precision",
        "dev_at_max_seq_length",
        "train_examples",  # its train_subset: how many examples it trained on
    }
    assert result.info["data_source"].startswith(f"using GLUE data from {result.info['glue_dir']}")
    assert result.info["precision"] == "fp32" and result.info["data_hash"].startswith("sha256:")


def test_same_seed_same_result(trainer: BertTrainer) -> None:
    spec = candidate(max_steps=6, eval_every=6)
    first = trainer.train(spec, TrainContext())
    first_predictions = list(trainer.last_predictions)
    second = trainer.train(spec, TrainContext())
    assert trainer.last_predictions == first_predictions
    measured = ("train_seconds", "latency_ms_b1", "latency_ms_b32", "peak_train_memory_mb")

    def deterministic(metrics: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in metrics.items() if k.split(".")[-1] not in measured}

    assert deterministic(first.metrics) == deterministic(second.metrics)
    assert first.info["data_hash"] == second.info["data_hash"]


def test_regression_with_gradient_accumulation(trainer: BertTrainer) -> None:
    reports = Reports()
    spec = candidate(
        "stsb", max_steps=4, eval_every=2, batch_size=16, gradient_accumulation_steps=2
    )
    result = trainer.train(spec, TrainContext(report=reports))
    assert [step for step, _ in reports.calls] == [2, 4]  # optimiser steps, not micro-batches
    assert reports.calls[-1][1] == result.metrics["pearson"]
    assert {"pearson", "spearman"} <= set(result.metrics)
    assert all(isinstance(p, float) for p in trainer.last_predictions)


def test_pruning_stops_at_once(trainer: BertTrainer) -> None:
    reports = Reports(prune_at=5)
    with pytest.raises(TrialStopped, match="pruned at step 5"):
        trainer.train(candidate(), TrainContext(report=reports))
    assert len(reports.calls) == 1


def test_stop_request_is_checked_every_step(trainer: BertTrainer) -> None:
    checks = 0

    def should_stop() -> bool:
        nonlocal checks
        checks += 1
        return checks > 3

    with pytest.raises(TrialStopped, match="stop requested"):
        trainer.train(candidate(), TrainContext(should_stop=should_stop))
    assert checks == 4


def test_unproducible_objective_metric(trainer: BertTrainer) -> None:
    context = TrainContext(objective_metrics=("accuracy", "latency_ms"))
    with pytest.raises(CandidateError, match="latency_ms") as info:
        trainer.train(candidate(), context)
    assert "accuracy" in str(info.value) and "params" in str(info.value)


def test_intermediate_metric_must_be_measured(trainer: BertTrainer) -> None:
    with pytest.raises(CandidateError, match="intermediate metric 'f1'"):
        trainer.train(candidate(), TrainContext(intermediate_metric="f1"))


@pytest.mark.parametrize(
    ("architecture", "message"),
    [
        ({**TINY, "num_attention_heads": 3}, "not divisible"),
        ({**TINY, "hidden_size": 0}, "positive int"),
        ({"num_hidden_layers": 1}, "lacks"),
    ],
)
def test_invalid_architecture(
    trainer: BertTrainer, architecture: dict[str, Any], message: str
) -> None:
    with pytest.raises(CandidateError, match=message):
        trainer.train(candidate(architecture=architecture), TrainContext())


def test_unknown_task(trainer: BertTrainer) -> None:
    with pytest.raises(CandidateError, match="unknown GLUE task"):
        trainer.train(candidate("squad"), TrainContext())


def test_the_dev_loss_can_be_the_reported_and_the_objective_metric(trainer: BertTrainer) -> None:
    reports = Reports()
    context = TrainContext(
        report=reports, intermediate_metric="dev_loss", objective_metrics=("dev_loss",)
    )
    result = trainer.train(candidate(), context)
    assert [step for step, _ in reports.calls] == [5, 10, 15, 20]
    assert reports.calls[-1][1] == result.metrics["dev_loss"] == result.metrics["sst2.dev_loss"]
    assert all(0 < value < 5 for _, value in reports.calls)  # a cross-entropy of two classes
    assert len({value for _, value in reports.calls}) > 1  # it moves as the model trains


def test_missing_data_is_not_a_candidate_error(trainer: BertTrainer) -> None:
    # Another worker may have the files: a machine problem, so the trial is retried elsewhere.
    with pytest.raises(FileNotFoundError, match="QNLI"):
        trainer.train(candidate("qnli"), TrainContext())


def test_mnli_reports_mismatched_too() -> None:
    unprefixed = ("accuracy", "accuracy_mismatched", "dev_loss", *COST_METRICS)
    assert BertTrainer.metric_names("mnli") == (
        *unprefixed,
        *(f"mnli.{name}" for name in unprefixed),
    )
    assert "params" in COST_METRICS and "flops" in COST_METRICS


def test_mnli_scores_both_dev_splits(tmp_path: Path) -> None:
    header = "index\tsentence1\tsentence2\tgold_label"
    labels = ["entailment", "neutral", "contradiction"]
    for name, rows in (("train", 48), ("dev_matched", 9), ("dev_mismatched", 6)):
        lines = [f"{i}\tthe cat sat {i}\ta dog ran\t{labels[i % 3]}" for i in range(rows)]
        (tmp_path / "MNLI").mkdir(exist_ok=True)
        (tmp_path / "MNLI" / f"{name}.tsv").write_text("\n".join([header, *lines]) + "\n")
    trainer = BertTrainer(glue_dir=str(tmp_path))
    spec = Candidate(
        space="bert",
        architecture=TINY,
        recipe={"max_steps": 2, "batch_size": 8, "max_seq_length": 16, "eval_every": 2},
        data={"task": "mnli"},
    )
    result = trainer.train(spec, TrainContext(objective_metrics=("accuracy_mismatched",)))
    assert set(result.metrics) == set(BertTrainer.metric_names("mnli"))
    assert result.metrics["eval_samples"] == 9
    assert result.info["glue_dir"] == str(tmp_path.resolve())
