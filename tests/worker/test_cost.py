"""Cost metrics (parameters, FLOPs, latency, memory, provenance) and the trainer features that
report them: kept checkpoints, multi-task trials, precision, training hooks. Tiny models only."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny import TINY_BERT
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertForSequenceClassification
from transformers.models.bert.modeling_bert import BertLayer

from archsearch.spaces import Candidate, GlueTask, bert_parameter_count, get_task
from archsearch.worker import CandidateError, TrainContext
from archsearch.worker._bert_trainer import (
    AGGREGATED_COST_METRICS,
    COST_METRICS,
    BertTrainer,
)
from archsearch.worker._cost import (
    bert_flops,
    count_flops,
    count_parameters,
    count_parameters_without_embeddings,
    measure_latency_ms,
)
from archsearch.worker._loop import TrainingHooks, TrainingLoop
from archsearch.worker._memory_meter import PeakMemoryMeter
from archsearch.worker._provenance import code_version, provenance

TINY = TINY_BERT


def bert(architecture: dict[str, int], num_labels: int = 2, **kw: Any) -> Any:
    config = BertConfig(
        id2label={i: str(i) for i in range(num_labels)},
        num_hidden_layers=architecture["num_hidden_layers"],
        hidden_size=architecture["hidden_size"],
        num_attention_heads=architecture["num_attention_heads"],
        intermediate_size=architecture["intermediate_size"],
        **kw,
    )
    return BertForSequenceClassification(config)


@pytest.fixture(scope="module")
def trainer() -> BertTrainer:
    return BertTrainer()


def candidate(data: dict[str, Any] | None = None, **recipe: Any) -> Candidate:
    return Candidate(
        space="bert",
        architecture=TINY,
        recipe={
            "max_steps": 4,
            "batch_size": 16,
            "max_seq_length": 32,
            "learning_rate": 1e-3,
            "eval_every": 2,
            "seed": 3,
            "measure_latency": False,
            **recipe,
        },
        data=data or {"task": "sst2", "train_subset": 64, "eval_subset": 32},
    )


# ----------------------------------------------------------------------------- FLOPs


@pytest.mark.parametrize("seq_len", [8, 48])
def test_one_layer_flops_are_the_analytic_count(seq_len: int) -> None:
    # The per-layer formula, checked on a BertLayer alone with explicit (eager) attention.
    h, i = 32, 64
    eager: dict[str, Any] = {"attn_implementation": "eager"}
    config = BertConfig(hidden_size=h, num_attention_heads=4, intermediate_size=i, **eager)
    layer = BertLayer(config).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        layer(torch.randn(1, seq_len, h))
    s = seq_len
    assert counter.get_total_flops() == 8 * s * h * h + 4 * s * s * h + 4 * s * h * i


@pytest.mark.parametrize(("layers", "seq_len", "num_labels"), [(1, 16, 2), (3, 64, 3)])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_model_flops_are_the_analytic_count(
    layers: int, seq_len: int, num_labels: int, attention: str
) -> None:
    arch = {**TINY, "num_hidden_layers": layers}
    model = bert(arch, num_labels, attn_implementation=attention)
    model.train()
    # count_flops counts attention the same whatever implementation the model uses, ...
    assert count_flops(model, seq_len) == bert_flops(arch, seq_len, num_labels)
    # ... and leaves the model as it found it.
    assert model.config._attn_implementation == attention and model.training


# ----------------------------------------------------------------------------- parameters


def test_params_match_the_analytic_count() -> None:
    arch = {"num_hidden_layers": 2, "hidden_size": 48, "num_attention_heads": 3,
            "intermediate_size": 96}  # fmt: skip
    model = bert(arch, num_labels=3)
    assert count_parameters(model) == bert_parameter_count(arch, num_labels=3)


def test_params_without_embeddings_by_hand() -> None:
    n, h, i, labels = 2, 48, 96, 3
    arch = {"num_hidden_layers": n, "hidden_size": h, "num_attention_heads": 3,
            "intermediate_size": i}  # fmt: skip
    model = bert(arch, num_labels=labels)
    attention = 4 * (h * h + h) + 2 * h  # Q, K, V, output projection; LayerNorm
    ffn = (h * i + i) + (i * h + h) + 2 * h  # two linears; LayerNorm
    pooler, classifier = h * h + h, h * labels + labels
    assert count_parameters_without_embeddings(model) == n * (attention + ffn) + pooler + classifier
    embeddings = (30522 + 512 + 2) * h + 2 * h  # word, position, token type; LayerNorm
    assert count_parameters(model) - count_parameters_without_embeddings(model) == embeddings


# ----------------------------------------------------------------------------- latency, memory


@pytest.mark.parametrize("batch_size", [1, 4])
def test_latency_is_positive_and_bounded(batch_size: int) -> None:
    model = bert(TINY).train()
    calls = 0

    def count(*_: Any) -> None:
        nonlocal calls
        calls += 1

    model.register_forward_pre_hook(count)
    ms = measure_latency_ms(model, batch_size, 32, runs=5, warmup=1, max_seconds=10.0)
    assert math.isfinite(ms) and ms > 0
    assert calls == 6 and model.training  # 1 warm-up + 5 timed; mode restored
    calls = 0
    measure_latency_ms(model, batch_size, 32, runs=50, warmup=1, max_seconds=0.0, min_runs=2)
    assert calls == 3  # a zero budget still takes min_runs timed passes


def test_peak_memory_sees_an_allocation() -> None:
    with PeakMemoryMeter("cpu", interval_s=3600) as meter:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        meter.sample()  # where the caller knows memory peaks
        del block
    assert 48 <= meter.peak_mb < 1024
    with PeakMemoryMeter("cpu", interval_s=0.001) as sampled:
        block = torch.ones(64 * 2**20 // 4)
        time.sleep(0.05)  # the background thread samples meanwhile
        del block
    assert 48 <= sampled.peak_mb < 1024
    with PeakMemoryMeter("cpu") as idle:
        pass
    assert 0 <= idle.peak_mb < 16


def test_provenance() -> None:
    info = provenance(5, "sha256:abc", "cpu")
    assert info["seed"] == "5" and info["data_hash"] == "sha256:abc" and info["device"] == "cpu"
    assert "threads" in info["device_name"]
    assert info["code_version"] == code_version() and info["code_version"]
    assert info["torch_version"] == torch.__version__
    assert all(isinstance(v, str) for v in info.values())


# ----------------------------------------------------------------------------- trainer


def test_trial_metrics_carry_every_cost(trainer: BertTrainer) -> None:
    result = trainer.train(candidate(measure_latency=True), TrainContext())
    assert set(COST_METRICS) <= set(result.metrics)
    assert result.metrics["params"] == bert_parameter_count(TINY)
    assert result.metrics["flops"] == bert_flops(TINY, 32)
    assert result.metrics["params_no_embeddings"] < result.metrics["params"]
    for name in ("latency_ms_b1", "latency_ms_b32", "peak_train_memory_mb"):
        assert math.isfinite(result.metrics[name]) and result.metrics[name] >= 0
    assert result.metrics["latency_ms_b1"] > 0
    assert "checkpoint" not in result.info


def test_latency_can_be_skipped(trainer: BertTrainer) -> None:
    result = trainer.train(candidate(), TrainContext())
    assert not any("latency" in name for name in result.metrics)
    assert set(result.metrics) == set(BertTrainer.metric_names("sst2", measure_latency=False))
    with pytest.raises(CandidateError, match="latency_ms_b1"):
        trainer.train(candidate(), TrainContext(objective_metrics=("latency_ms_b1",)))


def test_best_checkpoint_is_kept(
    trainer: BertTrainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path))
    # One evaluation, so the best checkpoint is the final model.
    spec = candidate(keep_checkpoint=True, eval_every=4)
    result = trainer.train(spec, TrainContext())
    path = Path(result.info["checkpoint"])
    assert path == tmp_path / spec.fingerprint() and path.is_dir()
    note = json.loads((path / "archsearch_checkpoint.json").read_text())
    assert note["step"] == 4 and note["metric"] == "accuracy"
    assert note["value"] == result.metrics["accuracy"]

    loaded = BertForSequenceClassification.from_pretrained(path)
    task = get_task("sst2")
    dev = trainer.encode("sst2", "dev", 32, {"max_seq_length": 32, "seed": 3})
    loop = TrainingLoop(loaded, task, {"batch_size": 16}, TrainContext(), None, 0)
    assert loop.predict(dev).tolist() == trainer.last_predictions
    assert not list(tmp_path.glob(".*tmp*"))  # the staging folder was renamed into place


def test_checkpoint_is_the_best_evaluation(
    trainer: BertTrainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path))
    values: list[tuple[int, float]] = []

    def report(step: int, value: float) -> bool:
        values.append((step, value))
        return False

    spec = candidate(keep_checkpoint=True, eval_every=1, max_steps=6, learning_rate=3e-3)
    result = trainer.train(spec, TrainContext(report=report))
    note = json.loads(Path(result.info["checkpoint"], "archsearch_checkpoint.json").read_text())
    best = max(v for _, v in values)
    assert note["value"] == best
    assert note["step"] == next(s for s, v in values if v == best)  # the first best


def test_multi_task_trial(trainer: BertTrainer) -> None:
    reports: list[tuple[int, float]] = []

    def report(step: int, value: float) -> bool:
        reports.append((step, value))
        return False

    spec = candidate(
        {"task": "sst2", "tasks": ["sst2", "rte"], "train_subset": 48, "eval_subset": 24},
        max_seq_length=48,
    )
    result = trainer.train(spec, TrainContext(report=report, objective_metrics=("rte.accuracy",)))
    assert set(result.metrics) == set(BertTrainer.metric_names(["sst2", "rte"], False))
    for task in ("sst2", "rte"):
        assert 0 <= result.metrics[f"{task}.accuracy"] <= 1
        assert result.metrics[f"{task}.eval_samples"] == 24
        assert result.metrics[f"{task}.flops"] == bert_flops(TINY, 48)
    assert "accuracy" not in result.metrics  # no unprefixed task metric across tasks
    assert result.metrics["params"] == bert_parameter_count(TINY)
    assert result.metrics["train_seconds"] == pytest.approx(
        result.metrics["sst2.train_seconds"] + result.metrics["rte.train_seconds"]
    )
    assert set(AGGREGATED_COST_METRICS) - {"latency_ms_b1", "latency_ms_b32"} <= set(result.metrics)
    # Each task reports at its own steps: rte's come after sst2's.
    assert [s for s, _ in reports] == [2, 4, 6, 8]
    assert reports[-1][1] == result.metrics["rte.accuracy"]
    assert result.info["task"] == "sst2,rte"
    assert set(trainer.last_predictions_by_task) == {"sst2", "rte"}


def test_multi_task_intermediate_metric_of_one_task(trainer: BertTrainer) -> None:
    reports: list[int] = []

    def report(step: int, value: float) -> bool:
        reports.append(step)
        return False

    spec = candidate({"tasks": ["sst2", "rte"], "train_subset": 32, "eval_subset": 16}, max_steps=2)
    context = TrainContext(report=report, intermediate_metric="rte.accuracy")
    trainer.train(spec, context)
    assert reports == [4]  # only while training rte, its steps offset by sst2's 2


@pytest.mark.parametrize(
    ("data", "recipe", "message"),
    [
        ({"tasks": []}, {}, "non-empty list"),
        ({"tasks": ["sst2", "sst2"]}, {}, "twice"),
        ({"tasks": ["sst2", "nope"]}, {}, "unknown GLUE task"),
        ({"task": "sst2"}, {"precision": "fp8"}, "precision"),
        ({"task": "sst2"}, {"keep_checkpoint": "yes"}, "keep_checkpoint"),
    ],
)
def test_bad_trainer_fields(
    trainer: BertTrainer, data: dict[str, Any], recipe: dict[str, Any], message: str
) -> None:
    with pytest.raises(CandidateError, match=message):
        trainer.train(candidate(data, **recipe), TrainContext())


def test_bf16_autocast_on_cpu(trainer: BertTrainer) -> None:
    result = trainer.train(candidate(precision="bf16", max_steps=2), TrainContext())
    assert result.info["precision"] == "bf16"
    assert math.isfinite(result.metrics["accuracy"])


def test_training_hooks_replace_init_and_loss() -> None:
    calls = {"init": 0, "loss": 0}

    class HookedTrainer(BertTrainer):
        def training_hooks(
            self,
            candidate: Candidate,
            task: GlueTask,
            device: torch.device | None = None,
            context: TrainContext | None = None,
        ) -> TrainingHooks:
            def init_fn(model: torch.nn.Module) -> None:
                calls["init"] += 1

            def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
                calls["loss"] += 1
                assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
                return model(**batch).loss * 0.5

            return TrainingHooks(init_fn=init_fn, loss_fn=loss_fn)

    HookedTrainer().train(candidate(gradient_accumulation_steps=2), TrainContext())
    assert calls == {"init": 1, "loss": 8}
