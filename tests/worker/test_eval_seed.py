"""The dev sample a trial is scored on (``data.eval_subset``) is the study's: drawn with
``data.eval_seed``, not the candidate's training seed, so runs at several ``recipe.seed``
values are scored on the same examples; a candidate without one (a study launched before it
was pinned) draws with its recipe's seed, as that study's first trials did."""

from __future__ import annotations

import pytest

from archsearch.server._spec import SearchSpec
from archsearch.spaces import SpecError
from archsearch.worker._bert_trainer import BertTrainer

LENGTH = {"max_seq_length": 32}


def _digest(trainer: BertTrainer, split: str, subset: int, seed: int, data: dict) -> str:
    return trainer.encode("sst2", split, subset, {**LENGTH, "seed": seed}, data).digest


def test_the_dev_sample_does_not_follow_the_training_seed() -> None:
    trainer = BertTrainer()
    pinned = {"eval_seed": 0}
    assert len({_digest(trainer, "dev", 64, seed, pinned) for seed in (0, 1, 2)}) == 1
    # another eval_seed is another sample; the training subset still follows recipe.seed
    assert _digest(trainer, "dev", 64, 0, {"eval_seed": 5}) != _digest(
        trainer, "dev", 64, 0, pinned
    )
    assert _digest(trainer, "train", 64, 0, pinned) != _digest(trainer, "train", 64, 1, pinned)
    # a stored study's candidate without eval_seed: as before, its recipe's seed
    assert _digest(trainer, "dev", 64, 1, {}) != _digest(trainer, "dev", 64, 0, {})
    assert _digest(trainer, "dev", 64, 0, {}) == _digest(trainer, "dev", 64, 0, pinned)


def _spec(data: dict, **extra: object) -> dict:
    return {"name": "s", "space": "bert", "n_trials": 2, "data": data, **extra}


def test_a_launch_pins_the_eval_seed_and_a_stored_spec_keeps_its_meaning() -> None:
    launched = SearchSpec.from_dict(_spec({"task": "sst2", "eval_subset": 64}))
    assert launched.data["eval_seed"] == 0
    given = SearchSpec.from_dict(_spec({"task": "sst2", "eval_subset": 64, "eval_seed": 3}))
    assert given.data["eval_seed"] == 3
    whole = SearchSpec.from_dict(_spec({"task": "sst2"}))  # the whole dev split: no sample
    assert "eval_seed" not in whole.data
    stored = SearchSpec.from_dict(_spec({"task": "sst2", "eval_subset": 64}), stored=True)
    assert "eval_seed" not in stored.data  # its candidates draw with recipe.seed, as before
    with pytest.raises(SpecError, match="eval_seed"):
        SearchSpec.from_dict(_spec({"task": "sst2", "eval_subset": 64, "eval_seed": -1}))
    with pytest.raises(SpecError, match="eval_seed"):  # it decides what a score means
        SearchSpec.from_dict(
            _spec({"task": "sst2", "eval_subset": 64}, data_space={"eval_seed": [0, 1]})
        )


def test_the_dev_hash_follows_the_dev_data_only() -> None:
    """A trial's ``dev_hash`` info (``show`` compares a study's): the same for any training
    subset or seed, another for another dev sample."""
    from archsearch.worker._split_cache import dev_hash

    trainer = BertTrainer()

    def splits(seed: int, train: int, data: dict) -> dict:
        recipe = {**LENGTH, "seed": seed}
        return {
            "sst2": {
                "train": trainer.encode("sst2", "train", train, recipe, data),
                "dev": trainer.encode("sst2", "dev", 64, recipe, data),
            }
        }

    pinned = {"eval_seed": 0}
    assert dev_hash(splits(0, 64, pinned)) == dev_hash(splits(1, 128, pinned))
    assert dev_hash(splits(0, 64, pinned)) != dev_hash(splits(0, 64, {"eval_seed": 1}))
