"""Search loops that are one of Optuna's samplers: random, TPE, NSGA-II and GP.

The one module of ``archsearch.search`` that drives Optuna's study and trial objects: a sampler
reads the history from the study and writes its own per-trial state (NSGA-II's generation)
into the trial it is asked for, so :meth:`OptunaSamplerLoop.suggest` asks the server's study
(``LoopSnapshot.optuna_study``) exactly as ``Study.ask`` would, and hands the asked trial to the
server (``Suggestion.asked_trial``), which stores the candidate on it.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any

import optuna

from archsearch.search._base import LOOPS, LoopSnapshot, SearchLoop, Suggestion
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


SAMPLER_CLASSES: dict[str, type[optuna.samplers.BaseSampler]] = {
    "random": optuna.samplers.RandomSampler,
    "tpe": optuna.samplers.TPESampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "gp": optuna.samplers.GPSampler,
}


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "dict": (dict,),
    "list": (list,),
}


def check_option_types(
    target: Any, loop: str, options: dict[str, Any], skip: tuple[str, ...] = ()
) -> None:
    """Each option must be an argument of ``target`` (a sampler or proposer class) and have a
    JSON type its annotation allows.

    Samplers and proposers store most arguments unchecked and use them only when asked, so a
    string where an int belongs would otherwise pass the launch and crash every later ``ask``
    (or surface as Python's own "'<' not supported" at launch). Arguments that take callables
    or objects cannot come from JSON at all.

    Raises:
        SpecError: naming ``loop_options.<key>`` and what it must be.
    """
    if "seed" in options:  # the loop is built with the spec's seed: a second one collides
        raise SpecError(
            "loop_options.seed",
            f"the {loop} loop's seed is not a loop option",
            "the spec's top-level seed sets the sampler's seed: move it there",
        )
    params = inspect.signature(target).parameters
    settable = sorted(k for k in params if k not in ("self", "directions", "seed", *skip))
    for key, value in options.items():
        if key not in params or key in skip:
            raise SpecError(
                f"loop_options.{key}",
                f"unknown option of the {loop} loop",
                f"known: {', '.join(settable)}",
            )
        annotation = params[key].annotation
        names = {
            t.strip().split("[")[0]
            for t in str(getattr(annotation, "__name__", annotation)).split("|")
        }
        if value is None and "None" in names:
            continue
        kinds = names - {"None"}
        if not kinds or not kinds <= set(_JSON_TYPES):
            raise SpecError(f"loop_options.{key}", f"the {loop} loop's {key} cannot be set")
        allowed = tuple(t for k in kinds for t in _JSON_TYPES[k])
        ok = isinstance(value, allowed) and (isinstance(value, bool) == ("bool" in kinds))
        if isinstance(value, float) and not math.isfinite(value):
            ok = False
        if not ok:
            raise SpecError(
                f"loop_options.{key}", f"must be {' or '.join(sorted(kinds))}, got {value!r}"
            )
        _check_range(loop, key, value)


def _check_sampler_options(name: str, options: dict[str, Any]) -> None:
    check_option_types(SAMPLER_CLASSES[name], name, options)


#: the least value of a sampler's counts (0 for the others: a negative count, size or seed
#: is stored unchecked and fails every later ask)
_LEAST = {"n_ei_candidates": 1, "population_size": 2}


def _check_range(name: str, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    least = _LEAST.get(key, 0)
    if value < least:
        raise SpecError(f"loop_options.{key}", f"must be >= {least}, got {value!r}")
    if "prob" in key and value > 1:
        raise SpecError(f"loop_options.{key}", f"a probability: must be in 0..1, got {value!r}")


class OptunaSamplerLoop(SearchLoop):
    """A loop that asks one of Optuna's samplers (data fields too: ``chooses_data``).

    Args:
        name: "random", "tpe", "nsga2" or "gp".
        seed: Base seed. The server offsets it by the number of trials already in the study so
            a restarted server does not replay the suggestions it already made.
        n_objectives: Number of objectives of the study.
        options: Extra keyword arguments for the sampler (for example ``n_startup_trials``).
    """

    chooses_data = True

    def __init__(
        self, name: str, seed: int | None, n_objectives: int, options: dict[str, Any] | None = None
    ) -> None:
        if name not in SAMPLER_FACTORIES:
            raise SpecError(
                "loop", f"unknown loop {name!r}", f"one of {', '.join(SAMPLER_FACTORIES)}"
            )
        self.name = name
        _check_sampler_options(name, dict(options or {}))
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

    def suggest(self, snapshot: LoopSnapshot, count: int = 1) -> list[Suggestion]:
        """Asks the sampler ``count`` times through the snapshot's study.

        Each ask creates the trial directly (the server pops re-queued trials itself, so
        ``Study.ask``'s scan of every unfinished trial for queued ones is skipped) and lets the
        space suggest its architecture through it, then the snapshot's data space its data
        fields (categorical parameters, so the sampler models them jointly with the rest).

        Raises:
            ValueError: The snapshot carries no Optuna study (it was not built by the server).
        """
        study = snapshot.optuna_study
        if not isinstance(study, optuna.Study):
            raise ValueError(f"the {self.name} loop needs the server's Optuna study")
        out = []
        for _ in range(count):
            study._thread_local.cached_all_trials = None  # as Study.ask does
            trial_id = study._storage.create_new_trial(study._study_id)
            trial = optuna.Trial(study, trial_id)
            architecture = snapshot.space.suggest(trial)
            data = snapshot.data_space.suggest(trial) if snapshot.data_space is not None else {}
            out.append(Suggestion(architecture=architecture, data=data, asked_trial=trial_id))
        return out


for _name in SAMPLER_FACTORIES:
    LOOPS.register(_name, functools.partial(OptunaSamplerLoop, _name))
