"""Search loops that are one of Optuna's samplers: random, TPE, NSGA-II and GP."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import optuna

from archsearch.search._base import SearchLoop
from archsearch.spaces import SpecError


def _random(seed: int | None, n_objectives: int, **kw: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed, **kw)


def _tpe(seed: int | None, n_objectives: int, **kw: Any) -> optuna.samplers.BaseSampler:
    # multivariate + group model the joint, conditional structure of the spaces' parameters.
    kw.setdefault("multivariate", True)
    kw.setdefault("group", True)
    kw.setdefault("constant_liar", True)  # many workers ask before earlier trials finish
    return optuna.samplers.TPESampler(seed=seed, **kw)


def _nsga2(seed: int | None, n_objectives: int, **kw: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, **kw)


def _gp(seed: int | None, n_objectives: int, **kw: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, **kw)


SAMPLER_FACTORIES: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "random": _random,
    "tpe": _tpe,
    "nsga2": _nsga2,
    "gp": _gp,
}


class OptunaSamplerLoop(SearchLoop):
    """A loop that asks one of Optuna's samplers.

    Args:
        name: "random", "tpe", "nsga2" or "gp".
        seed: Base seed. The server offsets it by the number of trials already in the study so
            a restarted server does not replay the suggestions it already made.
        n_objectives: Number of objectives of the study.
        options: Extra keyword arguments for the sampler (for example ``n_startup_trials``).
    """

    def __init__(
        self, name: str, seed: int | None, n_objectives: int, options: dict[str, Any] | None = None
    ) -> None:
        if name not in SAMPLER_FACTORIES:
            raise SpecError(
                "loop", f"unknown loop {name!r}", f"one of {', '.join(SAMPLER_FACTORIES)}"
            )
        self.name = name
        try:
            with warnings.catch_warnings():  # "multivariate/group is experimental" is noise here
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._sampler = SAMPLER_FACTORIES[name](seed, n_objectives, **dict(options or {}))
        except TypeError as e:
            raise SpecError("loop_options", f"not accepted by the {name} sampler: {e}") from e
        except ValueError as e:
            raise SpecError("loop_options", str(e)) from e

    @property
    def sampler(self) -> optuna.samplers.BaseSampler:
        return self._sampler
