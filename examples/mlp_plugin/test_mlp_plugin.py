"""archsearch's conformance suites on this plugin's space and trainer.

The suites live in archsearch's checkout (``tests/conformance``), not in the installed
package; run them from there:

    PYTHONPATH=<archsearch checkout>/tests pytest examples/mlp_plugin
"""

from __future__ import annotations

from typing import ClassVar

from conformance.space_suite import SpaceConformance
from conformance.trainer_suite import TrainerConformance
from mlp_plugin import MlpSpace, MlpTrainer

from archsearch.spaces import Candidate


class TestMlpSpace(SpaceConformance):
    invalid_architectures: ClassVar[list[tuple[object, str]]] = [
        ({"layers": 1, "width": 8}, "architecture")
    ]

    def make_space(self) -> MlpSpace:
        return MlpSpace()


class TestMlpTrainer(TrainerConformance):
    objective_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "params")
    intermediate_metric = "accuracy"

    def make_trainer(self) -> MlpTrainer:
        return MlpTrainer()

    def candidate(self) -> Candidate:
        arch = {"layers": 1, "width": 8, "lr": 0.01}
        return Candidate(space="mlp", architecture=arch, recipe={"max_steps": 3, "seed": 0})

    def bad_candidates(self) -> list[Candidate]:
        recipe = {"max_steps": 3, "seed": 0}
        return [
            Candidate(
                space="mlp", architecture={"layers": 0, "width": 8, "lr": 0.01}, recipe=recipe
            ),
            Candidate(space="mlp", architecture={"layers": 1, "width": 8}, recipe=recipe),
        ]
