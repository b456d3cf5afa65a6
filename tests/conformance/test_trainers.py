"""Every trainer runs :class:`TrainerConformance` (see ``trainer_suite.py``)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import ClassVar

from _procs import TABLE
from _tiny import TINY_BERT, save_tiny_teacher
from _tiny_lora import lora_candidate

from archsearch.spaces import Candidate, load_table
from archsearch.worker import Trainer
from conformance.trainer_suite import TrainerConformance


class TestBertTrainer(TrainerConformance):
    """The tiny 1 x 32 BERT student on a 128-example SST-2 slice, 8 steps."""

    objective_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "params")
    intermediate_metric = "accuracy"

    def make_trainer(self) -> Trainer:
        from archsearch.worker import BertTrainer

        return BertTrainer()

    def candidate(self, task: str = "sst2", **architecture: int) -> Candidate:
        return Candidate(
            space="bert",
            architecture={**TINY_BERT, **architecture},
            recipe={
                "max_steps": 8,
                "batch_size": 16,
                "max_seq_length": 32,
                "learning_rate": 1e-3,
                "eval_every": 4,
                "seed": 3,
                "measure_latency": False,
            },
            data={"task": task, "train_subset": 128, "eval_subset": 32},
        )

    def bad_candidates(self) -> list[Candidate]:
        return [self.candidate(num_attention_heads=3), self.candidate("squad")]


class TestTableTrainer(TrainerConformance):
    """Looks the candidate up in the FlexiBERT-small SST-2 table (no training, no reports)."""

    objective_metrics: ClassVar[tuple[str, ...]] = ("accuracy",)
    reports_intermediate = False

    def make_trainer(self) -> Trainer:
        from archsearch.worker import TableTrainer

        return TableTrainer(str(TABLE), duration_s=0.2)

    def candidate(self) -> Candidate:
        arch = load_table(str(TABLE)).scored("sst2")[0]
        return Candidate(space="flexibert-small", architecture=arch, data={"task": "sst2"})

    def bad_candidates(self) -> list[Candidate]:
        bert = Candidate(space="bert", architecture=TINY_BERT, data={"task": "sst2"})
        lone = {"l": 2, "a": [2, 2], "h": [128, 128], "s": ["sdp"] * 2, "f": [512] * 2}
        return [bert, Candidate(space="flexibert-small", architecture=lone, data={"task": "qqp"})]


class TestLoraTrainer(TrainerConformance):
    """DyLoRA (r_max 4) on a tiny 1 x 32 local base, a 64-example SST-2 slice, 6 steps."""

    objective_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "params")
    intermediate_metric = "accuracy"

    def make_trainer(self) -> Trainer:
        from archsearch.worker import LoraTrainer

        return LoraTrainer()

    def candidate(self) -> Candidate:
        return lora_candidate()

    def bad_candidates(self) -> list[Candidate]:
        good = lora_candidate()
        return [
            Candidate(space="bert", architecture=TINY_BERT, data={"task": "sst2"}),
            Candidate(space="lora", architecture={}, recipe={**good.recipe, "lora": {"r_max": 0}}),
        ]


class TestAutodistilTrainer(TrainerConformance):
    """A ``train`` job: the 1 x 32 student extracted from a tiny 2 x 64 local teacher, 8 steps
    on a 128-example SST-2 slice (the supernet and rank kinds: tests/worker)."""

    objective_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "params")
    intermediate_metric = "accuracy"

    def make_trainer(self) -> Trainer:
        from archsearch.worker._autodistil_trainer import AutodistilTrainer

        return AutodistilTrainer()

    def candidate(self, **student: int) -> Candidate:
        return Candidate(
            space="autodistil",
            kind="train",
            architecture={
                "teacher": _autodistil_teacher(),
                "student": {"layers": 1, "heads": 2, "hidden": 32, "intermediate": 64, **student},
            },
            recipe={
                "max_steps": 8,
                "batch_size": 16,
                "max_seq_length": 32,
                "learning_rate": 1e-3,
                "eval_every": 4,
                "seed": 3,
                "measure_latency": False,
            },
            data={"task": "sst2", "train_subset": 128, "eval_subset": 32},
        )

    def bad_candidates(self) -> list[Candidate]:
        return [self.candidate(layers=3), self.candidate(hidden=48)]


@functools.cache
def _autodistil_teacher() -> str:
    """The tiny teacher of ``_tiny.save_tiny_teacher``, once per test process."""
    folder = tempfile.TemporaryDirectory(prefix="archsearch-autodistil-teacher-")
    _KEEP.append(folder)
    return save_tiny_teacher(Path(folder.name) / "teacher")


_KEEP: list[tempfile.TemporaryDirectory[str]] = []
