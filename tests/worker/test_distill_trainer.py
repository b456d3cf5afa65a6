"""Teacher-initialised and distilled students inside a real trial (tiny local teacher)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _tiny import TINY_BERT, distill_candidate, save_tiny_teacher

from archsearch.worker import TrainContext
from archsearch.worker._bert_trainer import BertTrainer

STUDENT = TINY_BERT


@pytest.fixture
def tiny_teacher(tmp_path: Path) -> str:
    return save_tiny_teacher(tmp_path / "teacher")


@pytest.mark.parametrize("mode", ["logits", "minilmv2"])
def test_teacher_init_and_distillation(tiny_teacher, tmp_path, monkeypatch, mode) -> None:
    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    trainer = BertTrainer()
    # The standard recipe is 5 epochs of WNLI; a fraction keeps the test fast.
    trainer.teacher_overrides["wnli"] = {"epochs": 0.25, "max_seq_length": 32}
    calls = []
    original = trainer.fine_tune_teacher

    def counting(*args, **kw):
        calls.append(args[0].id)
        return original(*args, **kw)

    monkeypatch.setattr(trainer, "fine_tune_teacher", counting)
    ctx = TrainContext(intermediate_metric="accuracy", objective_metrics=("accuracy",))
    result = trainer.train(
        distill_candidate(tiny_teacher, init="teacher", distill={"mode": mode}), ctx
    )
    assert 0 <= result.metrics["accuracy"] <= 1 and result.metrics["params"] > 0
    again = trainer.train(
        distill_candidate(tiny_teacher, init="teacher", distill={"mode": mode}, seed=1), ctx
    )
    assert "accuracy" in again.metrics
    assert calls == ["wnli"]  # the fine-tuned teacher is cached and reused
    assert any((tmp_path / "cache" / "teachers").iterdir())


def test_teacher_init_starts_from_teacher_slices(tiny_teacher, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    trainer = BertTrainer()
    trainer.teacher_overrides["wnli"] = {"epochs": 0.25, "max_seq_length": 32}
    cand = distill_candidate(tiny_teacher, init="teacher")
    task = __import__("archsearch.spaces", fromlist=["get_task"]).get_task("wnli")
    hooks = trainer.training_hooks(cand, task, torch.device("cpu"))
    assert hooks.init_fn is not None and hooks.loss_fn is None
    student = trainer.build_model(STUDENT, task)
    hooks.init_fn(student)
    teacher = trainer.teacher_for(task, tiny_teacher, torch.device("cpu"))
    w_s = student.bert.embeddings.word_embeddings.weight
    w_t = teacher.bert.embeddings.word_embeddings.weight
    assert torch.equal(w_s, w_t[:, :32])
