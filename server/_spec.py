"""The search spec: what a person launches, validated before anything is created."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import re
from typing import Any

from archsearch.search import LOOPS, make_loop, make_pruner
from archsearch.server._loop_guard import loop_call
from archsearch.server._spec_checks import (
    AGGREGATE_METRICS,
    MAX_SPEC_DEPTH,
    Objective,
    check_aggregates_read,
    check_depth,
    check_fits_teacher,
    check_loop_prunes,
    check_pretrain_selection_fits,
    check_prunable,
    check_reads_data,
    check_table_budget,
    check_teacher_tasks,
    check_trainer_can_run,
    default_objectives,
)
from archsearch.server._spec_data import (
    check_absolute,
    check_curriculum_effect,
    check_selection_targets,
    fill_dsir_targets,
    pin_eval_seed,
    spec_data,
)
from archsearch.server._spec_objectives import parse_objectives, unique_keys
from archsearch.server._trainers import TrainerCatalogue
from archsearch.spaces import (
    DataSpace,
    DesignSpace,
    GraphSpace,
    LoraSpace,
    MutableSpace,
    SpecError,
    data_tasks,
    make_space,
    validate_recipe,
)
from archsearch.spaces._lora_spec import pin_lora_defaults
from archsearch.spaces._recipe import check_pair_length

STUDY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
MAX_TRIALS = 100_000

_KNOWN = {
    "name",
    "space",
    "space_options",
    "loop",
    "loop_options",
    "n_trials",
    "task",
    "objectives",
    "trainer",
    "pruner",
    "seed",
    "recipe",
    "data",
    "data_space",
    "max_retries",
    "tasks",
}


def check_known_fields(obj: dict[str, Any]) -> None:
    """Refuses a top-level field the spec does not have, with the one meant when it is close
    (``n_trial``: did you mean n_trials?).

    Raises:
        SpecError: on the first unknown field.
    """
    unknown = sorted(set(obj) - _KNOWN)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(_KNOWN), n=1)
        meant = f"did you mean {close[0]!r}? " if close else ""
        raise SpecError(
            unknown[0], "unknown spec field", f"{meant}known: {', '.join(sorted(_KNOWN))}"
        )


@dataclasses.dataclass(frozen=True)
class SearchSpec:
    """A validated search spec. ``to_dict`` is stored on the study; ``from_dict`` re-reads it."""

    name: str
    space: str
    n_trials: int
    loop: str = "tpe"
    space_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    loop_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    objectives: tuple[Objective, ...] = (Objective("accuracy", "maximize"),)
    trainer: str = "bert"
    pruner: dict[str, Any] = dataclasses.field(default_factory=lambda: {"type": "none"})
    seed: int = 0
    recipe: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_retries: int = 2
    #: Data fields searched with the architecture (``spaces/_data_space.py``); {}: none.
    data_space: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def task(self) -> str:
        return str(self.data["task"])

    @property
    def tasks(self) -> list[str]:
        return data_tasks(self.data)

    @property
    def intermediate_metric(self) -> str:
        """The metric workers report while training; empty when the first objective is an
        aggregate or the trial spans several tasks (no learning curve to prune on then)."""
        first = self.objectives[0].metric
        if len(self.tasks) > 1 or first in AGGREGATE_METRICS:
            return ""
        return first

    @property
    def raw_objective_metrics(self) -> tuple[str, ...]:
        """Objective metrics a worker must report itself (aggregates are computed here)."""
        return tuple(o.metric for o in self.objectives if o.metric not in AGGREGATE_METRICS)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["objectives"] = [dataclasses.asdict(o) for o in self.objectives]
        d["task"] = self.task
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def build_space(self) -> DesignSpace:
        return make_space(self.space, self.space_options)

    @functools.cached_property
    def data_choices(self) -> DataSpace | None:
        """The searched data fields, or None when the study searches none."""
        return DataSpace(self.data_space) if self.data_space else None

    @classmethod
    def from_json(cls, text: str, trainers: TrainerCatalogue | None = None) -> SearchSpec:
        try:
            obj = json.loads(text, object_pairs_hook=unique_keys)
        except json.JSONDecodeError as e:
            raise SpecError("spec", f"not valid JSON: {e}", "send a JSON object") from e
        except RecursionError as e:
            raise SpecError(
                "spec", f"nested more than {MAX_SPEC_DEPTH} levels deep", "send a flat spec"
            ) from e
        except ValueError as e:  # an integer of more digits than Python converts (4300)
            why = str(e).split(";")[0]  # not Python's advice on set_int_max_str_digits
            raise SpecError("spec", f"not valid JSON: {why}", "send a JSON object") from e
        return cls.from_dict(obj, trainers)

    @classmethod
    def from_dict(
        cls, obj: Any, trainers: TrainerCatalogue | None = None, *, stored: bool = False
    ) -> SearchSpec:
        """Validates every field; raises SpecError naming the first bad one and the fix.

        ``trainers`` says which trainers exist and what they report (the server's catalogue,
        fed by the workers' registrations); None: the trainers installed here. ``stored``: the
        spec of a study already in the storage (a restarted server reads it); the checks that
        refuse a new study whose data choices change nothing (a data field the trainer does
        not read, a pre-training selection with nothing pre-trained, a custom task the task
        list leaves out) are skipped, so a study launched before they existed is still served.
        """
        if not isinstance(obj, dict):
            raise SpecError("spec", f"must be a JSON object, got {type(obj).__name__}")
        check_depth(obj)
        check_known_fields(obj)

        name = obj.get("name")
        if not isinstance(name, str) or not STUDY_NAME_RE.match(name):
            raise SpecError(
                "name",
                f"invalid study name {name!r}",
                "1-100 of letters, digits, '.', '_' or '-', starting with a letter or digit",
            )
        n_trials = obj.get("n_trials")
        if (
            isinstance(n_trials, bool)
            or not isinstance(n_trials, int)
            or not 0 < n_trials <= MAX_TRIALS
        ):
            raise SpecError("n_trials", f"must be an int in 1..{MAX_TRIALS}, got {n_trials!r}")

        seed = obj.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise SpecError("seed", f"must be an int in [0, 2^32), got {seed!r}")
        max_retries = obj.get("max_retries", 2)
        if (
            isinstance(max_retries, bool)
            or not isinstance(max_retries, int)
            or not 0 <= max_retries <= 10
        ):
            raise SpecError("max_retries", f"must be an int in 0..10, got {max_retries!r}")

        data = spec_data(obj, stored)
        data_space = DataSpace.from_spec(obj.get("data_space"), data, strict=not stored)
        data, data_space = fill_dsir_targets(data, data_space, stored)
        if not stored:
            data = pin_eval_seed(data)
        recipe = validate_recipe(obj.get("recipe", {}))
        if not stored:  # a stored study keeps being served; its worker says the same
            check_pair_length(recipe, data_tasks(data), data)
            check_selection_targets(data, data_space)
            check_curriculum_effect(data)

        given = obj["objectives"] if "objectives" in obj else default_objectives(data)
        objectives = parse_objectives(given)

        trainer = obj.get("trainer", "bert")
        if not isinstance(trainer, str):
            raise SpecError("trainer", f"must be a trainer's name, got {trainer!r}")
        catalogue = trainers if trainers is not None else TrainerCatalogue.installed()
        info = catalogue.require(trainer)

        space_name = obj.get("space")
        if space_name is None:
            raise SpecError("space", "missing", 'for example "bert" or "flexibert-small"')
        if not isinstance(space_name, str):
            raise SpecError(
                "space", f"must be a space's name, got {space_name!r}", 'for example "bert"'
            )
        space_options = obj.get("space_options", {})
        if not isinstance(space_options, dict):
            raise SpecError("space_options", "must be a JSON object")
        if space_name == "flexibert-small" and "table" in space_options:
            space_options = {"task": data["task"], **space_options}
        space = make_space(space_name, space_options)
        space.check_recipe(recipe)  # a space searching recipe settings (lora) owns them
        if not stored and isinstance(space, LoraSpace):
            recipe = pin_lora_defaults(recipe)
        if not stored:
            check_table_budget(space, data_space, n_trials)
        given = obj.get("recipe", {})  # the study's own, before defaults (a stored spec has all)
        owned = [k for k in space.searched_recipe_keys if k in given]
        if owned and not stored:
            raise SpecError(
                f"recipe.{owned[0]}",
                f"is set by the {space_name} space for each candidate (this value would be "
                "replaced)",
                f"use space_options.{owned[0]}: [low, high] to search it, or one value to fix it",
            )
        if info.spaces and space_name not in info.spaces:
            raise SpecError(
                "trainer",
                f"the {trainer} trainer does not train {space_name} candidates"
                + (f" ({info.description})" if info.description else ""),
                f"use space {' or '.join(info.spaces)}, or "
                + (
                    " or ".join(f"--trainer {n}" for n in fits)
                    if (fits := _trainers_of(catalogue, space_name))
                    else "another trainer"
                ),
            )
        if space_name != "bert":
            for key in ("init", "distill"):
                if recipe.get(key) not in (None, "random", {}):
                    raise SpecError(
                        f"recipe.{key}",
                        f"teacher initialisation and distillation need BERT-shaped students; "
                        f"{space_name} models are heterogeneous",
                        "drop it, or search the bert space",
                    )

        loop = obj.get("loop", "tpe")
        LOOPS[loop]  # UnknownName: the known ones, or why an installed plugin does not load
        loop_options = obj.get("loop_options", {})
        if not isinstance(loop_options, dict):
            raise SpecError("loop_options", "must be a JSON object")
        built = loop_call(  # validates options
            loop, "its constructor", lambda: make_loop(loop, seed, len(objectives), loop_options)
        )
        # e.g. autodistil: its space, enough trials
        loop_call(loop, "check_study", lambda: built.check_study(space, n_trials))
        if space_name == "autodistil" and loop != "autodistil":
            raise SpecError(
                "loop",
                "the autodistil space's jobs (supernets, rankings, students) are staged by "
                f"the autodistil loop, not {loop}",
                'use "loop": "autodistil"',
            )
        if built.needs_graph_space and not isinstance(space, GraphSpace):
            raise SpecError(
                "loop",
                f"the {loop} loop embeds architecture graphs; the {space_name} space has none",
                "use the flexibert or flexibert-small space, or another loop",
            )
        if built.needs_mutable_space and not isinstance(space, MutableSpace):
            raise SpecError(
                "loop",
                f"the {loop} loop mutates architectures; the {space_name} space cannot",
                "use the bert, flexibert or flexibert-small space, or another loop",
            )
        if data_space is not None and not built.chooses_data:
            raise SpecError(
                "data_space",
                f"the {loop} loop does not choose data",
                "use tpe, random, gp, nsga2, boshnas, embedding-gp or numeric-gp, or drop "
                "data_space",
            )

        pruner = obj.get("pruner", {"type": "none"})
        if isinstance(pruner, str):
            pruner = {"type": pruner}
        if not isinstance(pruner, dict):
            raise SpecError("pruner", 'must be a JSON object like {"type": "median"}')
        make_pruner(pruner, len(objectives))
        spec_probe = cls(
            name=name,
            space=space_name,
            n_trials=n_trials,
            objectives=objectives,
            data=data,
            recipe=recipe,
        )
        if pruner.get("type", "none") != "none" and not spec_probe.intermediate_metric:
            raise SpecError(
                "pruner",
                "pruning needs a learning curve, and multi-task trials or an aggregate first "
                "objective report none",
                'use "pruner": "none", or a single task with a per-task metric first',
            )
        if recipe.get("init") == "teacher" and space_name == "bert" and "teacher" not in recipe:
            check_fits_teacher(space.options())
        if not stored:  # a stored study goes on being served as it was launched
            check_teacher_tasks(recipe, data)
            check_aggregates_read(objectives, data)
            if isinstance(recipe.get("pretrain_text"), str):
                check_absolute("recipe.pretrain_text", recipe["pretrain_text"])
        check_trainer_can_run(info, objectives, data, space.options(), recipe)
        if not stored:
            built.check_metrics(info.produced_metrics(data))  # e.g. autodistil's proxy
            searched = tuple(data_space.fields) if data_space is not None else ()
            check_reads_data(info, data, searched)
            check_pretrain_selection_fits(space_name, recipe, data, searched)
        if pruner.get("type", "none") != "none":
            if not stored:  # a stored autodistil study with a pruner prunes its students only
                check_loop_prunes(loop, built.refuses_pruner)
            # a stored study launched before the pruner's own checks is still served
            checked = None if stored else recipe
            check_prunable(
                info,
                spec_probe.intermediate_metric,
                data,
                checked,
                pruner,
                None if stored else n_trials,
            )

        return cls(
            name=name,
            space=space_name,
            n_trials=n_trials,
            loop=loop,
            space_options=space.options(),
            loop_options=dict(loop_options),
            objectives=objectives,
            trainer=trainer,
            pruner=dict(pruner),
            seed=seed,
            recipe=recipe,
            data=data,
            max_retries=max_retries,
            data_space=data_space.to_dict() if data_space is not None else {},
        )


def trainer_metrics(
    trainer: str, data: dict[str, Any], trainers: TrainerCatalogue | None = None
) -> tuple[str, ...]:
    """Every raw metric ``trainer`` reports for a trial on the spec's (validated) ``data``
    (:meth:`~archsearch.spaces.TrainerInfo.produced_metrics` of its metadata).

    Raises:
        SpecError: No such trainer in ``trainers`` (None: the trainers installed here).
    """
    catalogue = trainers if trainers is not None else TrainerCatalogue.installed()
    return catalogue.require(trainer).produced_metrics(data)


def _trainers_of(catalogue: TrainerCatalogue, space: str) -> list[str]:
    """The trainers of ``catalogue`` that name ``space`` among the spaces they train."""
    return [
        n for n in catalogue.names() if (i := catalogue.get(n)) is not None and space in i.spaces
    ]
