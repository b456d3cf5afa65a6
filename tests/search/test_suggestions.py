"""A loop chooses whole candidates: the server turns its suggestions into trials and candidates.

A toy "joint" loop (architecture, recipe, data, kind and attributes of its own) drives a real
``StudyManager``: the candidate a worker receives merges the suggestion's recipe and data over
the spec's, carries its kind, and the trial holds the architecture's parameters (what the
dashboard shows) and the loop's attributes, which the next snapshot gives back.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, ClassVar

import optuna
import pytest
from _procs import TABLE, table_spec

from archsearch.search import LOOPS, LoopSnapshot, SearchLoop, Suggestion, make_loop
from archsearch.server._loop_guard import LoopFailed
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import StudyManager
from archsearch.server._suggest import ask_candidate, loop_snapshot
from archsearch.spaces import (
    SPACES,
    FlexiBertSmallSpace,
    GraphSpace,
    Registry,
    SpecError,
    UnknownName,
    make_space,
)


class JointLoop(SearchLoop):
    """Suggests random architectures with a recipe, data and kind of its own, and records
    what it saw of the history in each suggestion's attributes."""

    name = "test-joint"
    kind: ClassVar[str] = "train"

    def __init__(self, seed: int | None, n_objectives: int, options: Any = None) -> None:
        self.rng = random.Random(seed)
        self.seen: list[LoopSnapshot] = []

    def suggest(self, snapshot: LoopSnapshot, count: int = 1) -> list[Suggestion]:
        self.seen.append(snapshot)
        return [
            Suggestion(
                architecture=snapshot.space.sample(self.rng),
                recipe={"learning_rate": 0.5},
                data={"train_subset": 7},
                kind=self.kind,
                attrs={"test:history": len(snapshot.trials)},
            )
            for _ in range(count)
        ]


@pytest.fixture
def joint() -> Any:
    LOOPS.register("test-joint", JointLoop)
    yield JointLoop
    LOOPS.unregister("test-joint")


@pytest.fixture
def manager(tmp_path: Path) -> Any:
    m = StudyManager(f"sqlite:///{tmp_path / 's.db'}", lease_duration_s=30, heartbeat_interval_s=5)
    yield m
    m.close()


def test_the_worker_gets_the_suggestion_merged_over_the_spec(joint: Any, manager: Any) -> None:
    spec = table_spec("j", 3, loop="test-joint", recipe={"max_steps": 10})
    manager.launch(SearchSpec.from_dict(spec))
    grant = manager.acquire("w", ("table",))
    assert grant is not None
    cand = grant.candidate
    assert cand.recipe["learning_rate"] == 0.5 and cand.recipe["max_steps"] == 10
    assert cand.data["train_subset"] == 7 and cand.data["task"] == "sst2"
    assert cand.kind == "train" and "kind" not in cand.to_dict()  # as before for training
    study = optuna.load_study(study_name="j", storage=manager.storage)
    trial = study.trials[grant.trial_number]
    space = FlexiBertSmallSpace(table=TABLE, task="sst2")
    assert trial.params == space.to_params(cand.architecture)  # the dashboard's parameters
    assert trial.system_attrs["test:history"] == 0
    # The next suggestion's snapshot holds the first trial, with the loop's attribute.
    second = manager.acquire("w", ("table",))
    assert second is not None
    assert study.trials[second.trial_number].system_attrs["test:history"] == 1


def test_a_job_kind_travels_with_the_candidate(joint: Any, manager: Any) -> None:
    JointLoop.kind = "score"
    try:
        manager.launch(SearchSpec.from_dict(table_spec("k", 2, loop="test-joint")))
        grant = manager.acquire("w", ("table",))
    finally:
        JointLoop.kind = "train"
    assert grant is not None and grant.candidate.kind == "score"
    assert grant.candidate.to_dict()["kind"] == "score"


def test_a_bad_suggestion_is_the_loops_failure() -> None:
    space = FlexiBertSmallSpace(table=TABLE, task="sst2")
    loop = JointLoop(0, 1)
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), sampler=loop.sampler)

    class BadRecipe(JointLoop):
        def suggest(self, snapshot: LoopSnapshot, count: int = 1) -> list[Suggestion]:
            return [Suggestion(architecture=space.sample(self.rng), recipe={"max_steps": -1})]

    with pytest.raises(LoopFailed, match=r"cannot train: recipe\.max_steps"):
        ask_candidate(BadRecipe(0, 1), study, space)


def test_snapshot_trials_are_read_once_and_read_only() -> None:
    space = FlexiBertSmallSpace(table=TABLE, task="sst2")
    loop = JointLoop(1, 1)
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), sampler=loop.sampler)
    asked = ask_candidate(loop, study, space)
    study.tell(asked.number, 0.5)
    snapshot = loop_snapshot(study, space)
    (t,) = snapshot.trials
    assert snapshot.trials is snapshot.trials  # loaded once
    assert t.state == "COMPLETE" and t.values == (0.5,) and snapshot.completed == (t,)
    assert t.attrs["test:history"] == 0 and t.architecture is None  # no candidate stored
    assert space.from_params(t.params) == asked.architecture
    with pytest.raises(TypeError):
        t.params["x"] = 1  # type: ignore[index]


def test_registries_name_every_implementation_in_errors() -> None:
    with pytest.raises(
        UnknownName, match=r"unknown loop 'nope' \(one of autodistil, boshnas, embedding-gp, "
    ):
        make_loop("nope", 0, 1)
    with pytest.raises(
        SpecError, match=r"^space: unknown space 'x' \(one of autodistil, bert, flexibert, "
    ):
        make_space("x")
    assert list(SPACES) == sorted(SPACES) and isinstance(SPACES["bert"], type)
    reg: Registry[int] = Registry("thing")
    reg.register("b", 2)
    assert reg.register("a")(1) == 1
    assert list(reg) == ["a", "b"] and reg.get("c") is None
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 3)
    with pytest.raises(KeyError):
        reg["c"]
    assert [] not in reg and reg.get([]) is None  # type: ignore[call-overload]  # any JSON value


def test_graph_spaces_are_declared_not_probed() -> None:
    assert isinstance(make_space("flexibert"), GraphSpace)
    assert isinstance(make_space("flexibert-small"), GraphSpace)
    assert not isinstance(make_space("bert"), GraphSpace)
    with pytest.raises(SpecError, match="embeds architecture graphs"):
        SearchSpec.from_dict({"name": "x", "space": "bert", "loop": "embedding-gp", "n_trials": 3})
