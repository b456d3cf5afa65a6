"""Every ``Stateful`` runs :class:`StatefulConformance` (see ``stateful_suite.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from archsearch.worker._batches import EpochBatches
from archsearch.worker._curriculum import Curriculum
from archsearch.worker._difficulty import Difficulties
from archsearch.worker._lora_model import RankDraws
from conformance.stateful_suite import StatefulConformance


class TestRankDraws(StatefulConformance):
    """DyLoRA's rank generator: each use draws a rank of 1..8."""

    def make(self) -> RankDraws:
        return RankDraws(seed=5)

    def advance(self, obj: RankDraws) -> Any:
        import torch

        return int(torch.randint(1, 9, (1,), generator=obj.generator))


class TestEpochBatches(StatefulConformance):
    """The data order: each use draws a micro-batch (epochs of 10 in batches of 4)."""

    def make(self) -> EpochBatches:
        return EpochBatches(10, 4, seed=3)

    def advance(self, obj: EpochBatches) -> Any:
        return next(obj)


class TestCurriculum(StatefulConformance):
    """A PUDF curriculum (its generator samples the items it asks the model about, and its
    ability estimate moves its bound): each use starts an epoch."""

    def make(self) -> Curriculum:
        rng = np.random.default_rng(0)
        difficulties = Difficulties(values=rng.normal(size=60), kind="length")
        options = {
            "method": "pudf",
            "scheduler": "linear",
            "val_fraction": 0.2,
            "num_obs": 8,
            "min_examples": 4,
            "stall_step": 0.1,
        }
        recipe = {"max_steps": 100, "batch_size": 4, "seed": 1}
        answers = np.random.default_rng(2).random(60) < 0.7
        return Curriculum(options, difficulties, recipe, answer=lambda items: answers[items])

    def advance(self, obj: Curriculum) -> Any:
        return obj(len(obj.trace))
