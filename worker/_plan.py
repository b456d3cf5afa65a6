"""TrainingPlan: a candidate parsed once, before anything is loaded or trained.

:func:`parse_plan` checks everything a trainer reads from a candidate (the recipe with this
trainer's own keys and the FlexiBERT fidelity keys, the data choices, the tasks, the
architecture for the space) and returns a frozen :class:`TrainingPlan`; the stages after it
(data source and selector, model, hooks, loop) read the plan instead of checking the candidate's
dicts again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from archsearch.spaces import (
    Candidate,
    SpecError,
    get_task,
    validate_custom_task,
    validate_data,
    validate_recipe,
)
from archsearch.spaces._selection_checks import check_pretrain_selection
from archsearch.worker._custom_files import resolve_custom_task
from archsearch.worker._fidelity import FIDELITY_KEYS, Fidelity, check_fidelity
from archsearch.worker._flexibert_config import FLEXIBERT_SPACES, candidate_architecture
from archsearch.worker._glue_dir import GlueDataMissing
from archsearch.worker._task_info import Task
from archsearch.worker._trainer import CandidateError

_ARCH_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")

#: Recipe keys this trainer reads besides the shared ones, with their defaults. Read here so
#: that they work whether or not ``validate_recipe`` knows them yet.
#:
#: * ``precision``: "auto" (CUDA: bf16 autocast where the GPU supports it natively, else
#:   fp16 autocast with loss scaling; CPU: fp32), "fp32", "bf16" or "fp16". Measured on an
#:   H100 (benchmarks/RESULTS.md, trainer_throughput): students up to 4 x 256 train 10-25%
#:   faster in fp32 (their steps are launch-bound; autocast adds cast kernels); bf16 pays off
#:   from MiniLM size at batch 128. Small-student searches on a GPU can pass "fp32".
#: * ``keep_checkpoint``: save the model with the best dev value of the reported metric (see
#:   :func:`checkpoint_root`); its folder is ``TrainResult.info["checkpoint"]``.
#: * ``measure_latency``: measure ``latency_ms_b1``/``latency_ms_b32`` (about a second on a
#:   CPU worker per task).
#: * ``progress``: a tqdm progress bar on stderr: None (default) shows it only when stderr is
#:   a terminal, True always, False never.
TRAINER_RECIPE_DEFAULTS: dict[str, Any] = {
    "precision": "auto",
    "keep_checkpoint": False,
    "measure_latency": True,
    "progress": None,
}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """One candidate, checked once, as the training stages read it.

    The mappings are the checked values with every default filled in; stages must not change
    them (the plan is shared by every task of a trial).

    Attributes:
        candidate: The candidate as leased (its fingerprint names kept checkpoints).
        tasks: The tasks in training order, labels known (GLUE tasks or the custom task).
        architecture: The model to build: the four BERT shape fields, or FlexiBERT's format
            for the FlexiBERT spaces.
        recipe: The recipe: the shared keys, :data:`TRAINER_RECIPE_DEFAULTS` and the
            FlexiBERT fidelity keys given.
        data: The data choices; ``tasks`` lists the task ids.
        fidelity: Where a FlexiBERT student starts (random, pre-trained, transferred).
    """

    candidate: Candidate
    tasks: tuple[Task, ...]
    architecture: Mapping[str, Any]
    recipe: Mapping[str, Any]
    data: Mapping[str, Any]
    fidelity: Fidelity

    @property
    def is_flexibert(self) -> bool:
        """Whether the model is a heterogeneous FlexiBERT (else a homogeneous BERT)."""
        return self.candidate.space in FLEXIBERT_SPACES

    @property
    def seed(self) -> int:
        return int(self.recipe["seed"])

    @property
    def max_steps(self) -> int:
        return int(self.recipe["max_steps"])

    @property
    def max_seq_length(self) -> int:
        return int(self.recipe["max_seq_length"])

    @property
    def precision(self) -> str:
        """ "auto", "fp32", "bf16" or "fp16" as asked (resolved against the device later)."""
        return str(self.recipe["precision"])

    @property
    def keep_checkpoint(self) -> bool:
        return bool(self.recipe["keep_checkpoint"])

    @property
    def measure_latency(self) -> bool:
        return bool(self.recipe["measure_latency"])

    @property
    def transfer_from(self) -> str | None:
        value = self.recipe.get("transfer_from")
        return str(value) if value else None


def parse_plan(candidate: Candidate) -> TrainingPlan:
    """Checks ``candidate`` for the bert trainer and returns its :class:`TrainingPlan`.

    Raises:
        CandidateError: Anything the trainer cannot train: a bad recipe or data field, an
            unknown task, a custom task whose files do not give its labels, an architecture
            that does not fit the space, or a recipe key the space does not support.
    """
    tasks, recipe, data = _checked_spec(candidate)
    architecture = _checked_candidate_architecture(candidate, recipe)
    try:
        fidelity = check_fidelity(recipe)
    except ValueError as e:
        raise CandidateError(str(e)) from e
    return TrainingPlan(
        candidate=candidate,
        tasks=tasks,
        architecture=architecture,
        recipe=recipe,
        data=data,
        fidelity=fidelity,
    )


def _checked_spec(candidate: Candidate) -> tuple[tuple[Task, ...], dict[str, Any], dict[str, Any]]:
    """The tasks, and the recipe and data choices with defaults filled in.

    This trainer's own recipe keys (:data:`TRAINER_RECIPE_DEFAULTS`) and ``data.tasks`` are
    checked here, so they work whether or not the shared validation knows them.
    """
    given_recipe = dict(candidate.recipe)
    own = {k: given_recipe.pop(k) for k in TRAINER_RECIPE_DEFAULTS if k in given_recipe}
    fidelity = {k: given_recipe.pop(k) for k in FIDELITY_KEYS if k in given_recipe}
    given_data = dict(candidate.data)
    task_list = given_data.pop("tasks", None)
    try:
        recipe = validate_recipe(given_recipe)
        data = validate_data(given_data)
    except SpecError as e:
        raise CandidateError(str(e)) from e
    for key in ("keep_checkpoint", "measure_latency"):
        if key in own and not isinstance(own[key], bool):
            raise CandidateError(f"recipe.{key} must be true or false, got {own[key]!r}")
    if own.get("progress") is not None and not isinstance(own["progress"], bool):
        raise CandidateError(
            f"recipe.progress must be true, false or null, got {own['progress']!r}"
        )
    if "precision" in own and own["precision"] not in PRECISIONS:
        raise CandidateError(
            f"recipe.precision must be one of {list(PRECISIONS)}, got {own['precision']!r}"
        )
    try:
        checked_fidelity = check_fidelity(fidelity)
        if "pretrain_selection" in data:
            check_pretrain_selection(data["pretrain_selection"])
    except ValueError as e:  # SpecError too
        raise CandidateError(str(e)) from e
    if "pretrain_selection" in data and (
        candidate.space not in FLEXIBERT_SPACES
        or checked_fidelity.pretrain_steps == 0
        or checked_fidelity.pretrain_text is not None
    ):
        raise CandidateError(
            "data.pretrain_selection chooses the masked-LM pre-training text of a FlexiBERT "
            "candidate: it needs space flexibert (or flexibert-small), recipe.pretrain_steps "
            "> 0 and no recipe.pretrain_text"
        )
    recipe = {**TRAINER_RECIPE_DEFAULTS, **recipe, **own, **fidelity}

    if task_list is None:
        task_ids = [data["task"]]
    else:
        if (
            not isinstance(task_list, list)
            or not task_list
            or not all(isinstance(t, str) for t in task_list)
        ):
            raise CandidateError(
                f"data.tasks must be a non-empty list of task ids, got {task_list!r}"
            )
        if len(set(task_list)) != len(task_list):
            raise CandidateError(f"data.tasks lists a task twice: {task_list}")
        task_ids = list(task_list)
    custom = None
    try:
        if "custom_task" in data:
            # resolve(): labels inferred from the training file when the spec omits them
            custom = resolve_custom_task(validate_custom_task(data["custom_task"]))
        tasks = tuple(custom if custom and t == custom.name else get_task(t) for t in task_ids)
    except GlueDataMissing:  # a custom task's file this worker lacks: handed back
        raise
    except (ValueError, SpecError, FileNotFoundError) as e:
        raise CandidateError(str(e)) from e
    return tasks, recipe, {**data, "tasks": list(task_ids)}


def _checked_candidate_architecture(
    candidate: Candidate, recipe: Mapping[str, Any]
) -> dict[str, Any]:
    """The architecture to build: FlexiBERT's format for the FlexiBERT spaces (checked, and
    refusing what only BERT students support), else the four BERT shape fields."""
    if candidate.space not in FLEXIBERT_SPACES:
        given = sorted(k for k in FIDELITY_KEYS if k in recipe)
        if given:
            raise CandidateError(
                f"recipe {given} apply to FlexiBERT candidates only, not space "
                f"{candidate.space!r}; remove them"
            )
        return _checked_architecture(candidate.architecture)
    if recipe.get("init", "random") != "random":
        raise CandidateError(
            f"recipe.init {recipe['init']!r} is not supported for {candidate.space} candidates "
            f"(teacher extraction needs a homogeneous BERT student); use 'random' or a fidelity"
        )
    if recipe.get("distill") and recipe["distill"].get("mode", "logits") != "none":
        raise CandidateError(
            f"recipe.distill is not supported for {candidate.space} candidates (the "
            f"distillation losses read BERT attention modules); remove it"
        )
    try:
        return candidate_architecture(candidate.space, candidate.architecture)
    except (SpecError, ValueError) as e:
        raise CandidateError(str(e)) from e


def _checked_architecture(architecture: dict[str, Any]) -> dict[str, int]:
    """The four BERT shape fields, checked; CandidateError names what is wrong."""
    missing = [k for k in _ARCH_KEYS if k not in architecture]
    if missing:
        raise CandidateError(f"architecture lacks {missing}; the bert trainer needs {_ARCH_KEYS}")
    arch = {k: architecture[k] for k in _ARCH_KEYS}
    for key, value in arch.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise CandidateError(f"architecture.{key} must be a positive int, got {value!r}")
    if arch["hidden_size"] % arch["num_attention_heads"]:
        raise CandidateError(
            f"hidden_size {arch['hidden_size']} is not divisible by num_attention_heads "
            f"{arch['num_attention_heads']}"
        )
    return arch
