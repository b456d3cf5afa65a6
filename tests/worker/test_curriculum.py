"""data.curriculum: spec checks, crowd difficulties (cross-fitted, cached), the DDS-MAE and
competency schedules, and tiny training runs through the bert trainer."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from archsearch.spaces import SpecError, validate_curriculum, validate_data
from archsearch.worker._curriculum import Curriculum, competency
from archsearch.worker._difficulty import (
    Difficulties,
    crowd_responses,
    item_difficulties,
    length_difficulty,
    rarity_difficulty,
)

RECIPE = {"max_steps": 100, "batch_size": 10, "seed": 3}


@pytest.mark.parametrize(
    "given, field",
    [
        ([], "data.curriculum"),
        ({"method": "easy"}, "data.curriculum.method"),
        ({"method": "none", "c0": 0.1}, "data.curriculum.c0"),
        ({"method": "pudf", "scheduler": "root"}, "data.curriculum.scheduler"),
        ({"method": "pudf", "difficulty": "length"}, "data.curriculum.difficulty"),
        ({"method": "competency", "scheduler": "dds-mae"}, "data.curriculum.scheduler"),
        ({"method": "competency", "crowd": ["tfidf-lr:1"]}, "data.curriculum.crowd"),
        ({"method": "pudf", "crowd_fit": "dev"}, "data.curriculum.crowd_fit"),
        ({"method": "pudf", "crowd": ["bert:1"]}, "data.curriculum.crowd[0]"),
        ({"method": "pudf", "crowd": ["tfidf-lr:1", "bert:5x32:10"]}, "data.curriculum.crowd[1]"),
        ({"method": "pudf", "crowd": ["tfidf-lr:1:2"]}, "data.curriculum.crowd[0]"),
        ({"method": "pudf", "crowd": []}, "data.curriculum.crowd"),
        ({"method": "pudf", "folds": 1}, "data.curriculum.folds"),
        ({"method": "pudf", "num_obs": 0}, "data.curriculum.num_obs"),
        ({"method": "pudf", "stall_step": True}, "data.curriculum.stall_step"),
        ({"method": "pudf", "val_fraction": 0.9}, "data.curriculum.val_fraction"),
        ({"method": "competency", "c0": 1}, "data.curriculum.c0"),
        ({"method": "competency", "duration": 0}, "data.curriculum.duration"),
    ],
)
def test_bad_curricula_are_refused_naming_the_field(given: Any, field: str) -> None:
    with pytest.raises(SpecError) as e:
        validate_data({"task": "sst2", "curriculum": given})
    assert e.value.field == field


def test_defaults_per_method() -> None:
    pudf = validate_curriculum({"method": "pudf"})
    assert (pudf["difficulty"], pudf["scheduler"], pudf["crowd_fit"]) == (
        "irt",
        "dds-mae",
        "cross-fit",
    )
    assert pudf["num_obs"] == pudf["min_examples"] == 1000 and pudf["stall_step"] == 0.1
    comp = validate_curriculum({"method": "competency"})
    assert (comp["difficulty"], comp["scheduler"]) == ("length", "root")
    assert "crowd" not in comp
    assert validate_curriculum({"method": "competency", "difficulty": "irt"})["crowd"]
    assert validate_curriculum({}) == {"method": "none"}
    irt = validate_curriculum({"method": "competency", "difficulty": "irt"})
    for checked in (pudf, comp, irt):  # a stored spec's checked curriculum checks again
        assert validate_curriculum(checked) == checked


def test_a_study_spec_with_a_bad_curriculum_is_refused() -> None:
    from archsearch.server._spec import SearchSpec

    base = {"name": "cur", "space": "bert", "task": "sst2", "n_trials": 2}
    spec = SearchSpec.from_dict({**base, "data": {"curriculum": {"method": "pudf"}}})
    assert spec.data["curriculum"]["scheduler"] == "dds-mae"
    with pytest.raises(SpecError, match=r"data\.curriculum\.scheduler"):
        SearchSpec.from_dict({**base, "data": {"curriculum": {"method": "pudf", "scheduler": "x"}}})


def _noisy_task(n: int = 240, seed: int = 0) -> tuple[list[str], list[int], np.ndarray]:
    """Sentiment-like texts; a tenth have the wrong label (those should be the hardest)."""
    rng = np.random.default_rng(seed)
    good, bad = ["great", "fine", "lovely", "superb"], ["awful", "poor", "dull", "bad"]
    texts, labels, flipped = [], [], np.zeros(n, bool)
    for i in range(n):
        label = i % 2
        words = rng.choice(good if label else bad, 3).tolist() + rng.choice(["a", "b"], 2).tolist()
        texts.append(" ".join(words))
        flipped[i] = rng.random() < 0.1
        labels.append(1 - label if flipped[i] else label)
    return texts, labels, flipped


def test_crowd_is_cross_fitted_and_mislabelled_items_are_hardest(tmp_path: Path) -> None:
    texts, labels, flipped = _noisy_task()
    crowd = ["tfidf-lr:0.1", "tfidf-lr:1:0.3", "tfidf-lr:10"]
    responses = crowd_responses(texts, labels, crowd, folds=3)
    assert responses.shape == (3, len(texts))
    # cross-fitted: a subject never saw the item it answers, so mislabelled ones come out wrong
    assert responses[:, flipped].mean() < 0.3 < 0.8 < responses[:, ~flipped].mean()
    options = validate_curriculum({"method": "pudf", "crowd": crowd, "folds": 3})
    first = item_difficulties(texts, labels, options, task="t", cache_dir=tmp_path)
    assert not first.cached and first.seconds > 0
    assert first.values[flipped].mean() > first.values[~flipped].mean() + 1
    again = item_difficulties(texts, labels, options, task="t", cache_dir=tmp_path)
    assert again.cached and again.key == first.key and again.seconds == 0
    np.testing.assert_array_equal(again.values, first.values)
    other = item_difficulties(
        texts, labels, {**options, "crowd": crowd[:2]}, task="t", cache_dir=tmp_path
    )
    assert other.key != first.key and not other.cached
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_heuristic_difficulties() -> None:
    np.testing.assert_array_equal(length_difficulty(["a b c", "a", ""]), [3, 1, 0])
    rarity = rarity_difficulty(["the the cat", "the zebra", "the"])
    assert rarity[1] > rarity[0] > rarity[2]


def _curriculum(method: str, values: np.ndarray, **options: Any) -> Curriculum:
    checked = validate_curriculum({"method": method, **options})
    return Curriculum(checked, Difficulties(values, checked["difficulty"]), RECIPE)


@pytest.mark.parametrize("scheduler", ["linear", "root"])
def test_competency_sets_grow_to_everything(scheduler: str) -> None:
    values = np.random.default_rng(0).normal(size=500)
    schedule = _curriculum(
        "competency", values, scheduler=scheduler, min_examples=20, duration=0.5, c0=0.01
    )
    sets = [set(schedule(epoch).tolist()) for epoch in range(12)]
    sizes = [len(s) for s in sets]
    assert sizes[0] == 20  # c0 * 500 = 5 < min_examples
    assert all(a <= b for a, b in itertools.pairwise(sets))  # nested
    assert sizes[-1] == 500  # competency 1 once max_steps * duration = 50 steps are taken
    first_full = next(e for e in schedule.trace if e["examples"] == 500)
    assert first_full["step"] >= 50 and first_full["competency"] == 1.0
    chosen = np.array(sorted(sets[1]))
    assert values[chosen].max() <= np.sort(values)[len(chosen) - 1]  # the easiest ones
    for entry in schedule.trace:
        expected = competency(entry["step"], 50, 0.01, scheduler)
        assert entry["competency"] == pytest.approx(expected, abs=1e-4)


def test_root_competency_is_ahead_of_linear() -> None:
    for step in (1, 10, 25, 49):
        assert competency(step, 50, 0.01, "root") > competency(step, 50, 0.01, "linear")
    assert competency(60, 50, 0.01, "root") == competency(60, 50, 0.01, "linear") == 1


def test_dds_mae_follows_the_ability_and_the_stall_rule() -> None:
    values = np.linspace(-3, 3, 1000)
    schedule = _curriculum("pudf", values, min_examples=50, num_obs=400, stall_step=0.25)
    abilities = iter([-1.0, 1.0, 0.0, 0.0, 2.0])  # rises, falls back twice, rises
    rng = np.random.default_rng(1)
    current = 0.0

    def answer(items: np.ndarray) -> np.ndarray:
        assert set(items.tolist()) <= set(schedule.val_indices.tolist())  # held-out items only
        p = 1 / (1 + np.exp(-(current - values[items])))
        return rng.random(len(items)) < p

    schedule.answer = answer
    chosen = []
    for epoch in range(5):
        current = next(abilities)
        chosen.append(schedule(epoch))
    held = set(schedule.val_indices.tolist())
    assert len(held) == 100 and not held & set(np.concatenate(chosen).tolist())
    trace = schedule.trace
    estimates = [e["ability"] for e in trace]
    assert estimates[0] < estimates[1] and estimates[4] > estimates[1] + 0.4
    assert trace[1]["bound"] == estimates[1]
    # the stall rule: no new best ability, so the bound rises by stall_step each epoch
    for epoch in (2, 3):
        assert estimates[epoch] < estimates[1]
        assert trace[epoch]["bound"] == pytest.approx(trace[epoch - 1]["bound"] + 0.25, abs=1e-3)
    assert trace[4]["bound"] == estimates[4]
    for entry, items in zip(trace, chosen, strict=True):
        train_values = values[items]
        expected = int(np.sum(values[schedule.train_indices] <= entry["bound"]))
        assert len(items) == max(expected, 50)
        assert train_values.max() <= max(entry["bound"], np.sort(train_values)[49]) + 1e-9
    sizes = [len(c) for c in chosen]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
    metrics = schedule.metrics()
    assert metrics["curriculum_ability"] == estimates[-1]
    assert metrics["curriculum_examples"] == sizes[-1] and metrics["curriculum_epochs"] == 5
    assert json.loads(schedule.info()["curriculum_trace"]) == trace


def test_a_long_trace_fits_in_a_trial_info_value() -> None:
    schedule = _curriculum("competency", np.arange(5000.0), min_examples=1, duration=1.0)
    for epoch in range(300):
        schedule(epoch)
    text = schedule.info()["curriculum_trace"]
    kept = json.loads(text)
    assert len(text) <= 1900 and 2 < len(kept) < 300
    assert kept[0] == schedule.trace[0] and kept[-1] == schedule.trace[-1]


def test_dds_mae_keeps_at_least_min_examples() -> None:
    schedule = _curriculum("pudf", np.linspace(0, 5, 300), min_examples=40, num_obs=50)
    schedule.answer = lambda items: np.zeros(len(items), bool)  # every answer wrong
    items = schedule(0)
    assert schedule.trace[0]["bound"] < 0 and len(items) == 40
    np.testing.assert_array_equal(items, np.sort(schedule._easiest[:40]))


@pytest.fixture(scope="module")
def trainer() -> Any:
    from archsearch.worker._bert_trainer import BertTrainer

    return BertTrainer()  # shared: the tokenizer and tokenised slices are cached on it


def _candidate(curriculum: dict[str, Any]) -> Any:
    from _tiny import TINY_BERT

    from archsearch.spaces import Candidate

    return Candidate(
        space="bert",
        architecture=TINY_BERT,
        recipe={
            "max_steps": 24,
            "batch_size": 16,
            "max_seq_length": 32,
            "learning_rate": 1e-3,
            "eval_every": 12,
            "seed": 7,
            "measure_latency": False,
        },
        data={"task": "sst2", "train_subset": 240, "eval_subset": 48, "curriculum": curriculum},
    )


@pytest.mark.parametrize(
    "curriculum",
    [
        {"method": "pudf", "crowd": ["tfidf-lr:0.3", "tfidf-lr:3:0.5"], "folds": 3},
        {"method": "competency", "scheduler": "linear", "difficulty": "rarity"},
    ],
)
def test_trainer_trains_on_the_curriculum(
    curriculum: dict[str, Any], trainer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archsearch.worker import TrainContext

    monkeypatch.setenv("ARCHSEARCH_CURRICULUM_DIR", str(tmp_path))
    curriculum = {**curriculum, "min_examples": 32}
    reports: list[tuple[int, float]] = []

    def report(step: int, value: float) -> bool:
        reports.append((step, value))
        return False

    context = TrainContext(
        report=report,
        intermediate_metric="accuracy",
        objective_metrics=("accuracy",),
    )
    result = trainer.train(_candidate(curriculum), context)
    assert [step for step, _ in reports] == [12, 24]
    info, metrics = result.info, result.metrics
    trace = json.loads(info["curriculum"] and info["curriculum_trace"])
    assert info["curriculum"] == curriculum["method"]
    assert info["curriculum_difficulty"] == curriculum.get("difficulty", "irt")
    sizes = [e["examples"] for e in trace]
    # 24 steps of 16 on at most 240 examples: several epochs, the first small
    assert len(trace) >= 2 and sizes[0] < 240 and min(sizes) >= 32
    assert metrics["curriculum_epochs"] == len(trace)
    assert metrics["curriculum_examples"] == sizes[-1]
    if curriculum["method"] == "pudf":
        assert info["curriculum_val_items"] == "24" and max(sizes) <= 216
        assert metrics["curriculum_ability"] == trace[-1]["ability"]
    if curriculum.get("difficulty", "irt") == "irt":
        assert metrics["crowd_seconds"] > 0 and info["curriculum_crowd_cached"] == "false"
        assert len(list(tmp_path.glob("*.npz"))) == 1
        again = trainer.train(_candidate(curriculum), TrainContext())
        assert again.info["curriculum_crowd_cached"] == "true"  # shared by the study's trials
        assert again.metrics["crowd_seconds"] == 0
        assert again.info["curriculum_difficulty_key"] == info["curriculum_difficulty_key"]


def test_irt_curriculum_on_a_regression_task_is_a_candidate_error(trainer: Any) -> None:
    from archsearch.worker import CandidateError, TrainContext

    candidate = _candidate({"method": "pudf"})
    candidate = type(candidate)(
        space="bert",
        architecture=candidate.architecture,
        recipe=candidate.recipe,
        data={**candidate.data, "task": "stsb"},
    )
    with pytest.raises(CandidateError, match="needs a classification task"):
        trainer.train(candidate, TrainContext())


def test_a_curriculum_that_cannot_change_anything_says_so() -> None:
    """PUDF's default min_examples (1000) on 900 training items: every epoch sees all of them.
    The trial's info and the worker's log say so, with the fix."""
    values = np.random.default_rng(0).normal(size=1000)
    schedule = _curriculum("pudf", values)  # 100 held out: 900 train, min_examples 1000
    assert len(schedule.train_indices) == 900 and schedule.min_examples == 900
    warning = schedule.info()["curriculum_warning"]
    assert "min_examples 1000 >= the 900 training items" in warning
    assert "lower data.curriculum.min_examples" in warning
    assert "curriculum_warning" not in _curriculum("pudf", values, min_examples=50).info()
