"""Every registered search loop runs :class:`LoopConformance` (see ``loop_suite.py``)."""

from __future__ import annotations

from typing import Any, ClassVar

import optuna
import pytest
from _procs import TABLE

from archsearch.search import LOOPS, SearchLoop, make_loop
from archsearch.server._derived_trials import completion_extras
from archsearch.server._rank_trials import CompletedJob
from archsearch.server._spec import Objective, SearchSpec
from archsearch.server._suggest import AskedCandidate
from archsearch.spaces import (
    AutoDistilSpace,
    BertSpace,
    Candidate,
    DesignSpace,
    FlexiBertSmallSpace,
    FlexiBertSpace,
)
from conformance.loop_suite import LoopConformance, _score

#: A small library (30 seeded draws of the full FlexiBERT space), a cheap embedding fit and a
#: short initial design, so each library-loop test takes about a second.
LIBRARY_OPTIONS: dict[str, Any] = {
    "library_size": 30,
    "n_init": 3,
    "batch_size": 4,
    "embedding_dim": 4,
    "embedding": {"partners": 4, "min_epochs": 10, "max_epochs": 50, "anchors": 8},
}


class _SamplerLoop(LoopConformance):
    def make_loop(self, seed: int, n_objectives: int) -> SearchLoop:
        return make_loop(self.loop_name, seed, n_objectives)

    def make_space(self) -> DesignSpace:
        return BertSpace()


class TestRandomLoop(_SamplerLoop):
    loop_name = "random"


class TestTpeLoop(_SamplerLoop):
    loop_name = "tpe"


class TestNsga2Loop(_SamplerLoop):
    loop_name = "nsga2"


class TestGpLoop(_SamplerLoop):
    loop_name = "gp"
    n_asks = 6  # each GP fit costs a little; past its 10 random startup trials is not needed


class _LibraryLoop(LoopConformance):
    n_asks = 6
    #: The loop's own options (a cheap surrogate fit).
    own_options: ClassVar[dict[str, Any]] = {}

    def make_loop(self, seed: int, n_objectives: int) -> SearchLoop:
        return make_loop(
            self.loop_name, seed, n_objectives, {**LIBRARY_OPTIONS, **self.own_options}
        )

    def make_space(self) -> DesignSpace:
        return FlexiBertSpace()


class TestBoshnasLoop(_LibraryLoop):
    loop_name = "boshnas"
    own_options: ClassVar[dict[str, Any]] = {
        "n_starts": 2,
        "surrogate_options": {"max_epochs": 20, "warm_max_epochs": 5},
    }


class TestAdaptiveBoshnasLoop(TestBoshnasLoop):
    """BOSHNAS choosing its features as results arrive, with believed results in flight."""

    own_options: ClassVar[dict[str, Any]] = {
        **TestBoshnasLoop.own_options,
        "features": "auto",
        "pending": "believer",
    }


class TestEmbeddingGPLoop(_LibraryLoop):
    loop_name = "embedding-gp"


class TestNumericGPLoop(_LibraryLoop):
    loop_name = "numeric-gp"


class _MutationLoop(LoopConformance):
    multi_objective = False  # one objective; several are refused at launch
    options: ClassVar[dict[str, Any]] = {}

    def make_loop(self, seed: int, n_objectives: int) -> SearchLoop:
        return make_loop(self.loop_name, seed, n_objectives, self.options)

    def make_space(self) -> DesignSpace:
        return BertSpace()


class TestEvolutionLoop(_MutationLoop):
    loop_name = "evolution"
    options: ClassVar[dict[str, Any]] = {"population": 4, "sample": 2}  # mutations within 8 asks


class TestEvolutionLoopOnATable(TestEvolutionLoop):
    def make_space(self) -> DesignSpace:
        return FlexiBertSmallSpace(table=TABLE, task="sst2")


class TestLocalSearchLoop(_MutationLoop):
    loop_name = "local-search"


class TestLocalSearchLoopOnATable(TestLocalSearchLoop):
    def make_space(self) -> DesignSpace:
        return FlexiBertSmallSpace(table=TABLE, task="sst2")


class TestAutoDistilLoop(LoopConformance):
    """Three sub-spaces of two students: 3 supernet, 3 rank and (top_n 3) 3 train jobs."""

    n_asks = 8

    def make_loop(self, seed: int, n_objectives: int) -> SearchLoop:
        return make_loop(self.loop_name, seed, n_objectives, {"top_n": 3})

    def make_space(self) -> DesignSpace:
        return AutoDistilSpace(
            subspaces=[
                {"name": n, "layers": [layers / 6], "heads": [0.5, 1.0], "mlp_ratio": [2.0]}
                for n, layers in (("x", 1), ("y", 2), ("z", 3))
            ]
        )

    loop_name = "autodistil"

    def tell(self, study: optuna.Study, asked: AskedCandidate, values: list[float]) -> None:
        """A rank job reports each student's score; the server records them as trials."""
        space = self.make_space()
        assert isinstance(space, AutoDistilSpace)
        s = asked.suggestion
        metrics: dict[str, float] = {}
        if s.kind == "rank":
            for st in space.students[asked.architecture["subspace"]["name"]]:
                arch = space.student_arch(st)
                metrics[f"accuracy@{st.key()}"] = _score(arch)
                metrics[f"size@{st.key()}"] = float(space.params(st))
        objectives = (Objective("accuracy", "maximize"), Objective("size", "minimize"))
        job = CompletedJob(
            spec=SearchSpec("c", "autodistil", 9, objectives=objectives[: len(values)]),
            space=space,
            number=asked.number,
            load_trial=lambda: study.trials[asked.number],
            candidate=Candidate(
                "autodistil", dict(asked.architecture), dict(s.recipe), kind=s.kind
            ),
            metrics=metrics,
        )
        for t in completion_extras(job).trials:
            study.add_trial(t)
        study.tell(asked.number, values)


def test_every_registered_loop_runs_the_suite() -> None:
    covered = {
        cls.loop_name
        for cls in globals().values()
        if isinstance(cls, type) and issubclass(cls, LoopConformance) and cls.loop_name
    }
    assert covered == set(LOOPS), "add a LoopConformance subclass for each new loop"


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_make_loop_builds_each_registered_loop(name: str) -> None:
    options = LIBRARY_OPTIONS if name in ("boshnas", "embedding-gp", "numeric-gp") else None
    assert make_loop(name, 0, 1, options).name == name


class TestJointPendingGPLoop(TestNumericGPLoop):
    """``numeric-gp`` with the rows in flight as qLogEI's ``X_pending``, one row per fit."""

    own_options: ClassVar[dict[str, Any]] = {"pending": "joint", "batch_size": 1}


class TestRandomDesignGPLoop(TestNumericGPLoop):
    """``numeric-gp`` whose initial design is random rows (its default is greedy maximin)."""

    own_options: ClassVar[dict[str, Any]] = {"init": "random"}
