"""Joint search: a spec's ``data_space`` makes data choices part of every candidate, chosen
by the loop with the architecture and shown as readable ``data.<field>`` parameters."""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import optuna
import pytest
from _procs import TABLE, table_spec
from optuna.distributions import CategoricalDistribution

from archsearch.search import LOOPS, BoshnasLoop, OptunaSamplerLoop, make_loop
from archsearch.search._library import JointRows
from archsearch.search._library_loops import LOOP_ATTR
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import StudyManager
from archsearch.server._suggest import ask_candidate
from archsearch.spaces import DataSpace, FlexiBertSmallSpace, SpecError, load_table

CHOICES = {
    "selection": [
        {"method": "none"},
        {"method": "dsir", "k": 2000},
        {"method": "random", "size": 2000},
    ]
}
LABELS = ["none", "dsir k=2000", "random size=2000"]
#: what a launched spec's values become: a DSIR value names the default target (test)
LAUNCHED = {
    "selection": [
        *CHOICES["selection"][:1],
        {"method": "dsir", "k": 2000, "target": "test"},
        *CHOICES["selection"][2:],
    ]
}
LAUNCHED_LABELS = ["none", "dsir k=2000 target=test", "random size=2000"]


def joint_spec(name: str, n_trials: int, **kw: Any) -> dict[str, Any]:
    """The table's architectures, trained by the bert trainer (which reads the data choices;
    the table trainer would ignore them, and is refused with a data space)."""
    return {**table_spec(name, n_trials, **kw), "trainer": "bert"}


@pytest.fixture(scope="module")
def space() -> FlexiBertSmallSpace:
    return FlexiBertSmallSpace(table=TABLE, task="sst2")


@pytest.fixture
def manager(tmp_path: Path) -> Any:
    m = StudyManager(f"sqlite:///{tmp_path / 's.db'}", lease_duration_s=30, heartbeat_interval_s=5)
    yield m
    m.close()


def test_labels_are_readable_and_the_grid_round_trips() -> None:
    ds = DataSpace.from_spec({**CHOICES, "train_subset": [500, 1000]}, {})
    assert ds is not None and ds.labels["selection"] == LABELS
    assert ds.labels["train_subset"] == ["500", "1000"] and len(ds) == 6
    combos = list(ds.combos())
    assert [ds.index(c) for c in combos] == list(range(6))
    for c in combos:
        assert ds.from_params(ds.to_params(c)) == c
    assert ds.one_hot().shape == (6, 5) and (ds.one_hot().sum(axis=1) == 2).all()
    assert ds.describe(combos[3]) == "selection=dsir k=2000, train_subset=1000"


@pytest.mark.parametrize(
    ("data_space", "data", "field"),
    [
        ([{"method": "none"}], {}, "data_space: must be a JSON object"),
        ({"selection": []}, {}, r"data_space\.selection: must be a non-empty list"),
        ({"selection": {"method": "none"}}, {}, r"data_space\.selection: must be a non-empty"),
        ({"task": ["sst2", "mrpc"]}, {}, r"data_space\.task: cannot be searched"),
        ({"eval_subset": [10, 20]}, {}, r"data_space\.eval_subset: cannot be searched"),
        ({"selection": [{"method": "dsr"}]}, {}, r"data_space\.selection\[0\]\.method: unknown"),
        (
            {"selection": [{"method": "none"}, {"method": "dsir", "kk": 5}]},
            {},
            r"data_space\.selection\[1\]\.kk: unknown field",
        ),
        ({"selection": [{"method": "random"}]}, {}, r"data_space\.selection\[0\]\.size"),
        ({"selection": [{}, {"method": "none"}]}, {}, r"selection\[1\]: repeats .*\[0\]"),
        ({"train_subset": ["a"]}, {}, r"data_space\.train_subset\[0\]: must be int"),
        ({"nonsense": [1]}, {}, r"data_space\.nonsense\[0\]: unknown field"),
        (CHOICES, {"selection": {"method": "none"}}, r"data\.selection: is searched by"),
    ],
)
def test_bad_data_spaces_name_the_field(data_space: Any, data: dict, field: str) -> None:
    spec = joint_spec("bad", 3, data_space=data_space, data=data)
    with pytest.raises(SpecError, match=field):
        SearchSpec.from_dict(spec)


def test_a_loop_that_does_not_choose_data_is_refused() -> None:
    class NoData(OptunaSamplerLoop):
        chooses_data = False

    LOOPS.register("test-nodata", functools.partial(NoData, "random"))
    try:
        with pytest.raises(SpecError, match="data_space: the test-nodata loop does not choose"):
            SearchSpec.from_dict(joint_spec("x", 3, loop="test-nodata", data_space=CHOICES))
    finally:
        LOOPS.unregister("test-nodata")


def test_the_spec_keeps_its_data_space_across_a_restart() -> None:
    spec = SearchSpec.from_dict(joint_spec("keep", 3, data_space={"train_subset": [64, 128]}))
    again = SearchSpec.from_json(spec.to_json())  # what a restarted server reads
    assert again.data_space == {"train_subset": [64, 128]} == spec.data_space
    assert again.data_choices is not None and again.data_choices.fields == ("train_subset",)
    assert SearchSpec.from_dict(joint_spec("none", 3)).data_choices is None


@pytest.mark.parametrize("loop", ["random", "tpe"])  # boshnas: the next tests
def test_the_worker_gets_the_chosen_data_and_the_trial_shows_it(loop: str, manager: Any) -> None:
    spec = joint_spec("j", 9, loop=loop, data_space=CHOICES)
    manager.launch(SearchSpec.from_dict(spec))
    study = optuna.load_study(study_name="j", storage=manager.storage)
    seen = []
    for _ in range(9):
        grant = manager.acquire("w", ("bert",))
        assert grant is not None
        trial = study.trials[grant.trial_number]
        label = trial.params["data.selection"]
        assert trial.distributions["data.selection"] == CategoricalDistribution(LAUNCHED_LABELS)
        chosen = LAUNCHED["selection"][LAUNCHED_LABELS.index(label)]
        assert grant.candidate.data["selection"] == chosen
        assert grant.candidate.data["task"] == "sst2"  # merged over the spec's data
        seen.append((label, repr(grant.candidate.architecture)))
    assert len({s[0] for s in seen}) >= 2  # the loop chose among the data choices


def _score(table: Any, arch: dict, data: dict) -> float:
    """A synthetic joint objective: the table's score, plus 0.05 for DSIR."""
    return table.score(arch, "sst2") + (0.05 if data["selection"]["method"] == "dsir" else 0.0)


def test_tpe_learns_the_better_data_choice(space: FlexiBertSmallSpace) -> None:
    table = load_table(TABLE)
    ds = DataSpace.from_spec(CHOICES, {})
    loop = make_loop("tpe", 0, 1, {"n_startup_trials": 10})
    study = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(), sampler=loop.sampler, direction="maximize"
    )
    chosen = []
    for _ in range(40):
        asked = ask_candidate(loop, study, space, data_space=ds)
        data = dict(asked.suggestion.data)
        assert ds.from_params(study.trials[asked.number].params) == data
        study.tell(asked.number, _score(table, asked.architecture, data))
        chosen.append(data["selection"]["method"])
    # after the random start-up, DSIR (the better choice) dominates; at random it is a third
    assert chosen[20:].count("dsir") >= 14, chosen


def test_boshnas_searches_architecture_and_data_jointly(space: FlexiBertSmallSpace) -> None:
    table = load_table(TABLE)
    ds = DataSpace.from_spec(CHOICES, {})
    assert ds is not None
    loop = BoshnasLoop(seed=1, n_objectives=1, options={"n_init": 4, "batch_size": 4})
    study = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(), sampler=loop.sampler, direction="maximize"
    )
    joint = JointRows(loop.library(space), ds)
    assert len(joint) == 3 * len(loop.library(space))
    # each row's features are its library row's with the data choice's one-hot appended
    base = loop.library(space).features(loop.features)
    assert joint.features(loop.features).shape == (len(joint), base.shape[1] + 3)
    pairs = set()
    for _ in range(8):
        asked = ask_candidate(loop, study, space, data_space=ds)
        data = dict(asked.suggestion.data)
        trial = study.trials[asked.number]
        assert trial.params["data.selection"] in LABELS
        assert ds.from_params(trial.params) == data  # realise() set the data parameter
        row = trial.system_attrs[LOOP_ATTR]
        pairs.add((row, ds.index(data)))
        study.tell(asked.number, _score(table, asked.architecture, data))
    assert len(pairs) == 8  # never an (architecture, data) pair twice


def test_a_requeued_trial_keeps_its_enqueued_data(space: FlexiBertSmallSpace) -> None:
    ds = DataSpace.from_spec(CHOICES, {})
    loop = make_loop("random", 0, 1, {})
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), sampler=loop.sampler)
    arch = space.sample(random.Random(0))
    study.enqueue_trial({**space.to_params(arch), "data.selection": "random size=2000"})
    asked = ask_candidate(loop, study, space, waiting=True, data_space=ds)
    assert asked.requeued and asked.architecture == arch
    assert asked.suggestion.data == {"selection": {"method": "random", "size": 2000}}
