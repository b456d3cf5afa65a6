"""The worker on a CUDA GPU: FlexiBERT operations against the CPU, mixed precision, and whole
trials (BERT and FlexiBERT students, MLM pre-training, distillation) on the GPU.

Skipped where torch sees no CUDA device (CI has none); run on a GPU machine with
``python -m pytest tests/worker/test_cuda.py``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny import arch_with, batch, build, distill_candidate, save_tiny_teacher

from archsearch.spaces import Candidate
from archsearch.spaces._flexibert_overlap import flexibert_parameter_count
from archsearch.worker import TrainContext, TrialStopped
from archsearch.worker._bert_trainer import CHECKPOINT_DIR_ENV, BertTrainer
from archsearch.worker._pretrain_cache import PRETRAIN_DIR_ENV

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = torch.device("cuda")
OPERATIONS = [("sa", "sdp"), ("sa", "wma"), ("l", "dft"), ("l", "dct"), ("c", "5"), ("c", "9")]
#: Three layers, two width changes, one operation of each family.
MIXED = {
    "l": 3,
    "o": ["c", "l", "sa"],
    "p": ["5", "dft", "wma"],
    "h": [64, 128, 64],
    "n": [2, 2, 4],
    "f": [[128], [64, 128], [256]],
}


@pytest.mark.parametrize(("op", "param"), OPERATIONS)
def test_operation_on_cuda_matches_cpu(op: str, param: str) -> None:
    """Same weights, same batch (with padding): logits, loss and gradients agree in fp32."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    # dropout off: the two runs must see one function
    cpu = build(arch_with(op, param), labels=3).eval()
    gpu = build(arch_with(op, param), labels=3).eval().to(CUDA)
    inputs = batch([16, 11, 5])
    labels = torch.tensor([0, 2, 1])
    out_cpu = cpu(**inputs, labels=labels)
    out_gpu = gpu(**{k: v.to(CUDA) for k, v in inputs.items()}, labels=labels.to(CUDA))
    torch.testing.assert_close(out_gpu.logits.cpu(), out_cpu.logits, atol=1e-4, rtol=1e-4)
    out_cpu.loss.backward()
    out_gpu.loss.backward()
    for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters(), strict=True):
        assert p_gpu.grad is not None, name
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, atol=1e-4, rtol=1e-3, msg=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("op", "param"), OPERATIONS)
def test_operation_under_autocast(op: str, param: str, dtype: torch.dtype) -> None:
    """Forward and backward under the trainer's autocast: finite, close to fp32, every
    parameter gets a gradient."""
    model = build(arch_with(op, param), labels=3).eval().to(CUDA)
    inputs = {k: v.to(CUDA) for k, v in batch([16, 11, 5]).items()}
    labels = torch.tensor([0, 2, 1], device=CUDA)
    with torch.no_grad():
        reference = model(**inputs).logits
    with torch.autocast("cuda", dtype=dtype):
        out = model(**inputs, labels=labels)
    assert out.loss is not None and torch.isfinite(out.loss)
    torch.testing.assert_close(out.logits.float(), reference, atol=0.1, rtol=0.1)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.fixture(scope="module")
def trainer() -> BertTrainer:
    return BertTrainer()


@pytest.fixture(autouse=True)
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path / "checkpoints"))
    monkeypatch.setenv(PRETRAIN_DIR_ENV, str(tmp_path / "pretrained"))
    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path / "cache"))


def bert_candidate(**recipe: Any) -> Candidate:
    return Candidate(
        space="bert",
        architecture={
            "num_hidden_layers": 2,
            "hidden_size": 64,
            "num_attention_heads": 2,
            "intermediate_size": 128,
        },
        recipe={
            "max_steps": 200,
            "batch_size": 32,
            "max_seq_length": 64,
            "learning_rate": 1e-3,
            "eval_every": 100,
            "seed": 7,
            **recipe,
        },
        data={"task": "sst2", "train_subset": 4096, "eval_subset": 256},
    )


@pytest.mark.parametrize(
    ("precision", "expected"), [("auto", "bf16"), ("fp16", "fp16"), ("fp32", "fp32")]
)
def test_bert_student_trains_on_cuda(trainer: BertTrainer, precision: str, expected: str) -> None:
    """A trial on the GPU in each precision: it learns (above the majority class on the
    256-example slice), reports CUDA cost metrics and says where it ran."""
    result = trainer.train(bert_candidate(precision=precision), TrainContext(device="cuda"))
    assert result.info["device"].startswith("cuda") and result.info["precision"] == expected
    metrics = result.metrics
    assert all(math.isfinite(v) for v in metrics.values())
    labels = trainer.last_labels
    majority = max(labels.count(0), labels.count(1)) / len(labels)
    assert metrics["accuracy"] > majority
    assert metrics["peak_train_memory_mb"] > 0
    assert metrics["latency_ms_b1"] > 0 and metrics["latency_ms_b32"] > 0


def test_flexibert_student_with_pretraining_on_cuda(trainer: BertTrainer) -> None:
    """A heterogeneous FlexiBERT candidate, MLM pre-trained then fine-tuned, all on the GPU."""
    spec = Candidate(
        space="flexibert",
        architecture=MIXED,
        recipe={
            "max_steps": 40,
            "batch_size": 32,
            "max_seq_length": 64,
            "learning_rate": 1e-3,
            "eval_every": 20,
            "seed": 3,
            "pretrain_steps": 20,
        },
        data={"task": "sst2", "train_subset": 1024, "eval_subset": 256},
    )
    result = trainer.train(spec, TrainContext(device="cuda"))
    assert result.info["device"].startswith("cuda") and result.info["precision"] == "bf16"
    assert result.metrics["pretrain_steps"] == 20.0
    assert result.metrics["params"] == flexibert_parameter_count(
        MIXED, len(trainer.tokenizer), 512, 2, 2
    )
    assert all(math.isfinite(v) for v in result.metrics.values())


@pytest.mark.parametrize("mode", ["logits", "minilmv2"])
def test_distillation_on_cuda(trainer: BertTrainer, tmp_path: Path, mode: str) -> None:
    """Teacher-initialised, distilled student on the GPU (a tiny local teacher)."""
    teacher = save_tiny_teacher(tmp_path / "teacher")
    spec = distill_candidate(teacher, init="teacher", distill={"mode": mode})
    trainer.teacher_overrides["wnli"] = {"epochs": 0.25, "max_seq_length": 32}
    result = trainer.train(spec, TrainContext(device="cuda"))
    assert result.info["device"].startswith("cuda")
    assert all(math.isfinite(v) for v in result.metrics.values())


def test_dylora_trial_on_cuda_scores_every_rank() -> None:
    """One DyLoRA fine-tuning of the tiny base on the GPU scores every rank 1..r_max."""
    from _tiny_lora import lora_candidate

    from archsearch.worker._registry import create_trainer

    result = create_trainer("lora", {}).train(lora_candidate(), TrainContext(device="cuda"))
    assert result.info["device"].startswith("cuda")
    for b in range(1, 5):
        assert 0.0 <= result.metrics[f"accuracy@r{b}"] <= 1.0
    assert result.metrics["accuracy"] == result.metrics["accuracy@r4"]


def test_dylora_merged_equals_unmerged_on_cuda() -> None:
    """On the GPU, merging at one rank and then switching rank gives the unmerged logits (the
    stale-merge pitfall), and unmerging restores the base weights."""
    from _tiny_lora import tiny_classifier

    from archsearch.worker._dylora import attach_dylora, dylora_of
    from archsearch.worker._lora_spec import parse_lora_spec

    torch.backends.cuda.matmul.allow_tf32 = False
    model = (
        attach_dylora(tiny_classifier(), parse_lora_spec({"r_max": 8, "alpha": 16.0}))
        .to(CUDA)
        .eval()
    )
    lora = dylora_of(model)
    with torch.no_grad():
        for weight, _ in lora.factors():
            weight.copy_(torch.randn(weight.shape, device=CUDA) * 0.3)
    ids = torch.randint(0, 100, (4, 9), device=CUDA)
    base_weights = [layer.get_base_layer().weight.detach().clone() for layer in lora.layers]

    def logits() -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = model(input_ids=ids).logits
        return out

    unmerged = {}
    for rank in range(1, 9):
        lora.set_rank(rank)
        unmerged[rank] = logits()
    lora.set_rank(3)
    lora.merge()
    for rank in (5, 1, 8, 2, 3):
        lora.set_rank(rank)
        torch.testing.assert_close(logits(), unmerged[rank], atol=1e-5, rtol=1e-5)
    lora.unmerge()
    for layer, weight in zip(lora.layers, base_weights, strict=True):
        torch.testing.assert_close(layer.get_base_layer().weight, weight, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_a_stopped_trial_continues_on_cuda(
    precision: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The saved progress holds CUDA tensors, the GPU's random state and (fp16) the loss
    scaler's; the retry continues from it to the uninterrupted result (GPU kernels need not be
    bit-reproducible, so the scores are compared within one dev example in 64)."""
    candidate = bert_candidate(precision=precision, max_steps=60, eval_every=20)
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path / "whole"))
    whole = BertTrainer().train(candidate, TrainContext(device="cuda"))
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path / "stopped"))
    checks = [0]

    def stop_at_step_30() -> bool:
        checks[0] += 1
        return checks[0] == 34  # one check a step and one after each report, plus the start

    trainer = BertTrainer()
    with pytest.raises(TrialStopped):
        trainer.train(candidate, TrainContext(device="cuda", should_stop=stop_at_step_30))
    again = trainer.train(candidate, TrainContext(device="cuda"))
    assert int(again.info["resumed_from_step"]) > 20
    assert again.metrics["accuracy"] == pytest.approx(whole.metrics["accuracy"], abs=4 / 256)
