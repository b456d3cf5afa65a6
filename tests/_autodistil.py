"""Shared by the autodistil tests: the trainer's metadata as the server learns it, and a small
study (two sub-spaces of two MiniLM students each)."""

from __future__ import annotations

from typing import Any

import pytest

from archsearch.server._trainers import TrainerCatalogue, installed_trainers
from archsearch.spaces import AutoDistilSpace, TrainerInfo

#: What the autodistil trainer declares (so the server tests do not need the worker's torch).
AUTODISTIL = TrainerInfo(
    name="autodistil",
    spaces=("autodistil",),
    task_metrics="glue",
    cost_metrics=("params", "flops"),
    metrics=("relation_loss",),
    multi_task=True,
    labelled_metrics=True,
)
#: A trainer of any space (so a loop's own check of the space is reached).
ANY = TrainerInfo(name="any", task_metrics="glue")
CATALOGUE = TrainerCatalogue([AUTODISTIL, ANY])

#: Two sub-spaces of two students each over the MiniLM teacher (H tied to A).
SUBSPACES: list[dict[str, Any]] = [
    {"name": "a", "layers": [2 / 6], "heads": [4 / 12, 6 / 12], "mlp_ratio": [2.0]},
    {"name": "b", "layers": [3 / 6], "heads": [6 / 12, 8 / 12], "mlp_ratio": [2.0]},
]
SPACE = AutoDistilSpace(subspaces=SUBSPACES)

#: Marks a test that runs the worker's autodistil trainer (skipped where it is not installed).
needs_autodistil_trainer = pytest.mark.skipif(
    "autodistil" not in {info.name for info in installed_trainers()},
    reason="the autodistil trainer (worker side) is not installed",
)
