"""The study's own trials as IRT crowd subjects (``data.curriculum.crowd_trials``,
``worker/_trial_crowd.py``): a trained trial's answers on every training item (shape, 0/1, item
order, uploaded under the items' hash), and a later trial's crowd taking other trials' answers
from a fake server (difficulties and cache key change, own trial and limit respected, a bad
file left out, the cross-fitted crowd alone when none answered)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from _fake_artifacts import OPTIONS, FakeServer, separable_task

from archsearch.server.client import ClientError
from archsearch.spaces import validate_curriculum
from archsearch.spaces._errors import SpecError
from archsearch.worker._batches import EncodedSplit
from archsearch.worker._difficulty_sharing import artifact_name, shared_item_difficulties
from archsearch.worker._trainer import TrainContext
from archsearch.worker._trial_crowd import (
    TRIALS_INFO_KEY,
    answers_name,
    crowd_key,
    items_key,
    training_answers,
)

N = 40


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _difficulties(context: TrainContext | None, cache: Path, trials: int = 3) -> Any:
    texts, labels = separable_task()
    return shared_item_difficulties(
        texts,
        labels,
        {**OPTIONS, "crowd_trials": trials},
        task="t",
        context=context,
        cache_dir=cache,
    )


def _answers(wrong: range | list[int]) -> np.ndarray:
    values = np.ones(N, dtype=np.uint8)
    values[list(wrong)] = 0
    return values


def test_crowd_trials_is_checked_and_kept_out_of_older_candidates() -> None:
    assert "crowd_trials" not in validate_curriculum({"method": "pudf"})  # same fingerprints
    assert validate_curriculum({"method": "pudf", "crowd_trials": 8})["crowd_trials"] == 8
    checked = validate_curriculum({"method": "competency", "difficulty": "irt", "crowd_trials": 2})
    assert validate_curriculum(checked) == checked
    for bad in (-1, 65, True, 2.5, "8"):
        with pytest.raises(SpecError, match=r"data\.curriculum\.crowd_trials"):
            validate_curriculum({"method": "pudf", "crowd_trials": bad})
    with pytest.raises(SpecError, match=r"data\.curriculum\.crowd_trials.*only difficulty 'irt'"):
        validate_curriculum({"method": "competency", "crowd_trials": 2})


def test_training_answers_are_per_item_in_split_order() -> None:
    labels = np.array([0, 1, 1, 0, 1], dtype=np.int64)
    split = EncodedSplit(np.arange(10), np.zeros(10, dtype=np.int64), np.arange(0, 11, 2), labels)
    predicted = labels.copy()
    predicted[[1, 4]] = 1 - predicted[[1, 4]]
    answers = training_answers(lambda encoded: predicted if encoded is split else None, split)
    assert answers.dtype == np.uint8
    np.testing.assert_array_equal(answers, [1, 0, 1, 1, 0])


def test_fake_trial_answers_join_the_crowd_and_change_the_key(tmp_path: Path) -> None:
    texts, labels = separable_task()
    alone = _difficulties(FakeServer().context(0), tmp_path / "alone")
    assert alone.info()[TRIALS_INFO_KEY] == "none"  # the study's first trial: none answered
    server = FakeServer()
    name = answers_name(items_key("t", texts, labels))
    server.files[0, name] = _npz(answers=_answers(range(0, 10)))
    server.files[2, name] = _npz(answers=_answers([0, 1, 2, 20]))
    server.files[5, name] = _npz(answers=_answers([]))
    # trial 2 asks for 3 others: 0 and 5 (itself left out)
    second = _difficulties(server.context(2), tmp_path / "a")
    assert second.info()[TRIALS_INFO_KEY] == "0,5"
    assert second.key != alone.key and not second.cached
    sha = {n: hashlib.sha256(server.files[n, name]).hexdigest() for n in (0, 2, 5)}
    assert second.key == crowd_key(alone.key, [(0, sha[0]), (5, sha[5])])
    assert not np.allclose(second.values, alone.values)
    # items trial 0 got wrong are harder than with the cross-fitted crowd alone
    assert (second.values[:10] - alone.values[:10]).mean() > (
        second.values[10:] - alone.values[10:]
    ).mean()
    assert (server.calls.count("upload"), server.files[2, artifact_name(second.key)]) == (
        1,
        (tmp_path / "a" / f"{second.key}.npz").read_bytes(),
    )
    # limit 1: the lowest-numbered answering trial only
    one = _difficulties(server.context(9), tmp_path / "a", trials=1)
    assert one.info()[TRIALS_INFO_KEY] == "0" and one.key == crowd_key(alone.key, [(0, sha[0])])
    # trial 9 with room for 3: 0, 2 and 5, a new key, refitted (no stale cache)
    more = _difficulties(server.context(9), tmp_path / "a")
    assert more.info()[TRIALS_INFO_KEY] == "0,2,5" and more.key not in (second.key, one.key)
    assert not more.cached and more.info()["curriculum_difficulties"] == "fitted"
    # the same crowd on another machine: trial 9's shared difficulties, no answers downloaded
    server.calls.clear()
    again = _difficulties(server.context(12), tmp_path / "b")
    assert again.key == more.key and again.cached
    assert again.info()["curriculum_difficulties"] == "trial:9"
    assert server.calls == ["holders", "find", "download"]
    np.testing.assert_array_equal(again.values, more.values)


def test_a_bad_answers_file_is_left_out(tmp_path: Path) -> None:
    texts, labels = separable_task()
    server = FakeServer()
    name = answers_name(items_key("t", texts, labels))
    server.files[0, name] = _npz(answers=np.full(N - 1, 1, dtype=np.uint8))  # wrong shape
    server.files[1, name] = _npz(answers=np.full(N, 2, dtype=np.uint8))  # not 0/1
    server.files[3, name] = _npz(answers=_answers([4]))
    found = _difficulties(server.context(7), tmp_path)
    info = found.info()
    assert info[TRIALS_INFO_KEY] == "3"
    assert "trial 0's" in info["curriculum_share_error"]
    assert "trial 1's" in info["curriculum_share_error"]
    sha3 = hashlib.sha256(server.files[3, name]).hexdigest()
    # the key names the trials used, not those listed
    assert found.key == crowd_key(_difficulties(None, tmp_path / "y").key, [(3, sha3)])


def test_no_server_or_a_refusal_is_the_cross_fitted_crowd(tmp_path: Path) -> None:
    plain = shared_item_difficulties(*separable_task(), OPTIONS, task="t", cache_dir=tmp_path)
    assert TRIALS_INFO_KEY not in plain.info()  # not asked
    alone = _difficulties(None, tmp_path)
    assert alone.info()[TRIALS_INFO_KEY] == "none" and alone.key == plain.key
    server = FakeServer()
    server.fail["holders"] = ClientError(grpc.StatusCode.UNAVAILABLE, "down", "FindArtifact")
    refused = _difficulties(server.context(1), tmp_path)
    info = refused.info()
    assert info[TRIALS_INFO_KEY] == "none" and refused.key == plain.key
    assert "could not look up answers-" in info["curriculum_share_error"]


@pytest.fixture(scope="module")
def trainer() -> Any:
    from archsearch.worker._bert_trainer import BertTrainer

    return BertTrainer()


def _candidate(curriculum: dict[str, Any]) -> Any:
    from _tiny import TINY_BERT

    from archsearch.spaces import Candidate

    return Candidate(
        space="bert",
        architecture=TINY_BERT,
        recipe={
            "max_steps": 8,
            "batch_size": 16,
            "max_seq_length": 32,
            "learning_rate": 1e-3,
            "eval_every": 8,
            "seed": 7,
            "measure_latency": False,
        },
        data={"task": "sst2", "train_subset": 96, "eval_subset": 32, "curriculum": curriculum},
    )


def test_a_trained_trial_uploads_its_answers_and_the_next_one_uses_them(
    trainer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCHSEARCH_CURRICULUM_DIR", str(tmp_path))
    curriculum = {**OPTIONS, "method": "pudf", "min_examples": 16, "num_obs": 20, "crowd_trials": 4}
    del curriculum["difficulty"]
    server = FakeServer()
    first = trainer.train(_candidate(curriculum), server.context(0))
    examples = trainer.splits.train_examples["sst2"]
    assert len(examples) == 96
    key = items_key("sst2", [" ".join(e.texts) for e in examples], [int(e.label) for e in examples])
    name = answers_name(key)
    assert first.info["curriculum_answers"] == name
    assert first.info[TRIALS_INFO_KEY] == "none"
    with np.load(io.BytesIO(server.files[0, name])) as f:
        answers = f["answers"]
    assert answers.shape == (96,) and answers.dtype == np.uint8
    assert set(np.unique(answers)) <= {0, 1}
    second = trainer.train(_candidate(curriculum), server.context(1))
    assert second.info[TRIALS_INFO_KEY] == "0"
    assert second.info["curriculum_difficulty_key"] != first.info["curriculum_difficulty_key"]
    assert (1, name) in server.files  # it answers for the trials after it
    # without a server: no answers recorded, the cross-fitted crowd alone
    alone = trainer.train(_candidate(curriculum), TrainContext())
    assert "curriculum_answers" not in alone.info and alone.info[TRIALS_INFO_KEY] == "none"
