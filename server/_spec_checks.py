"""The checks that refuse a spec in which every trial must fail: objectives the trainer never
reports, space options it needs, students that do not fit inside the teacher."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Any

from archsearch.spaces import (
    DEFAULT_DATA,
    FLEXIBERT_SPACES,
    SpecError,
    TrainerInfo,
    data_tasks,
)

_UNSET = object()

# Aggregates the server computes from a trial's raw per-task metrics (spaces/_aggregate.py).
AGGREGATE_METRICS = ("glue_avg", "glue_avg_flexibert", "glue_avg_autodistil")


@dataclasses.dataclass(frozen=True)
class Objective:
    """One objective of a study: a metric and whether to maximise or minimise it."""

    metric: str
    direction: str  # "maximize" | "minimize"


# The default teacher, all-MiniLM-L6-v2: students initialised from it must fit inside it.
TEACHER_SHAPE = {"layers": 6, "hidden": 384, "head_dim": 32, "intermediate": 1536}


def check_aggregates_read(objectives: Sequence[Objective], data: dict[str, Any]) -> None:
    """At launch, refuses an aggregate objective that reads none of the study's tasks (custom
    tasks alone: every trial trained, then failed "no task it averages is present")."""
    from archsearch.spaces._aggregate import AGGREGATE_RULES

    tasks = data_tasks(data)
    for i, o in enumerate(objectives):
        if o.metric in AGGREGATE_RULES and not any(t in AGGREGATE_RULES[o.metric] for t in tasks):
            raise SpecError(
                f"objectives[{i}].metric",
                f"{o.metric} averages GLUE tasks; this study's tasks {list(tasks)} are none of "
                "them (a custom task is not in any GLUE average), so every trial would fail",
                f"use a task's own metric, e.g. {tasks[0]}.accuracy, or add a GLUE task",
            )


def check_teacher_tasks(recipe: dict[str, Any], data: dict[str, Any]) -> None:
    """Refuses teacher initialisation or distillation on a custom task: the teacher is
    fine-tuned per task with GLUE's standard recipes, and a custom task has none (each trial
    failed three times, as a machine's failure, with a Python-level fix)."""
    from archsearch.spaces import GLUE_TASK_IDS

    custom = [t for t in data_tasks(data) if t not in GLUE_TASK_IDS]
    distill = recipe.get("distill") or None  # {}: none, as the trainer reads it
    uses = [
        key
        for key, used in (
            ("init", recipe.get("init") not in (None, "random")),
            ("distill", isinstance(distill, dict) and distill.get("mode", "logits") != "none"),
        )
        if used
    ]
    if custom and uses:
        raise SpecError(
            f"recipe.{uses[0]}",
            f"{'teacher initialisation' if uses[0] == 'init' else 'distillation'} needs a "
            f"teacher fine-tuned on each task, and custom task {custom[0]!r} has no teacher "
            "recipe (the teachers are fine-tuned with GLUE's standard recipes)",
            f"drop recipe.{uses[0]}, or search GLUE tasks",
        )


def check_fits_teacher(options: dict[str, Any]) -> None:
    """Teacher-initialised students take slices of the teacher: every one must fit inside."""
    t = TEACHER_SHAPE
    if max(options["num_hidden_layers"]) > t["layers"]:
        raise SpecError(
            "space_options.num_hidden_layers",
            f"recipe.init=teacher: the teacher has {t['layers']} layers",
            f"keep num_hidden_layers <= {t['layers']}",
        )
    for hidden in options["hidden_size"]:
        if hidden > t["hidden"]:
            raise SpecError(
                "space_options.hidden_size",
                f"recipe.init=teacher: hidden size {hidden} > the teacher's {t['hidden']}",
            )
        if hidden * max(options["intermediate_ratio"]) > t["intermediate"]:
            raise SpecError(
                "space_options.intermediate_ratio",
                f"recipe.init=teacher: hidden {hidden} x ratio exceeds the teacher's "
                f"feed-forward size {t['intermediate']}",
            )
        for heads in options["num_attention_heads"]:
            if hidden % heads == 0 and hidden // heads > t["head_dim"]:
                raise SpecError(
                    "space_options.num_attention_heads",
                    f"recipe.init=teacher: hidden {hidden} with {heads} heads has head size "
                    f"{hidden // heads} > the teacher's {t['head_dim']}",
                    f"use at least {-(-hidden // t['head_dim'])} heads for hidden {hidden}",
                )


def check_trainer_can_run(
    info: TrainerInfo,
    objectives: Sequence[Objective],
    data: dict[str, Any],
    space_options: dict[str, Any],
    recipe: dict[str, Any] | None = None,
) -> None:
    """Refuses a spec in which every trial must fail: an objective the trainer never reports
    (a latency with ``recipe.measure_latency: false``, which measures none), or a space
    option the trainer needs left unset."""
    produced = info.produced_metrics(data)
    if (recipe or {}).get("measure_latency") is False:
        produced = tuple(m for m in produced if not m.rpartition(".")[2].startswith("latency_"))
    for i, o in enumerate(objectives):
        if o.metric in AGGREGATE_METRICS:
            if not info.multi_task:
                raise SpecError(
                    f"objectives[{i}].metric",
                    f"{o.metric} averages several GLUE tasks; the {info.name} trainer reports one",
                    f"use {produced[0]}",
                )
            continue
        if o.metric not in produced and o.metric.rpartition(".")[2].startswith("latency_"):
            raise SpecError(
                f"objectives[{i}].metric",
                f"recipe.measure_latency is false, so no trial measures {o.metric!r}",
                "set measure_latency true, or drop the objective",
            )
        per_task = [m for m in produced if m.partition(".")[2] == o.metric]
        if o.metric not in produced and per_task:  # a cost a multi-task trial has per task
            raise SpecError(
                f"objectives[{i}].metric",
                f"the {info.name} trainer reports {o.metric!r} per task in a multi-task study",
                f"use {' or '.join(per_task)}",
            )
        if o.metric not in produced:
            costs = info.cost_metrics
            # every name except the per-task copies of the cost metrics
            shown = ", ".join(
                m for m in produced if m.rpartition(".")[2] not in costs or "." not in m
            )
            near = [m for m in produced if m.startswith(o.metric)][:1] or (
                difflib.get_close_matches(o.metric, produced, n=1, cutoff=0.6)
            )
            raise SpecError(
                f"objectives[{i}].metric",
                f"the {info.name} trainer never reports {o.metric!r}, so every trial would fail",
                (f"did you mean {near[0]}? " if near else "") + f"it reports {shown}",
            )
    for key, why in info.required_space_options.items():
        if not space_options.get(key):
            raise SpecError(f"space_options.{key}", why)


def check_reads_data(info: TrainerInfo, data: dict[str, Any], searched: Sequence[str]) -> None:
    """Refuses a data choice (set in ``data``, or ``searched`` in ``data_space``) the trainer
    ignores (``TrainerInfo.data_fields``): a table's
    score does not change with the data selection, and a BERT fine-tuning reads no
    supernet text. A field left at its default (``train_subset`` 0) is not a choice."""
    if not info.data_fields:
        return
    given = [f"data.{k}" for k, v in data.items() if DEFAULT_DATA.get(k, _UNSET) != v]
    for field in (*given, *(f"data_space.{k}" for k in searched)):
        if field.partition(".")[2] not in info.data_fields:
            raise SpecError(
                field,
                f"the {info.name} trainer does not read it, so every trial would train (or "
                "look up) the same thing",
                f"drop it; the {info.name} trainer reads data {', '.join(info.data_fields)}",
            )


def check_pretrain_selection_fits(
    space: str, recipe: dict[str, Any], data: dict[str, Any], searched: Sequence[str]
) -> None:
    """``data.pretrain_selection`` (set, or searched in ``data_space``) chooses the masked-LM
    pre-training text of a FlexiBERT candidate: refused unless the space is FlexiBERT's and
    the recipe pre-trains (``pretrain_steps`` > 0) on no fixed ``pretrain_text``."""
    if "pretrain_selection" in data:
        field = "data.pretrain_selection"
    elif "pretrain_selection" in searched:
        field = "data_space.pretrain_selection"
    else:
        return
    if space not in FLEXIBERT_SPACES:
        raise SpecError(
            field,
            f"chooses a FlexiBERT candidate's masked-LM pre-training text; {space} candidates "
            "are not pre-trained",
            "search the flexibert or flexibert-small space, or drop it",
        )
    if not recipe.get("pretrain_steps"):
        raise SpecError(
            field,
            "chooses the masked-LM pre-training text, and the recipe does not pre-train",
            "set recipe.pretrain_steps > 0 (e.g. 200), or drop it",
        )
    if recipe.get("pretrain_text") is not None:
        raise SpecError(
            field,
            "contradicts recipe.pretrain_text: the pre-training text is a file or a selection",
            "give one of them",
        )


def check_loop_prunes(loop: str, refuses: str) -> None:
    """Refuses a pruner for a loop that says why none can serve it (``refuses``: the loop's
    ``refuses_pruner``)."""
    if refuses:
        raise SpecError(
            "pruner",
            f"loop {loop} takes no pruner: {refuses}",
            'drop "pruner" from the spec (or give "pruner": "none", --pruner none)',
        )


#: The trainers whose learning curve is the recipe's: a score every ``eval_every`` steps.
RECIPE_CURVE_TRAINERS = ("bert", "lora")


def check_prunable(
    info: TrainerInfo,
    metric: str,
    data: dict[str, Any],
    recipe: dict[str, Any] | None = None,
    pruner: dict[str, Any] | None = None,
    n_trials: int | None = None,
) -> None:
    """Refuses a pruner whose learning curve would be ``metric`` (the first objective) when
    it is one of the trainer's costs (``params``, ``flops``, ...: known once a trial has
    trained). A trainer's own ``metrics`` are left to it: a plugin may report them as it
    trains. For the trainers that score every ``recipe.eval_every`` steps, also a pruner
    that could never act: no score before the last step (never pruned: that would save
    nothing), or a warm-up past the last score; and, for any trainer, a pruner that waits for
    as many finished trials as the study has."""
    if info.name in RECIPE_CURVE_TRAINERS and recipe is not None:
        steps, every = recipe["max_steps"], recipe["eval_every"]
        warmup = (pruner or {}).get("n_warmup_steps", 0)
        if every >= steps:
            raise SpecError(
                "pruner",
                f"recipe.eval_every {every} >= recipe.max_steps {steps}: a trial is scored "
                "only at its end, so the pruner could never stop one",
                f"set recipe.eval_every below max_steps, such as {max(1, steps // 4)}, or "
                "--pruner none",
            )
        # the scores the pruner may act on: at eval_every, 2 x eval_every, ... before the end
        first = -(-max(warmup, 1) // every) * every if isinstance(warmup, int) else every
        if first >= steps:
            raise SpecError(
                "pruner.n_warmup_steps",
                f"{warmup}: no score falls between the warm-up and recipe.max_steps {steps} "
                f"(one every {every} steps), so the pruner could never stop a trial",
                f"a warm-up of at most {(steps - 1) // every * every}, or --pruner none",
            )
    startup = (pruner or {}).get("n_startup_trials")
    if isinstance(startup, int) and n_trials is not None and startup >= n_trials:
        raise SpecError(
            "pruner.n_startup_trials",
            f"{startup} >= n_trials {n_trials}: the pruner waits for {startup} finished trials "
            "before it stops any, so it could never stop one",
            f"fewer startup trials than {n_trials}, or --pruner none",
        )
    curve = info.curve_metrics(data)
    if metric and metric not in curve and metric.rpartition(".")[2] in info.cost_metrics:
        raise SpecError(
            "pruner",
            f"{metric!r} is measured once, not as training goes, so there is no learning "
            "curve to prune on",
            f"put a metric measured while training first ({', '.join(curve[:4])}), or use "
            '"pruner": "none"',
        )


def check_table_budget(space: Any, data_space: Any, n_trials: int) -> None:
    """A table's space (its rows are every candidate) cannot give more distinct candidates
    than rows x data choices: a larger ``n_trials`` ran on, re-proposing rows tried already
    by the thousand, until a long run of repeats ended it. Refused at launch."""
    rows = getattr(space, "members", None)
    if rows is None:
        return
    distinct = len(rows) * (len(data_space) if data_space is not None else 1)
    if n_trials > distinct:
        raise SpecError(
            "n_trials",
            f"{n_trials} is more than the {distinct} distinct candidates of the table "
            f"({len(rows)} rows"
            + (" x its data choices)" if data_space else ")")
            + ": the loop would re-propose rows tried already until a long run of repeats "
            "ended the study",
            f"give n_trials <= {distinct}",
        )


#: Deepest nesting a spec may have: real specs need 4 (recipe.distill.<key>); the cap keeps
#: every recursive step (json.loads, validation, json.dumps) far from Python's recursion limit.
MAX_SPEC_DEPTH = 32


def check_depth(obj: dict[str, Any]) -> None:
    """SpecError naming the top-level field under which ``obj`` nests too deeply.

    Iterative, so that a spec built in Python (the CLI's ``--spec`` file) nested thousands of
    levels deep is refused here rather than overflowing the stack somewhere later."""
    for key, value in obj.items():
        stack = [(value, 1)]
        while stack:
            item, depth = stack.pop()
            if depth > MAX_SPEC_DEPTH:
                raise SpecError(
                    str(key), f"nested more than {MAX_SPEC_DEPTH} levels deep", "flatten it"
                )
            if isinstance(item, dict):
                stack.extend((v, depth + 1) for v in item.values())
            elif isinstance(item, list | tuple):
                stack.extend((v, depth + 1) for v in item)


def default_objectives(data: dict[str, Any]) -> list[dict[str, str]]:
    """The objective of a spec that names none: the task's own metric (CoLA's mcc, STS-B's
    pearson), the GLUE average of several GLUE tasks; accuracy otherwise."""
    from archsearch.spaces import GLUE_TASKS, validate_custom_task

    tasks = data_tasks(data)
    metric = "accuracy"
    if len(tasks) == 1 and tasks[0] in GLUE_TASKS:
        metric = GLUE_TASKS[tasks[0]].primary_metric
    elif len(tasks) == 1 and isinstance(data.get("custom_task"), dict):
        custom = validate_custom_task(data["custom_task"])
        try:
            metric = custom.primary_metric
        except ValueError:  # labels inferred from the files on the worker: accuracy first
            metric = "pearson" if custom.is_regression else "accuracy"
    elif len(tasks) > 1 and all(t in GLUE_TASKS for t in tasks):
        metric = "glue_avg"
    elif len(tasks) > 1:  # a custom task among them: the GLUE average leaves it out
        examples = " or ".join(f"--objective {t}.<metric>:max" for t in tasks[:2])
        raise SpecError(
            "objectives",
            f"missing: a study of tasks {tasks} (not all GLUE tasks) has no default objective "
            "(the GLUE average leaves a custom task out)",
            f"name one, e.g. {examples} (each task's metrics are '<task>.<metric>')",
        )
    return [{"metric": metric, "direction": "maximize"}]
