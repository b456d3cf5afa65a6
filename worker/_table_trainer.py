"""The ``table`` trainer: answers with the score a tabular NAS benchmark recorded.

It drives load tests, fault tests and algorithm benchmarks without GPUs: "training" a candidate
means looking up its architecture in the table, after an optional simulated duration during
which the trial heartbeats and can be stopped like a real one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from archsearch.spaces import (
    TABLE_METRIC,
    Candidate,
    FlexiBertSmallSpace,
    SpecError,
    TrainerInfo,
    load_table,
)
from archsearch.worker._registry import register_trainer
from archsearch.worker._trainer import CandidateError, TrainContext, Trainer, TrainResult


@register_trainer
class TableTrainer(Trainer):
    """Looks candidates up in a FlexiBERT-format table.

    Args:
        table_path: the table JSON (for example ``dataset_small_sst2.json``).
        duration_s: simulated training time per candidate.
    """

    name = "table"
    info = TrainerInfo(
        name="table",
        description="answers with the score a FlexiBERT table recorded (no training)",
        spaces=(FlexiBertSmallSpace.name,),
        task_metrics="table",
        metrics=("score",),
        data_fields=("task",),  # the table's score is fixed: no data choice changes it
        required_space_options={
            "table": "the table trainer scores only the architectures its table holds, and "
            "most of the flexibert-small space is not in it (those trials fail with 'no "
            "score'); pass --table PATH (the table the workers use) to search only its "
            "architectures"
        },
    )

    def __init__(self, table_path: str, duration_s: float = 0.0) -> None:
        self.table = load_table(str(table_path))
        # what the server compares with its study's table (server/_table_check.py)
        self._sha256 = hashlib.sha256(Path(table_path).read_bytes()).hexdigest()
        self.duration_s = duration_s
        self._space = FlexiBertSmallSpace()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TableTrainer:
        """A trainer for a worker's options: ``table`` (required) and ``duration_s``.

        Raises:
            ValueError: No table named, or it cannot be read.
        """
        if not options.get("table"):
            raise ValueError(
                "--trainer table needs --table PATH (a FlexiBERT table JSON, e.g. "
                "../shared/data/flexibert-small/dataset_small_sst2.json)"
            )
        return cls(options["table"], duration_s=float(options.get("duration_s") or 0.0))

    def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        if candidate.space != FlexiBertSmallSpace.name:
            raise CandidateError(
                f"the table trainer looks up flexibert-small candidates, not {candidate.space}"
            )
        try:
            arch = self._space.validate(candidate.architecture)
        except SpecError as e:
            raise CandidateError(f"not a flexibert-small architecture: {e}") from e
        task = str(candidate.data["task"])
        score = self.table.score(arch, task)
        if score is None:
            raise CandidateError(
                f"{self._space.describe(arch)} has no {task} score in {self.table.path}"
            )
        end = time.monotonic() + self.duration_s
        while (left := end - time.monotonic()) > 0:
            context.check()
            time.sleep(min(left, 0.05))
        context.check()
        metric = TABLE_METRIC.get(task, "accuracy")
        metrics = {metric: score, "score": score}
        missing = [m for m in context.objective_metrics if m not in metrics]
        if missing:
            raise CandidateError(
                f"the table trainer cannot measure {missing}; it gives {sorted(metrics)}"
            )
        info = {"table": str(self.table.path), "task": task, "table_sha256": self._sha256}
        return TrainResult(metrics=metrics, info=info)
