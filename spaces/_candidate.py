"""The candidate: a versioned, JSON-serialisable spec of one thing to train and evaluate.

A candidate is architecture + training recipe + data choices (DESIGN.md principle 4). The
Optuna parameters of a trial are its flattened, dashboard-readable form; the full candidate is
also stored as the trial attribute ``archsearch:candidate`` so a worker can rebuild it exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

from archsearch.spaces._errors import SpecError

CANDIDATE_VERSION = 1

# Training recipe defaults: small enough for a CPU worker, overridden by the search spec.
DEFAULT_RECIPE: dict[str, Any] = {
    "max_steps": 200,
    "batch_size": 32,
    "max_seq_length": 64,
    "learning_rate": 5e-4,
    "weight_decay": 0.01,
    "warmup_ratio": 0.1,
    "eval_every": 50,
    "seed": 0,
}

# Data choices: which GLUE task, and the slices used (0 = the whole split).
DEFAULT_DATA: dict[str, Any] = {
    "task": "sst2",
    "train_subset": 0,
    "eval_subset": 0,
}

_RECIPE_TYPES: dict[str, tuple[type, ...]] = {
    "max_steps": (int,),
    "batch_size": (int,),
    "max_seq_length": (int,),
    "learning_rate": (int, float),
    "weight_decay": (int, float),
    "warmup_ratio": (int, float),
    "eval_every": (int,),
    "seed": (int,),
    "gradient_accumulation_steps": (int,),
}
_DATA_TYPES: dict[str, tuple[type, ...]] = {
    "task": (str,),
    "train_subset": (int,),
    "eval_subset": (int,),
}


def _check_fields(
    section: str, given: dict[str, Any], types: dict[str, tuple[type, ...]]
) -> dict[str, Any]:
    if not isinstance(given, dict):
        raise SpecError(section, f"must be a JSON object, got {type(given).__name__}")
    for key, value in given.items():
        if key not in types:
            raise SpecError(
                f"{section}.{key}", "unknown field", f"known fields: {', '.join(sorted(types))}"
            )
        allowed = types[key]
        if isinstance(value, bool) or not isinstance(value, allowed):
            names = " or ".join(t.__name__ for t in allowed)
            raise SpecError(f"{section}.{key}", f"must be {names}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"{section}.{key}", f"must be finite, got {value!r}")
    return dict(given)


def validate_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Returns the recipe with defaults filled in; raises SpecError on a bad field."""
    out = dict(DEFAULT_RECIPE)
    out.update(_check_fields("recipe", recipe, _RECIPE_TYPES))
    for key in ("max_steps", "batch_size", "max_seq_length", "eval_every"):
        if out[key] <= 0:
            raise SpecError(f"recipe.{key}", f"must be > 0, got {out[key]}")
    if out["max_seq_length"] > 512:
        raise SpecError("recipe.max_seq_length", "must be <= 512 (BERT position embeddings)")
    if out["learning_rate"] <= 0:
        raise SpecError("recipe.learning_rate", "must be > 0")
    if not 0 <= out["warmup_ratio"] < 1:
        raise SpecError("recipe.warmup_ratio", "must be in [0, 1)")
    if out.get("gradient_accumulation_steps", 1) <= 0:
        raise SpecError("recipe.gradient_accumulation_steps", "must be > 0")
    return out


def validate_data(data: dict[str, Any]) -> dict[str, Any]:
    """Returns the data choices with defaults filled in; raises SpecError on a bad field."""
    out = dict(DEFAULT_DATA)
    out.update(_check_fields("data", data, _DATA_TYPES))
    for key in ("train_subset", "eval_subset"):
        if out[key] < 0:
            raise SpecError(f"data.{key}", f"must be >= 0 (0 = whole split), got {out[key]}")
    return out


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One candidate to train: immutable, JSON round-trippable.

    Attributes:
        space: Name of the design space the architecture belongs to.
        architecture: Space-specific architecture description (validated by the space).
        recipe: Training recipe (steps, batch, sequence length, optimiser settings, seed).
        data: Data choices (task, train/eval slices).
        version: Candidate format version.
    """

    space: str
    architecture: dict[str, Any]
    recipe: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_RECIPE))
    data: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_DATA))
    version: int = CANDIDATE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "space": self.space,
            "architecture": self.architecture,
            "recipe": self.recipe,
            "data": self.data,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def fingerprint(self) -> str:
        """Stable hash of the whole candidate (architecture, recipe and data)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, obj: Any) -> Candidate:
        if not isinstance(obj, dict):
            raise SpecError("candidate", f"must be a JSON object, got {type(obj).__name__}")
        version = obj.get("version", CANDIDATE_VERSION)
        if version != CANDIDATE_VERSION:
            raise SpecError(
                "candidate.version",
                f"unsupported version {version!r}",
                f"this archsearch reads version {CANDIDATE_VERSION}; upgrade the worker",
            )
        unknown = set(obj) - {"version", "space", "architecture", "recipe", "data"}
        if unknown:
            raise SpecError("candidate", f"unknown fields {sorted(unknown)}")
        space = obj.get("space")
        if not isinstance(space, str) or not space:
            raise SpecError("candidate.space", "must be a non-empty string")
        arch = obj.get("architecture")
        if not isinstance(arch, dict):
            raise SpecError("candidate.architecture", "must be a JSON object")
        return cls(
            space=space,
            architecture=arch,
            recipe=validate_recipe(obj.get("recipe", {})),
            data=validate_data(obj.get("data", {})),
            version=version,
        )

    @classmethod
    def from_json(cls, text: str) -> Candidate:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError("candidate", f"not valid JSON: {e}") from e
        return cls.from_dict(obj)
