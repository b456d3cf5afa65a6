"""The data-selector stage: ``data.selection`` checked, selectors, and the trainer using them."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from archsearch.spaces import Candidate, SpecError, validate_data
from archsearch.worker import (
    SELECTORS,
    DataSelector,
    GlueExample,
    IdentitySelector,
    RandomSelector,
    SelectionPlan,
    load_split,
    take_subset,
)
from archsearch.worker._selectors import make_selector, select_examples, select_with_provenance

SHARED_GLUE = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "glue").resolve()
EXAMPLES = [GlueExample((f"text {i}",), i % 2) for i in range(50)]


@pytest.mark.parametrize(
    ("selection", "field", "text"),
    [
        ({"method": "kcenter"}, "data.selection.method", "unknown selection method 'kcenter'"),
        ({"method": 3}, "data.selection.method", "one of none, random"),
        ({"method": "none", "size": 3}, "data.selection.size", "unknown field"),
        ({"method": "random"}, "data.selection.size", "must be an int > 0"),
        ({"method": "random", "size": 0}, "data.selection.size", "must be an int > 0"),
        ({"method": "random", "size": 2.5}, "data.selection.size", "must be int"),
        ({"method": "random", "size": 4, "by": "x"}, "data.selection.by", "unknown field"),
        ("random", "data.selection", "must be dict"),
    ],
)
def test_bad_selection_names_the_field(selection: Any, field: str, text: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_data({"task": "rte", "selection": selection})
    assert info.value.field == field
    assert text in str(info.value)


def test_selection_is_checked_and_filled() -> None:
    assert "selection" not in validate_data({"task": "rte"})  # absent: no selection
    assert validate_data({"selection": {}})["selection"] == {"method": "none"}
    chosen = validate_data({"selection": {"method": "random", "size": 8}})["selection"]
    assert chosen == {"method": "random", "size": 8}
    with pytest.raises(SpecError, match="unknown selection method"):
        Candidate.from_dict(
            {"space": "bert", "architecture": {}, "data": {"selection": {"method": "x"}}}
        )


def test_every_validated_method_has_a_selector() -> None:
    from archsearch.spaces import SELECTION_METHODS

    assert set(SELECTORS) == set(SELECTION_METHODS)
    for name, cls in SELECTORS.items():
        assert issubclass(cls, DataSelector) and cls.name == name
    selector, options = make_selector({"method": "random", "size": 5})
    assert isinstance(selector, RandomSelector) and options == {"size": 5}
    selector, options = make_selector(None)
    assert isinstance(selector, IdentitySelector) and options == {}


def test_identity_keeps_everything_in_order() -> None:
    out = IdentitySelector().select(EXAMPLES, SelectionPlan(size=3), random.Random(0))
    assert out == EXAMPLES and out is not EXAMPLES


def test_random_is_a_seeded_subset() -> None:
    plan = SelectionPlan(options={"size": 10})
    first = RandomSelector().select(EXAMPLES, plan, random.Random(3))
    assert first == RandomSelector().select(EXAMPLES, plan, random.Random(3))
    assert first != RandomSelector().select(EXAMPLES, plan, random.Random(4))
    assert len(set(first)) == 10 and set(first) <= set(EXAMPLES)
    assert first == take_subset(EXAMPLES, 10, seed=3)  # what train_subset gives
    whole = RandomSelector().select(EXAMPLES, SelectionPlan(size=0), random.Random(3))
    assert whole == EXAMPLES


def test_random_says_what_it_kept_and_when_its_size_reaches_past_the_split(caplog) -> None:
    """A data search over random sizes (1000, 5000, 20000) on a small task trains the same
    data for every size past the split: the trial's info and the worker log say so."""
    def pick(seed: int) -> dict[str, str]:
        return select_with_provenance(
            EXAMPLES,
            task="rte",
            split="train",
            selection={"method": "random", "size": 10},
            subset=0,
            seed=seed,
        )[1]

    info = pick(1)
    # which examples and the seed that drew them, as DSIR's provenance says (it had neither)
    hashed = info.pop("selection_ids_hash")
    assert hashed.startswith("sha256:") and hashed == pick(1)["selection_ids_hash"]
    assert hashed != pick(2)["selection_ids_hash"]
    assert info == {
        "selection": "random",
        "selection_kept": "10 of 50",
        "selection_seed": "1",
        "train_examples": "10",
    }
    with caplog.at_level("WARNING", logger="archsearch.worker._selectors"):
        got, info = select_with_provenance(
            EXAMPLES,
            task="rte",
            split="train",
            selection={"method": "random", "size": 80},
            subset=0,
            seed=1,
        )
    assert got == EXAMPLES and info["selection_kept"] == "50 of 50"
    assert info["selection_warning"] == (
        "size 80 is not below the rte train split's 50 examples: every example was kept, "
        "so any size from 50 up trains on the same data"
    )
    assert [r.getMessage() for r in caplog.records] == [
        f"data.selection random: {info['selection_warning']}"
    ]


def test_a_subset_past_the_split_is_said_only_for_training(caplog) -> None:  # type: ignore[no-untyped-def]
    """eval_subset past the dev split (the whole dev set, as asked) was warned about as
    "data.selection random: size N ... trains on the same data"."""
    with caplog.at_level("WARNING", logger="archsearch.worker._selectors"):
        got, _ = select_with_provenance(
            EXAMPLES, task="rte", split="dev", selection=None, subset=80, seed=1
        )
        assert got == EXAMPLES and not caplog.records
        select_with_provenance(
            EXAMPLES, task="rte", split="train", selection=None, subset=80, seed=1
        )
    assert [r.getMessage() for r in caplog.records] == [
        "data.train_subset 80 is not below the rte train split's 50 examples: every one "
        "was kept, so any train_subset from 50 up trains on the same data"
    ]


def test_a_subset_after_a_selection_is_said_of_what_the_selection_kept() -> None:
    """dsir k=2000 then train_subset 1000 trained on 1000 with only ``selection_size`` 2000
    recorded, and train_subset 4000 was warned about as past "the sst2 train split's 2000"."""
    selection = {"method": "random", "size": 20}
    got, info = select_with_provenance(
        EXAMPLES, task="rte", split="train", selection=selection, subset=8, seed=1
    )
    assert len(got) == 8 and info["train_examples"] == "8" and info["selection_kept"] == "20 of 50"
    assert "train_subset_warning" not in info
    got, info = select_with_provenance(
        EXAMPLES, task="rte", split="train", selection=selection, subset=30, seed=1
    )
    assert len(got) == 20 and info["train_examples"] == "20"
    assert info["train_subset_warning"] == (
        "30 is not below the 20 examples data.selection kept: every one was kept, so any "
        "train_subset from 20 up trains on the same data"
    )
    _, info = select_with_provenance(
        EXAMPLES, task="rte", split="train", selection=None, subset=0, seed=1
    )
    assert info == {}  # the whole split: nothing to say


def test_select_examples_without_a_selection_is_todays_subset() -> None:
    for subset in (0, 7, 500):
        got = select_examples(
            EXAMPLES, task="t", split="train", selection=None, subset=subset, seed=5
        )
        assert got == take_subset(EXAMPLES, subset, 5)
        none = {"method": "none"}
        got = select_examples(
            EXAMPLES, task="t", split="train", selection=none, subset=subset, seed=5
        )
        assert got == take_subset(EXAMPLES, subset, 5)


def test_select_examples_applies_the_method_then_the_subset() -> None:
    selection = {"method": "random", "size": 20}
    chosen = select_examples(
        EXAMPLES, task="t", split="train", selection=selection, subset=0, seed=1
    )
    assert chosen == take_subset(EXAMPLES, 20, 1)
    sliced = select_examples(
        EXAMPLES, task="t", split="train", selection=selection, subset=5, seed=1
    )
    assert sliced == take_subset(chosen, 5, 1)
    # Dev splits are never selected from: every candidate is scored on the same data.
    dev = select_examples(EXAMPLES, task="t", split="dev", selection=selection, subset=0, seed=1)
    assert dev == EXAMPLES


def test_trainer_encodes_the_selected_examples() -> None:
    from archsearch.worker._bert_trainer import BertTrainer

    trainer = BertTrainer(glue_dir=str(SHARED_GLUE))
    recipe = {"max_seq_length": 16, "seed": 2}
    data = {"task": "rte", "selection": {"method": "random", "size": 12}}
    train = trainer.encode("rte", "train", 0, recipe, data)
    whole = load_split("rte", "train", SHARED_GLUE)
    expected = [e.label for e in take_subset(whole, 12, 2)]
    assert train.labels.tolist() == expected
    # Same split without a selection: the whole file, a different cache entry.
    assert len(trainer.encode("rte", "train", 0, recipe, {"task": "rte"})) == len(whole)
    # The selection applies to the training split only.
    assert len(trainer.encode("rte", "dev", 0, recipe, data)) == 277
