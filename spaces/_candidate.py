"""The candidate: a versioned, JSON-serialisable spec of one thing to train and evaluate.

A candidate is architecture + training recipe + data choices (DESIGN.md principle 4). The
Optuna parameters of a trial are its flattened, dashboard-readable form; the full candidate is
also stored as the trial attribute ``archsearch:candidate`` so a worker can rebuild it exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from archsearch.spaces._curriculum_spec import validate_curriculum
from archsearch.spaces._errors import SpecError
from archsearch.spaces._fields import check_fields as _check_fields
from archsearch.spaces._fields import one_of as _one_of
from archsearch.spaces._recipe import DEFAULT_RECIPE, validate_recipe
from archsearch.spaces._selection_checks import check_selection_values

CANDIDATE_VERSION = 1

# Data choices: which GLUE task, and the slices used (0 = the whole split).
DEFAULT_DATA: dict[str, Any] = {
    "task": "sst2",
    "train_subset": 0,
    "eval_subset": 0,
}

_DATA_TYPES: dict[str, tuple[type, ...]] = {
    "task": (str,),
    # several tasks: one trial trains and evaluates each (metrics keyed "<task>.<metric>")
    "tasks": (list,),
    # a user's own task (spaces/_custom_task.py CustomTask), validated by the server
    "custom_task": (dict,),
    # data source: "auto" (glue_data folder, else the hub when online) | "dir" | "hub"
    "source": (str,),
    "hub_dataset": (str,),
    # which training examples to use (worker/_selectors.py): {"method": "none"} (default)
    "selection": (dict,),
    # FlexiBERT's masked-LM pre-training text chosen from pools: "dsir", or "random" (its
    # baseline); PRETRAIN_SELECTION_METHODS
    "pretrain_selection": (dict,),
    # which training examples each epoch sees (spaces/_curriculum_spec.py, worker/_curriculum.py)
    "curriculum": (dict,),
    "train_subset": (int,),
    "eval_subset": (int,),
    # the seed of the eval_subset sample, fixed per study: every candidate, and every
    # recipe.seed, is scored on the same dev examples (absent: recipe.seed, as studies
    # launched before it was pinned drew it)
    "eval_seed": (int,),
    # AutoDistil supernet training's unlabeled text file (default: the tasks' train text)
    "distill_text": (str,),
    # ... or that text chosen from pools like pretrain_selection (PRETRAIN_SELECTION_METHODS)
    "distill_selection": (dict,),
}
#: Every field of a candidate's ``data`` (a trainer declares those it reads:
#: ``TrainerInfo.data_fields``).
DATA_FIELDS: tuple[str, ...] = tuple(_DATA_TYPES)
#: The fields only AutoDistil's supernet jobs read.
DISTILL_DATA_FIELDS = ("distill_text", "distill_selection")
SOURCES = ("auto", "dir", "hub")
#: ``data.selection`` methods and each one's own fields (worker/_selectors.py implements them):
#: ``none`` keeps every example; ``random`` a seeded random ``size`` of them; ``dsir``
#: importance resampling (its values: spaces/_selection_checks.py).
SELECTION_METHODS: dict[str, dict[str, tuple[type, ...]]] = {
    "none": {},
    "random": {"size": (int,)},
    "dsir": {
        **{k: (str, list) for k in ("pool", "target")},
        **{k: (int,) for k in ("k", "ngrams", "buckets", "min_length", "seed")},
        **{k: (int, float) for k in ("fraction", "laplace")},
        "top_k": (bool,),
    },
}
#: ``data.pretrain_selection`` methods and their fields: ``dsir`` as above (with a ``pool``);
#: ``random`` a seeded uniformly random k of the same pools' eligible texts, so it reads
#: DSIR's fields less ``laplace`` and ``top_k`` (spaces/_selection_checks.py checks the values).
PRETRAIN_SELECTION_METHODS: dict[str, dict[str, tuple[type, ...]]] = {
    "dsir": SELECTION_METHODS["dsir"],
    "random": {k: v for k, v in SELECTION_METHODS["dsir"].items() if k not in ("laplace", "top_k")},
}


def validate_data(data: dict[str, Any]) -> dict[str, Any]:
    """Returns the data choices with defaults filled in; raises SpecError on a bad field."""
    out = dict(DEFAULT_DATA)
    out.update(_check_fields("data", data, _DATA_TYPES))
    for key in ("train_subset", "eval_subset"):
        if out[key] < 0:
            raise SpecError(f"data.{key}", f"must be >= 0 (0 = whole split), got {out[key]}")
    if "eval_seed" in out and not 0 <= out["eval_seed"] < 2**32:
        raise SpecError("data.eval_seed", f"must be an int in [0, 2^32), got {out['eval_seed']}")
    _one_of("data.source", out.get("source", "auto"), SOURCES)
    if "hub_dataset" in out and not out["hub_dataset"].strip():
        raise SpecError("data.hub_dataset", "must be a hub dataset name, got ''")
    if "selection" in out:
        out["selection"] = validate_selection(out["selection"])
        check_selection_values(out["selection"], "data.selection", pools=False)
    if "pretrain_selection" in out:
        out["pretrain_selection"] = validate_selection(
            out["pretrain_selection"], "data.pretrain_selection", PRETRAIN_SELECTION_METHODS
        )
        check_selection_values(out["pretrain_selection"], "data.pretrain_selection", pools=True)
    if "distill_selection" in out:
        if "distill_text" in out:
            raise SpecError(
                "data.distill_selection",
                "contradicts data.distill_text: the supernet's text is a file or a selection",
                "give one of them",
            )
        out["distill_selection"] = validate_selection(
            out["distill_selection"], "data.distill_selection", PRETRAIN_SELECTION_METHODS
        )
        check_selection_values(out["distill_selection"], "data.distill_selection", pools=True)
    if "curriculum" in out:
        out["curriculum"] = validate_curriculum(out["curriculum"])
    if "tasks" in out:
        tasks = out["tasks"]
        if not tasks or not all(isinstance(t, str) and t for t in tasks):
            raise SpecError("data.tasks", "must be a non-empty list of task names")
        if len(set(tasks)) != len(tasks):
            raise SpecError("data.tasks", f"lists a task twice: {tasks}")
        if "task" in data and data["task"] != tasks[0]:
            raise SpecError("data.task", "contradicts data.tasks", "give data.tasks alone")
        out["task"] = tasks[0]
    return out


def validate_selection(
    selection: dict[str, Any],
    section: str = "data.selection",
    methods: Mapping[str, Mapping[str, tuple[type, ...]]] = SELECTION_METHODS,
) -> dict[str, Any]:
    """Checks a ``data.selection`` object: a known ``method`` and only that method's fields.

    Args:
        selection: The object.
        section: Its place in the candidate, for errors (``data.pretrain_selection`` too).
        methods: The methods and their fields (:data:`PRETRAIN_SELECTION_METHODS` for
            ``data.pretrain_selection``).

    Returns:
        The object with ``method`` filled in ("none" when absent).

    Raises:
        SpecError: Not an object, an unknown method, or a field the method does not read.
    """
    if not isinstance(selection, dict):
        raise SpecError(section, f"must be a JSON object, got {type(selection).__name__}")
    method = selection.get("method", "none")
    if method not in methods:
        raise SpecError(
            f"{section}.method",
            f"unknown selection method {method!r}",
            f"one of {', '.join(methods)}",
        )
    fields = {k: v for k, v in selection.items() if k != "method"}
    known = methods[method]
    for key in fields:
        if key not in known:
            reads = ", ".join(sorted(known)) or "no other field"
            raise SpecError(f"{section}.{key}", "unknown field", f"method {method!r} reads {reads}")
    out = {"method": method, **_check_fields(section, fields, dict(known))}
    if method == "random" and "size" in known:
        size = out.get("size")
        if size is None or size <= 0:
            raise SpecError(f"{section}.size", f"must be an int > 0, got {size!r}", "e.g. 1000")
    return out


def data_tasks(data: dict[str, Any]) -> list[str]:
    """The tasks a candidate trains on, in order (one unless ``data.tasks`` lists several)."""
    return list(data.get("tasks") or [data["task"]])


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One candidate to train: immutable, JSON round-trippable.

    Attributes:
        space: Name of the design space the architecture belongs to.
        architecture: Space-specific architecture description (validated by the space).
        recipe: Training recipe (steps, batch, sequence length, optimiser settings, seed).
        data: Data choices (task, train/eval slices).
        version: Candidate format version.
        kind: The job a worker does with it (``train``; later kinds such as a supernet to
            train are refused by trainers that do not do them). Written only when not
            ``train``, so a training candidate's JSON and fingerprint are as before.
    """

    space: str
    architecture: dict[str, Any]
    recipe: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_RECIPE))
    data: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_DATA))
    version: int = CANDIDATE_VERSION
    kind: str = "train"

    def to_dict(self) -> dict[str, Any]:
        out = {
            "version": self.version,
            "space": self.space,
            "architecture": self.architecture,
            "recipe": self.recipe,
            "data": self.data,
        }
        if self.kind != "train":
            out["kind"] = self.kind
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def summary(self, limit: int = 160) -> str:
        """What the candidate trains, in one line for a log: a job's kind (other than
        ``train``), then its architecture as JSON, or its LoRA setting when the architecture
        is empty (a ``lora`` candidate); cut to ``limit`` characters."""
        what = self.architecture or {
            k: self.recipe[k] for k in ("learning_rate", "lora") if k in self.recipe
        }
        text = json.dumps(what, separators=(",", ":"))
        kind = "" if self.kind == "train" else f"{self.kind} job "
        return kind + (text if len(text) <= limit else text[: limit - 3] + "...")

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
        unknown = set(obj) - {"version", "space", "architecture", "recipe", "data", "kind"}
        if unknown:
            raise SpecError("candidate", f"unknown fields {sorted(unknown)}")
        space = obj.get("space")
        if not isinstance(space, str) or not space:
            raise SpecError("candidate.space", "must be a non-empty string")
        arch = obj.get("architecture")
        if not isinstance(arch, dict):
            raise SpecError("candidate.architecture", "must be a JSON object")
        kind = obj.get("kind", "train")
        if not isinstance(kind, str) or not kind:
            raise SpecError("candidate.kind", f"must be a non-empty string, got {kind!r}")
        return cls(
            space=space,
            architecture=arch,
            recipe=validate_recipe(obj.get("recipe", {})),
            data=validate_data(obj.get("data", {})),
            version=version,
            kind=kind,
        )

    @classmethod
    def from_json(cls, text: str) -> Candidate:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError("candidate", f"not valid JSON: {e}") from e
        return cls.from_dict(obj)
