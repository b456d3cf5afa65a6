"""The curriculum crowd's tiny BERT students (``"bert:<layers>x<hidden>:<steps>"``): the spec
check, real learning, cross-fitting, a mixed crowd's difficulties and their cache."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from archsearch.spaces import SpecError, validate_curriculum
from archsearch.spaces._curriculum_spec import StudentSubject, TfidfSubject, parse_subject
from archsearch.worker import _crowd_students
from archsearch.worker._difficulty import crowd_responses, item_difficulties


@pytest.mark.parametrize("subject", ["bert:1x32:100", "bert:1x16:1", "bert:4x256:5000"])
def test_student_subjects_are_accepted(subject: str) -> None:
    crowd = ["tfidf-lr:1", subject]
    assert validate_curriculum({"method": "pudf", "crowd": crowd})["crowd"] == crowd


def test_a_subject_parses_into_its_parts() -> None:
    assert parse_subject("bert:2x64:300") == StudentSubject("bert", 2, 64, 300)
    assert parse_subject("tfidf-lr:3:0.5") == TfidfSubject("tfidf-lr", 3.0, 0.5)
    _, strength, fraction = parse_subject("tfidf-lr:3")  # still unpacks as before
    assert (strength, fraction) == (3.0, 1.0)


@pytest.mark.parametrize(
    "subject, says",
    [
        ("bert:1x32", "is not"),
        ("bert:1", "is not"),
        ("bert:1x32:10:0.5", "is not"),
        ("bert:1X32:10", "is not"),
        ("bert:1x32:1e3", "is not"),
        ("bert:-1x32:10", "is not"),
        ("bert:0x32:10", "layers must be in [1, 4]"),
        ("bert:5x32:10", "layers must be in [1, 4]"),
        ("bert:1x8:10", "hidden must be in [16, 256]"),
        ("bert:1x512:10", "hidden must be in [16, 256]"),
        ("bert:1x33:10", "divisible by the 2 attention heads"),
        ("bert:1x32:0", "steps must be in [1, 5000]"),
        ("bert:1x32:5001", "steps must be in [1, 5000]"),
        ("bert:01x32:10", "write it 'bert:1x32:10'"),
        ("distilbert:1x32:10", "is not"),
    ],
)
def test_bad_student_subjects_are_refused_naming_the_field(subject: str, says: str) -> None:
    with pytest.raises(SpecError) as e:
        validate_curriculum({"method": "pudf", "crowd": ["tfidf-lr:1", subject]})
    assert e.value.field == "data.curriculum.crowd[1]"
    assert says in str(e.value) and "bert:1x32:200" in str(e.value)  # with an example


def _separable(n: int = 200, seed: int = 0) -> tuple[list[str], list[int]]:
    """Two classes told apart by their words."""
    rng = np.random.default_rng(seed)
    good, bad = ["great", "fine", "lovely", "superb"], ["awful", "poor", "dull", "bad"]
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = (
            rng.choice(good if label else bad, 3).tolist() + rng.choice(["a", "the"], 2).tolist()
        )
        texts.append(" ".join(rng.permutation(words)))
        labels.append(label)
    return texts, labels


def test_a_longer_trained_student_answers_more_items_right() -> None:
    texts, labels = _separable()
    responses = crowd_responses(texts, labels, ["bert:1x16:1", "bert:1x16:200"], folds=2)
    assert responses.shape == (2, len(texts))
    one, trained = responses.mean(axis=1)
    assert trained > 0.9 and trained > one + 0.25, (one, trained)
    # one training per fold answers at both step counts: the 1-step subject is the same model
    # as one trained alone for 1 step (same seed, initialisation and first batch)
    alone = crowd_responses(texts, labels, ["bert:1x16:1"], folds=2)
    np.testing.assert_array_equal(alone[0], responses[0])


def test_students_never_answer_items_they_trained_on(monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = _crowd_students.student_answers, list[dict[str, Any]]()

    def fake(encoded: Any, labels: np.ndarray, train: np.ndarray, held: np.ndarray, **kw: Any):
        calls.append({"train": train, "held": held, **kw})
        return np.ones((len(kw["steps"]), len(held)), bool)

    monkeypatch.setattr(_crowd_students, "student_answers", fake)
    texts, labels = _separable(60)
    crowd = ["bert:1x16:5", "tfidf-lr:1", "bert:2x16:3", "bert:1x16:1"]
    responses = crowd_responses(texts, labels, crowd, folds=3)
    assert responses.shape == (4, 60) and responses[[0, 2, 3]].all()
    assert len(calls) == 6  # 3 folds x 2 architectures, each answering all its step counts
    assert sorted((c["layers"], tuple(c["steps"])) for c in calls[:2]) == [(1, (5, 1)), (2, (3,))]
    for fold in range(3):
        train, held = calls[2 * fold]["train"], calls[2 * fold]["held"]
        assert not set(train.tolist()) & set(held.tolist())
        assert sorted([*train.tolist(), *held.tolist()]) == list(range(60))
    helds = [set(c["held"].tolist()) for c in calls[::2]]
    assert set().union(*helds) == set(range(60)) and sum(map(len, helds)) == 60
    # and the real student refuses a training part that overlaps what it answers
    encoded = _crowd_students.EncodedTexts(np.ones((4, 3), np.int64), np.ones((4, 3), np.int64), 2)
    with pytest.raises(ValueError, match="overlap"):
        real(
            encoded, np.array([0, 1, 0, 1]), np.arange(3), np.arange(2, 4), layers=1,
            hidden=16, steps=[1], seed=0,
        )  # fmt: skip


def test_a_mixed_crowd_gives_every_item_a_difficulty_and_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, spent = _crowd_students.student_answers, []

    def timed(*args: Any, **kwargs: Any) -> np.ndarray:
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    monkeypatch.setattr(_crowd_students, "student_answers", timed)
    texts, labels = _separable()
    crowd = ["tfidf-lr:0.1", "tfidf-lr:1:0.3", "bert:1x16:1", "bert:1x16:20"]
    options = validate_curriculum({"method": "pudf", "crowd": crowd, "folds": 2})
    first = item_difficulties(texts, labels, options, task="t", cache_dir=tmp_path)
    assert first.values.shape == (200,) and np.isfinite(first.values).all()
    assert not first.cached and len(spent) == 2
    assert first.seconds >= sum(spent) > 0  # crowd_seconds: the students' training included
    again = item_difficulties(texts, labels, options, task="t", cache_dir=tmp_path)
    assert again.cached and again.key == first.key and again.seconds == 0 and len(spent) == 2
    np.testing.assert_array_equal(again.values, first.values)
    for other in (crowd[:2], [*crowd[:3], "bert:1x16:21"]):  # the key names every subject
        key = item_difficulties(
            texts, labels, {**options, "crowd": other}, task="t", cache_dir=tmp_path
        ).key
        assert key != first.key


def test_a_tfidf_crowd_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from archsearch.worker._difficulty import crowd_responses\n"
        "crowd_responses(['good a', 'bad b'] * 10, [1, 0] * 10, ['tfidf-lr:1'], 2)\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
