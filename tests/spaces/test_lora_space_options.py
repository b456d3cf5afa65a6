"""The lora space's learning rate: searched on [low, high], or one rate for every candidate
(the study's ``recipe.learning_rate`` was silently replaced, and a fixed rate was refused)."""

from __future__ import annotations

import random

import optuna

from archsearch.spaces import make_space


def test_one_learning_rate_is_every_candidates() -> None:
    space = make_space("lora", {"learning_rate": 3e-4, "r_max": [4]})
    rng = random.Random(0)
    assert {space.sample(rng)["learning_rate"] for _ in range(20)} == {3e-4}
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    for _ in range(3):
        trial = study.ask()
        arch = space.suggest(trial)
        assert arch["learning_rate"] == 3e-4
        assert space.validate(arch) == arch
        study.tell(trial, 0.5)
    _, recipe = space.candidate_parts(arch, {"max_steps": 10})
    assert recipe["learning_rate"] == 3e-4


def test_a_searched_range_stays_in_it() -> None:
    space = make_space("lora", {"learning_rate": [1e-4, 1e-3]})
    rng = random.Random(1)
    for _ in range(200):
        arch = space.sample(rng)
        assert 1e-4 <= arch["learning_rate"] <= 1e-3
        assert space.validate(arch) == arch
