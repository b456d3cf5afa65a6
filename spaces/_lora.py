"""LoRA settings as a design space: one candidate per setting, every rank scored by DyLoRA.

The ``lora`` trainer adapts a pretrained encoder; what a study searches is how to adapt it:
the learning rate, LoRA's alpha, which modules get LoRA, and the largest rank. Those are this
space's parameters. A candidate carries them in its recipe (``recipe.learning_rate`` and
``recipe.lora``) with an empty architecture, as the trainer expects (:meth:`candidate_parts`).
In ``dylora`` mode (the default) one trial scores every rank 1..r_max, and the server records
each rank as its own trial (``server/_rank_trials.py``): a study spends one training per
setting, not one per setting and rank.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

from archsearch.spaces._base import SPACES, DesignSpace
from archsearch.spaces._errors import SpecError
from archsearch.spaces._lora_spec import check_packaged_targets, parse_lora_spec
from archsearch.spaces._options import int_choices, reject_unknown
from archsearch.spaces._students import PACKAGED_TEACHER_NAMES

if TYPE_CHECKING:
    import optuna

#: ``recipe.lora.mode`` values (worker/_lora_spec.py): DyLoRA, or plain LoRA at r_max.
LORA_SPACE_MODES = ("dylora", "lora")
_KEYS = ("learning_rate", "alpha", "targets", "r_max")
#: Recipe keys the lora trainer refuses (``worker/_lora_trainer.py``), refused at launch too
#: (``init`` and ``distill`` are refused there for every space but bert).
_NOT_READ = ("teacher", "pretrain_steps", "pretrain_text", "transfer_from")


def _targets_choices(value: Any) -> list[list[str]]:
    field = "space_options.targets"
    if not isinstance(value, list) or not value:
        raise SpecError(field, f"must be a non-empty list of module-name lists, got {value!r}")
    out: list[list[str]] = []
    for t in value:
        if (
            not isinstance(t, list)
            or not t
            or not all(isinstance(m, str) and m and "," not in m for m in t)
        ):
            raise SpecError(
                field, f"{t!r} is not a non-empty list of module names", '[["query", "value"]]'
            )
        if t in out:
            raise SpecError(field, f"has duplicates: {t}")
        out.append(list(t))
    return out


def _alpha_choices(value: Any) -> list[int | float]:
    if not isinstance(value, list) or not value:
        raise SpecError(
            "space_options.alpha", f"must be a non-empty list of numbers, got {value!r}"
        )
    for a in value:
        if isinstance(a, bool) or not isinstance(a, int | float) or not 0 < a < math.inf:
            raise SpecError("space_options.alpha", f"{a!r} is not a positive number")
    if len(set(value)) != len(value):
        raise SpecError("space_options.alpha", f"has duplicates: {value}")
    return sorted(value)


def _lr_range(value: Any) -> tuple[float, float]:
    """``[low, high]`` (searched on a log scale) or one number (every candidate's)."""
    field = "space_options.learning_rate"
    if not isinstance(value, bool) and isinstance(value, int | float) and 0 < value < math.inf:
        return float(value), float(value)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)
        or not 0 < value[0] <= value[1] < math.inf
    ):
        raise SpecError(
            field,
            f"must be [low, high] with 0 < low <= high, or one learning rate, got {value!r}",
        )
    return float(value[0]), float(value[1])


@SPACES.register("lora")
class LoraSpace(DesignSpace):
    """LoRA / DyLoRA fine-tuning settings (the ``lora`` trainer's candidates).

    Architecture (what ``suggest`` returns; :meth:`candidate_parts` moves it into the recipe):
    ``{"learning_rate": float, "alpha": number, "targets": [module, ...], "r_max": int}``.

    Options:
        learning_rate: [low, high], searched on a log scale, or one rate for every
            candidate; default [1e-4, 1e-2].
        alpha: LoRA alpha choices; default [8, 16, 32].
        targets: module-name lists (suffixes of linear layers); default
            [["query", "value"], ["query", "key", "value"]].
        r_max: largest rank choices; default [8].
        mode: ``recipe.lora.mode`` of every candidate: "dylora" (default: one training scores
            every rank) or "lora" (plain LoRA at r_max, a baseline).
    """

    name = "lora"
    searched_recipe_keys = ("learning_rate",)

    def __init__(self, **options: Any) -> None:
        reject_unknown(options, {"learning_rate", "alpha", "targets", "r_max", "mode"})
        self.lr = _lr_range(options.get("learning_rate", [1e-4, 1e-2]))
        self.alphas = _alpha_choices(options.get("alpha", [8, 16, 32]))
        self.targets = _targets_choices(
            options.get("targets", [["query", "value"], ["query", "key", "value"]])
        )
        self.r_max = int_choices("r_max", options.get("r_max", [8]), 1, 256)
        self.mode = options.get("mode", "dylora")
        if self.mode not in LORA_SPACE_MODES:
            raise SpecError(
                "space_options.mode", f"{self.mode!r} is not one of {', '.join(LORA_SPACE_MODES)}"
            )

    @staticmethod
    def _joined(targets: list[str]) -> str:
        return ",".join(targets)  # an Optuna choice must be a scalar

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        lr = trial.suggest_float("learning_rate", *self.lr, log=True)
        alpha = trial.suggest_categorical("alpha", self.alphas)
        targets = trial.suggest_categorical("targets", [self._joined(t) for t in self.targets])
        r_max = trial.suggest_categorical("r_max", self.r_max)
        return {"learning_rate": lr, "alpha": alpha, "targets": targets.split(","), "r_max": r_max}

    def validate(self, architecture: Any) -> dict[str, Any]:
        if not isinstance(architecture, dict) or not architecture:
            raise SpecError(
                "architecture", "must be a JSON object of LoRA settings", f"keys: {_KEYS}"
            )
        for key in architecture:
            if key not in _KEYS:
                raise SpecError(f"architecture.{key}", "unknown key", f"keys: {', '.join(_KEYS)}")
        for key in _KEYS:
            if key not in architecture:
                raise SpecError(f"architecture.{key}", "missing")
        lr = architecture["learning_rate"]
        if (
            isinstance(lr, bool)
            or not isinstance(lr, int | float)
            or not self.lr[0] <= lr <= self.lr[1]
        ):
            raise SpecError("architecture.learning_rate", f"{lr!r} is not in {list(self.lr)}")
        alpha = architecture["alpha"]
        if isinstance(alpha, bool) or alpha not in self.alphas:
            raise SpecError("architecture.alpha", f"{alpha!r} is not one of {self.alphas}")
        targets = architecture["targets"]
        if targets not in self.targets:
            raise SpecError("architecture.targets", f"{targets!r} is not one of {self.targets}")
        r_max = architecture["r_max"]
        if isinstance(r_max, bool) or r_max not in self.r_max:
            raise SpecError("architecture.r_max", f"{r_max!r} is not one of {self.r_max}")
        return {
            "learning_rate": float(lr),
            "alpha": next(a for a in self.alphas if a == alpha),
            "targets": list(targets),
            "r_max": int(r_max),
        }

    def sample(self, rng: random.Random) -> dict[str, Any]:
        low, high = math.log(self.lr[0]), math.log(self.lr[1])
        lr = self.lr[0] if self.lr[0] == self.lr[1] else math.exp(rng.uniform(low, high))
        return {
            "learning_rate": min(max(lr, self.lr[0]), self.lr[1]),
            "alpha": rng.choice(self.alphas),
            "targets": list(rng.choice(self.targets)),
            "r_max": rng.choice(self.r_max),
        }

    def to_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        return {
            "learning_rate": architecture["learning_rate"],
            "alpha": architecture["alpha"],
            "targets": self._joined(architecture["targets"]),
            "r_max": architecture["r_max"],
        }

    def describe(self, architecture: dict[str, Any]) -> str:
        if not architecture:  # a candidate's own (empty) architecture: settings are elsewhere
            return f"{self.mode} (settings in recipe.lora)"
        return (
            f"{self.mode} lr={architecture['learning_rate']:.2e} alpha={architecture['alpha']} "
            f"{'+'.join(architecture['targets'])} r_max={architecture['r_max']}"
        )

    def describe_candidate(self, candidate: dict[str, Any]) -> str:
        """The setting of a ``lora`` candidate, read from its ``recipe.lora``."""
        recipe = candidate.get("recipe") or {}
        lora = recipe.get("lora") or {}
        if candidate.get("architecture") or not isinstance(lora, dict):
            return self.describe(candidate.get("architecture") or {})
        lr = recipe.get("learning_rate")
        return (
            f"{lora.get('mode', 'dylora')} lr={lr:.2e} alpha={lora.get('alpha')} "
            f"{'+'.join(lora.get('targets') or [])} r_max={lora.get('r_max')}"
            if isinstance(lr, int | float)
            else f"{lora.get('mode', 'dylora')} {lora}"
        )

    def check_recipe(self, recipe: dict[str, Any]) -> None:
        """Checks the study's ``recipe.lora`` as the worker will check each candidate's.

        Refuses what this space decides for each candidate (mode, alpha, targets, r_max),
        which would otherwise be silently replaced; then checks the other keys with the
        worker's own rules (:func:`~archsearch.spaces._lora_spec.parse_lora_spec`) merged with
        every ``r_max`` choice, so a bad value (an unknown key, ``eval_ranks`` above an r_max,
        ``strict`` in mode lora, ...) fails when the study is created, not in every trial.
        """
        ignored = sorted(k for k in _NOT_READ if k in recipe)
        if ignored:
            raise SpecError(
                f"recipe.{ignored[0]}",
                "is not read by the lora trainer (it applies to BERT students trained from "
                "scratch), which would fail every trial",
                "remove it",
            )
        lora = recipe.get("lora", {})
        if not isinstance(lora, dict):
            parse_lora_spec(lora)  # raises: recipe.lora must be an object
        for key in ("mode", "alpha", "targets", "r_max"):
            if key in lora:
                fix = "space_options.mode" if key == "mode" else f"space_options.{key} (choices)"
                raise SpecError(
                    f"recipe.lora.{key}",
                    "is set by the lora space for each candidate",
                    f"use {fix}",
                )
        for r_max in self.r_max:
            parse_lora_spec(
                {
                    **lora,
                    "mode": self.mode,
                    "alpha": self.alphas[0],
                    "targets": self.targets[0],
                    "r_max": r_max,
                }
            )
        if lora.get("model") in (None, *PACKAGED_TEACHER_NAMES):  # its modules are known here
            for i, targets in enumerate(self.targets):
                check_packaged_targets(targets, f"space_options.targets[{i}]")

    def candidate_parts(
        self, architecture: dict[str, Any], recipe: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """An empty architecture, and the study's recipe with this setting: its learning rate,
        and ``recipe.lora`` with mode, alpha, targets and r_max (the study's other
        ``recipe.lora`` keys, such as ``model`` or ``frozen``, are kept)."""
        lora = {
            **dict(recipe.get("lora") or {}),
            "mode": self.mode,
            "alpha": architecture["alpha"],
            "targets": list(architecture["targets"]),
            "r_max": architecture["r_max"],
        }
        return {}, {**recipe, "learning_rate": architecture["learning_rate"], "lora": lora}

    def options(self) -> dict[str, Any]:
        return {
            "learning_rate": list(self.lr),
            "alpha": list(self.alphas),
            "targets": [list(t) for t in self.targets],
            "r_max": list(self.r_max),
            "mode": self.mode,
        }
