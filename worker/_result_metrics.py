"""The metric names a bert-trainer trial produces, the reports it plans, and their merging.

A single-task trial returns its task's metrics unprefixed and again as ``"<task>.<metric>"``; a
multi-task trial every task's prefixed metrics and :data:`AGGREGATED_COST_METRICS` unprefixed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from archsearch.spaces import DEV_LOSS, CustomTask, GlueTask, get_task
from archsearch.worker._cost import iter_cost_metric_names
from archsearch.worker._plan import TrainingPlan
from archsearch.worker._task_info import Task
from archsearch.worker._trainer import CandidateError, TrainContext

#: Cost metrics every result carries besides the task metrics (the latency pair is left out
#: when the recipe sets ``measure_latency: false``).
COST_METRICS = (*iter_cost_metric_names(), "train_seconds", "eval_samples")
#: Cost metrics a multi-task result also carries unprefixed: the largest of the tasks' values
#: (the models differ only in their classification heads), and ``train_seconds`` summed.
AGGREGATED_COST_METRICS = (*iter_cost_metric_names(), "train_seconds")


@dataclasses.dataclass(frozen=True)
class TaskReports:
    """What to report and keep while training one task of a (possibly multi-task) trial.

    Attributes:
        task: The task.
        report_metric: Unprefixed metric sent as intermediate values; None sends none.
        select_metric: Metric whose best dev value picks the kept checkpoint.
        step_offset: Added to reported steps, so that each task of a multi-task trial reports
            at its own steps (task ``k`` at ``k * max_steps + step``).
    """

    task: Task
    report_metric: str | None
    select_metric: str
    step_offset: int


def metric_names(
    task_ids: str | Task | Sequence[str | Task], measure_latency: bool = True
) -> tuple[str, ...]:
    """Every metric name a trial on ``task_ids`` returns (see ``BertTrainer.metric_names``)."""
    given = [task_ids] if isinstance(task_ids, (str, GlueTask, CustomTask)) else task_ids
    tasks = [get_task(t) if isinstance(t, str) else t for t in given]
    ids = [t.id for t in tasks]
    per_task = {t.id: task_metric_names(t, measure_latency) for t in tasks}
    prefixed = tuple(f"{t}.{name}" for t, names in per_task.items() for name in names)
    if len(ids) == 1:
        return (*per_task[ids[0]], *prefixed)
    costs = tuple(m for m in AGGREGATED_COST_METRICS if measure_latency or "latency" not in m)
    return (*prefixed, *costs)


def task_metric_names(task: Task, measure_latency: bool) -> tuple[str, ...]:
    """One task's unprefixed metric names: its metrics per dev split, the primary split's
    ``dev_loss``, then the costs."""
    costs = [m for m in COST_METRICS if measure_latency or "latency" not in m]
    return (*labelled_metrics(task), *costs)


def labelled_metrics(task: Task) -> tuple[str, ...]:
    """What ``hooks.evaluate_many`` measures of each configuration (a DyLoRA rank): every dev
    split's task metrics (the extra splits' suffixed) and the primary split's :data:`DEV_LOSS`."""
    extra = [
        f"{metric}_{split.removeprefix('dev_')}"
        for split in task.dev_splits[1:]
        for metric in task.metrics
    ]
    return (*task.metrics, *extra, DEV_LOSS)


def evaluation_metrics(task: Task) -> tuple[str, ...]:
    """What each evaluation of the training loop measures on ``task``'s primary dev split
    (so also while it trains): the task's metrics and :data:`DEV_LOSS`."""
    return (*task.metrics, DEV_LOSS)


def merge_metrics(per_task: dict[str, dict[str, float]]) -> dict[str, float]:
    """Prefixes every task's metrics; adds the unprefixed ones (see the module docstring)."""
    merged = {
        f"{t}.{name}": value for t, metrics in per_task.items() for name, value in metrics.items()
    }
    if len(per_task) == 1:
        return {**next(iter(per_task.values())), **merged}
    for name in AGGREGATED_COST_METRICS:
        values = [m[name] for m in per_task.values() if name in m]
        if values:
            merged[name] = float(sum(values) if name == "train_seconds" else max(values))
    return merged


def plan_reports(plan: TrainingPlan, context: TrainContext) -> list[TaskReports]:
    """Checks the study asks only for metrics the trial produces; plans each task's
    intermediate reports.

    The intermediate metric may be empty (each task's primary metric), a metric name every
    task measures (reported while training each task), or ``"<task>.<metric>"`` (reported
    only while training that task). Task ``k`` reports at steps ``k * max_steps + step``. A
    metric the trial produces only once trained (``params`` as the first objective) is not
    reported while training: the trial reports no intermediate values.

    Raises:
        CandidateError: An objective or the intermediate metric is not produced.
    """
    ids = [t.id for t in plan.tasks]
    where = ids[0] if len(ids) == 1 else "+".join(ids)
    produced = metric_names(list(plan.tasks), plan.measure_latency)
    unknown = [m for m in context.objective_metrics if m not in produced]
    if unknown:
        raise CandidateError(
            f"objective metric(s) {unknown} cannot be produced by the bert trainer on "
            f"{where}; it produces {list(produced)}"
        )
    wanted = context.intermediate_metric
    only_task, metric = None, wanted
    if "." in wanted and wanted.split(".", 1)[0] in ids:
        only_task, metric = wanted.split(".", 1)
    reports = []
    for index, task in enumerate(plan.tasks):
        reporting = only_task is None or only_task == task.id
        report_metric = (metric or task.primary_metric) if reporting else None
        measured = evaluation_metrics(task)
        if report_metric in produced and report_metric not in measured:
            report_metric = None  # a cost, known once trained: no learning curve to send
        if report_metric is not None and report_metric not in measured:
            raise CandidateError(
                f"intermediate metric {wanted!r} is not measured during training on "
                f"{task.id}; choose one of {list(measured)}"
            )
        reports.append(
            TaskReports(
                task=task,
                report_metric=report_metric,
                # the kept checkpoint is the best by a score (higher is better), not a loss
                select_metric=(
                    report_metric
                    if report_metric is not None and report_metric in task.metrics
                    else task.primary_metric
                ),
                step_offset=index * plan.max_steps,
            )
        )
    return reports
