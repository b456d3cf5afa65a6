"""Server-side pruning (single- and multi-objective), every loop, duplicate candidates."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from _procs import TABLE, table_spec
from optuna.trial import TrialState

from archsearch.search import LIBRARY_LOOPS, LOOPS
from archsearch.server._spec import SearchSpec
from archsearch.server._studies import MIN_REPEAT_STREAK, StudyManager
from archsearch.spaces import SpecError, load_table


@pytest.fixture
def manager(tmp_path: Path):
    m = StudyManager(f"sqlite:///{tmp_path / 's.db'}", lease_duration_s=30, heartbeat_interval_s=5)
    yield m
    m.close()


def _curve(arch: dict) -> float:
    """A deterministic learning-curve ceiling per architecture (wider is better here)."""
    return sum(arch["h"]) / (256 * arch["l"])


@pytest.mark.parametrize("objectives", [["accuracy:max"], ["accuracy:max", "params:min"]])
@pytest.mark.parametrize("pruner", ["median", "successive_halving"])
def test_pruning_single_and_multi_objective(manager, objectives, pruner) -> None:
    spec = SearchSpec.from_dict(
        {
            **table_spec("p", 16),
            # the worker here is the test, reporting params too: a bert trainer's metrics
            "trainer": "bert",
            "objectives": objectives,
            "pruner": {"type": pruner},
            "seed": 3,
        }
    )
    manager.launch(spec)
    pruned = completed = 0
    while (g := manager.acquire("w", ("bert",))) is not None:
        top = _curve(g.candidate.architecture)
        stopped = False
        for step in range(1, 9):
            should, _ = manager.report(g.lease_id, step, top * step / 8)
            if should:
                stopped = True
                break
        if stopped:
            pruned += 1
            continue
        metrics = {"accuracy": top, "params": 1e6 * g.candidate.architecture["l"]}
        manager.complete(g.lease_id, metrics, {})
        completed += 1
    h = manager.get("p")
    states = [t.state for t in manager.trials(h)]
    assert states.count(TrialState.PRUNED) == pruned > 0
    assert states.count(TrialState.COMPLETE) == completed > 0
    assert h.state == "completed"
    # A pruned trial keeps its curve; in a single-objective study Optuna records its last value.
    p = next(t for t in manager.trials(h) if t.state == TrialState.PRUNED)
    assert p.intermediate_values
    if len(objectives) == 2:
        best = manager.best_trials(h)
        assert best and all(t.state == TrialState.COMPLETE for t in best)


#: Loops that refuse several objectives at launch.
SINGLE_OBJECTIVE_LOOPS = ("evolution", "local-search")


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("n_objectives", [1, 2])
def test_every_loop_runs(manager, loop: str, n_objectives: int) -> None:
    objectives = ["accuracy:max", "params:min"][:n_objectives]
    if n_objectives > 1 and loop in SINGLE_OBJECTIVE_LOOPS:
        with pytest.raises(SpecError, match="optimises one objective"):
            SearchSpec.from_dict({**table_spec("l", 8, loop=loop), "objectives": objectives})
        return
    if loop == "autodistil":  # its stages need its own space (tests/integration, tests/server)
        with pytest.raises(SpecError, match="searches the autodistil space"):
            SearchSpec.from_dict({**table_spec("l", 8, loop=loop), "objectives": objectives})
        return
    spec = SearchSpec.from_dict(
        {
            **table_spec("l", 8, loop=loop),
            "trainer": "bert",  # the test reports params, as a bert worker would
            "objectives": objectives,
            "loop_options": {"n_startup_trials": 3}
            if loop in ("tpe", "gp")
            else {"n_init": 3, "batch_size": 2}
            if loop in LIBRARY_LOOPS
            else {},
        }
    )
    h = manager.launch(spec)
    table = load_table(TABLE)
    deadline = time.monotonic() + 300
    # A library loop builds its library in the background: "no work yet" until it is built.
    while h.state == "running" and time.monotonic() < deadline:
        g = manager.acquire("w", ("bert",), timeout_s=1)
        if g is None:
            continue
        score = table.score(g.candidate.architecture, "sst2")
        manager.complete(
            g.lease_id, {"accuracy": score, "params": float(g.candidate.architecture["l"])}, {}
        )
    assert h.state == "completed"
    done = [t for t in manager.trials(h) if t.state == TrialState.COMPLETE]
    # n_trials counts distinct candidates; repeats are recorded on top
    assert len([t for t in done if "duplicate_of" not in t.user_attrs]) == 8
    assert len({t.user_attrs["arch"] for t in done}) == 8
    study = optuna.load_study(study_name="l", storage=manager.storage)
    assert study.metric_names == [o.split(":")[0] for o in objectives]  # dashboard axis labels


def _tiny_bert(name: str, ratios: list[int]) -> SearchSpec:
    """A random study of 6 over a bert space of ``len(ratios)`` candidates (one free choice)."""
    return SearchSpec.from_dict(
        {
            "name": name,
            "space": "bert",
            "n_trials": 6,
            "loop": "random",
            "space_options": {
                "num_hidden_layers": [1],
                "hidden_size": [64],
                "num_attention_heads": [2],
                "intermediate_ratio": ratios,
            },
        }
    )


def test_duplicate_candidates_reuse_the_result(manager) -> None:
    """A tiny space (2 candidates: a bert space with one free choice) forces repeats; they
    reuse the result, do not consume n_trials, and the study ends once the loop proposes
    nothing new (``MIN_REPEAT_STREAK`` repeats in a row) instead of running forever."""
    manager.launch(_tiny_bert("d", [1, 2]))
    trained = 0
    while (g := manager.acquire("w", ("bert",))) is not None:
        trained += 1
        manager.complete(
            g.lease_id, {"accuracy": g.candidate.architecture["intermediate_size"] / 1000}, {}
        )
    h = manager.get("d")
    trials = manager.trials(h)
    assert h.state == "completed"
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert trained == 2  # only the 2 distinct candidates were trained
    repeats = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert len(trials) - len(repeats) == 2
    assert len(repeats) >= MIN_REPEAT_STREAK
    reason = manager.storage.get_study_user_attrs(h.study_id)["archsearch:completed_reason"]
    assert "repeated candidates in a row" in reason
    for t in trials:
        if "duplicate_of" in t.user_attrs:
            orig = next(o for o in trials if o.number == t.user_attrs["duplicate_of"])
            assert t.values == orig.values and t.params == orig.params


def test_a_pruned_candidate_proposed_again_is_a_pruned_repeat(manager) -> None:
    """Two candidates, one pruned every time: proposed again, it was trained again (and
    pruned again), each time counted as a new distinct candidate. Now it is recorded PRUNED
    with ``duplicate_of`` (the same training gives the same curve) and costs no budget, also
    after a restart."""
    spec = SearchSpec.from_dict(
        {
            "name": "pr",
            "space": "bert",
            "n_trials": 6,
            "loop": "random",
            "pruner": {"type": "median", "n_startup_trials": 0, "n_warmup_steps": 0},
            "recipe": {"max_steps": 10, "eval_every": 5},
            "space_options": {
                "num_hidden_layers": [1],
                "hidden_size": [64],
                "num_attention_heads": [2],
                "intermediate_ratio": [1, 2],
            },
        }
    )
    manager.launch(spec)
    trained: list[int] = []
    while (g := manager.acquire("w", ("bert",))) is not None:
        size = g.candidate.architecture["intermediate_size"]
        trained.append(size)
        good = size == 128
        pruned = False
        for step in range(1, 4):
            pruned, _ = manager.report(g.lease_id, step, 0.9 if good else 0.1)
            if pruned:
                break
        if not pruned:
            manager.complete(g.lease_id, {"accuracy": 0.9 if good else 0.1}, {})
    h = manager.get("pr")
    trials = manager.trials(h)
    assert h.state == "completed"
    assert sorted(trained) == [64, 128], trained  # each candidate trained once
    repeats = [t for t in trials if "duplicate_of" in t.user_attrs]
    pruned_repeats = [t for t in repeats if t.state == TrialState.PRUNED]
    assert pruned_repeats, [t.state for t in trials]
    original = next(t for t in trials if t.state == TrialState.PRUNED and t not in repeats)
    assert all(t.user_attrs["duplicate_of"] == original.number for t in pruned_repeats)
    assert all(t.values == original.values for t in pruned_repeats)
    reason = manager.storage.get_study_user_attrs(h.study_id)["archsearch:completed_reason"]
    assert "after 2 distinct ones" in reason


def test_a_study_whose_new_candidates_come_rarely_ends_on_its_repeats_in_all(
    manager, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A 620-row table with n_trials 620 ran to 8,022 trials for 613 distinct ones: new ones
    kept coming, each after a run of repeats shorter than the streak's limit. Past
    ``REPEATS_FACTOR`` x that limit of repeats in all, it completes (a factor of 0.1 here)."""
    from archsearch.server import _candidate_store

    monkeypatch.setattr(_candidate_store, "REPEATS_FACTOR", 0.1)  # 5 repeats in all
    manager.launch(_tiny_bert("rare", [1, 2, 4]))
    while (g := manager.acquire("w", ("bert",))) is not None:
        manager.complete(g.lease_id, {"accuracy": 0.5}, {})
    h = manager.get("rare")
    assert h.state == "completed"
    repeats = [t for t in manager.trials(h) if "duplicate_of" in t.user_attrs]
    assert len(repeats) == 5
    reason = manager.storage.get_study_user_attrs(h.study_id)["archsearch:completed_reason"]
    assert "5 repeated candidates in all" in reason and "little new left to find" in reason


@pytest.mark.parametrize(
    ("pruner", "field", "says"),
    [
        ({"type": "hyperband", "reduction_factor": 1}, "pruner.reduction_factor", "at least 2"),
        ({"type": "hyperband", "max_resource": 0}, "pruner.max_resource", "at least 1"),
        ({"type": "hyperband", "bootstrap_count": -1}, "pruner.bootstrap_count", "at least 0"),
        (
            {"type": "hyperband", "min_resource": 5, "max_resource": 4},
            "pruner.max_resource",
            "below",
        ),
        ({"type": "successive_halving", "min_resource": 0}, "pruner.min_resource", "at least 1"),
        ({"type": "median", "interval_steps": 0}, "pruner.interval_steps", "at least 1"),
    ],
)
def test_pruner_settings_no_report_can_use_are_refused_at_launch(
    pruner: dict, field: str, says: str
) -> None:
    """Hyperband checks nothing before the first report: these launched, then every report of
    the study's trials answered INTERNAL (ZeroDivisionError, math domain error)."""
    with pytest.raises(SpecError) as e:
        SearchSpec.from_dict({**table_spec("p", 4), "trainer": "bert", "pruner": pruner})
    assert e.value.field == field and says in str(e.value)


def test_a_stored_pruner_that_cannot_decide_prunes_nothing(caplog) -> None:
    """A study launched before those checks trains on: the pruner's error is said once."""
    from archsearch.search._pruning import should_prune

    storage = optuna.storages.InMemoryStorage()
    pruner = optuna.pruners.HyperbandPruner(reduction_factor=1, max_resource=8)
    study = optuna.create_study(study_name="old", storage=storage, pruner=pruner)
    for _ in range(2):
        t = study.ask()
        t.report(0.5, 1)
        with caplog.at_level("WARNING", logger="archsearch.server"):
            assert should_prune(study, storage, t._trial_id) is False
    said = [r for r in caplog.records if "its pruner cannot decide" in r.getMessage()]
    assert len(said) == 1 and "ZeroDivisionError" in said[0].getMessage()


def test_a_candidate_handed_back_over_and_over_counts_at_last(manager) -> None:
    """Acquire then release, in a loop, grew a study by a trial each time, for ever: hand-backs
    do not count against the retries, until a candidate was handed back 20 times."""
    from archsearch.server._retries import MAX_HANDBACKS

    manager.launch(SearchSpec.from_dict({**table_spec("loop", 1), "max_retries": 1}))
    numbers = []
    while (g := manager.acquire("w", ("table",), "loop")) is not None:
        numbers.append(g.trial_number)
        manager.fail(g.lease_id, "handed back", retryable=True, released=True)
        assert len(numbers) < 100, "a hand-back loop never ends"
    # 20 hand-backs free, then counted: the 21st is failure 1 (retried), the 22nd failure 2
    assert len(numbers) == MAX_HANDBACKS + 2
    assert manager.get("loop").state == "completed"
