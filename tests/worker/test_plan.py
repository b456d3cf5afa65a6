"""TrainingPlan: a candidate parsed once into a frozen, typed plan that the stages read."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from _tiny import TINY_BERT

from archsearch.spaces import GLUE_TASKS, Candidate
from archsearch.worker import CandidateError, TrainContext, _plan
from archsearch.worker._plan import TRAINER_RECIPE_DEFAULTS, TrainingPlan, parse_plan

#: Two FlexiBERT layers, a width change (as tests/worker/test_flexibert_trainer.py).
MIXED = {
    "l": 2,
    "o": ["c", "l"],
    "p": ["5", "dft"],
    "h": [64, 128],
    "n": [2, 2],
    "f": [[128], [64, 128]],
}


def _candidate(space: str = "bert", **recipe: Any) -> Candidate:
    return Candidate(
        space=space,
        architecture=TINY_BERT if space == "bert" else MIXED,
        recipe={
            "max_steps": 2,
            "eval_every": 2,
            "batch_size": 8,
            "max_seq_length": 16,
            "seed": 4,
            "measure_latency": False,
            **recipe,
        },
        data={"tasks": ["rte", "wnli"], "train_subset": 16, "eval_subset": 8},
    )


def test_plan_is_frozen_typed_and_complete() -> None:
    plan = parse_plan(_candidate(precision="fp32", keep_checkpoint=True))
    assert isinstance(plan, TrainingPlan)
    assert plan.tasks == (GLUE_TASKS["rte"], GLUE_TASKS["wnli"])
    assert dict(plan.architecture) == TINY_BERT and not plan.is_flexibert
    assert (plan.seed, plan.max_steps, plan.max_seq_length) == (4, 2, 16)
    assert plan.precision == "fp32" and plan.keep_checkpoint and not plan.measure_latency
    assert plan.transfer_from is None and plan.fidelity.default
    assert plan.data["tasks"] == ["rte", "wnli"] and plan.data["train_subset"] == 16
    assert set(TRAINER_RECIPE_DEFAULTS) <= set(plan.recipe)
    assert plan.recipe["learning_rate"] == 5e-4  # the shared defaults filled in
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.seed = 1  # type: ignore[misc]
    flexi = parse_plan(_candidate("flexibert", pretrain_steps=3))
    assert flexi.is_flexibert and flexi.fidelity.pretrain_steps == 3
    assert flexi.architecture["l"] == 2


@pytest.mark.parametrize(
    ("space", "recipe", "text"),
    [
        ("bert", {"precision": "fp8"}, "recipe.precision"),
        ("bert", {"keep_checkpoint": "yes"}, "recipe.keep_checkpoint"),
        ("bert", {"pretrain_steps": 3}, "FlexiBERT candidates only"),
        ("flexibert", {"init": "teacher"}, "recipe.init 'teacher' is not supported"),
        ("bert", {"max_steps": 0}, "recipe.max_steps"),
        # the tokenizer kept texts whole below 3 (or dropped them): refused, not truncated
        ("bert", {"max_seq_length": 2}, r"recipe.max_seq_length: must be >= 3"),
        ("bert", {"max_seq_length": 513}, r"recipe.max_seq_length: must be <= 512"),
    ],
)
def test_bad_candidates_are_candidate_errors(space: str, recipe: dict[str, Any], text: str) -> None:
    with pytest.raises(CandidateError, match=text):
        parse_plan(_candidate(space, **recipe))


def test_train_checks_the_candidate_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from archsearch.worker._bert_trainer import BertTrainer

    calls: list[str] = []
    real_recipe, real_data = _plan.validate_recipe, _plan.validate_data

    def counted_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
        calls.append("recipe")
        return real_recipe(recipe)

    def counted_data(data: dict[str, Any]) -> dict[str, Any]:
        calls.append("data")
        return real_data(data)

    monkeypatch.setattr(_plan, "validate_recipe", counted_recipe)
    monkeypatch.setattr(_plan, "validate_data", counted_data)
    trainer = BertTrainer()
    # A FlexiBERT candidate: its start-up hooks used to check the candidate a second time.
    result = trainer.train(_candidate("flexibert"), TrainContext())
    assert "rte.accuracy" in result.metrics and "wnli.accuracy" in result.metrics
    assert calls == ["recipe", "data"]


def test_a_pair_needs_five_tokens() -> None:
    """Below 5 the tokenizer kept a pair whole, silently (longer than max_seq_length)."""
    from archsearch.worker._batches import tokenize_examples
    from archsearch.worker._example import GlueExample

    pair = [GlueExample(("a cat", "a dog"), 0)]
    with pytest.raises(CandidateError, match="max_seq_length 4 cannot hold a sentence pair"):
        tokenize_examples(None, pair, 4, regression=False)
