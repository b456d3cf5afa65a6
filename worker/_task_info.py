"""A task as a trainer sees it: a GLUE task or a user's own, with its labels known."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, TypeAlias

from archsearch.spaces import CustomTask, GlueTask, get_task, validate_custom_task
from archsearch.spaces import result_metric_names as glue_result_metric_names
from archsearch.worker._custom_files import resolve_custom_task

#: A task as a trainer sees it.
Task: TypeAlias = GlueTask | CustomTask
#: Anything :func:`resolve_task` turns into a task: an id, a task, a custom task declaration.
TaskRef: TypeAlias = str | GlueTask | CustomTask | Mapping[str, Any]


class TaskInfo(NamedTuple):
    """What a trainer needs to know about a task to build its head and score it.

    Attributes:
        num_labels: Head width: 1 for regression, else the class count.
        is_regression: Whether labels are scores.
        metrics: Names :func:`~archsearch.worker._metrics.compute_metrics` returns for one dev
            split. A result's keys also include split-suffixed ones for the dev splits after
            the first (MNLI: ``accuracy_mismatched``); see :func:`result_metric_names`.
        primary_metric: The metric the task is ranked by.
    """

    num_labels: int
    is_regression: bool
    metrics: tuple[str, ...]
    primary_metric: str


def resolve_task(task: TaskRef) -> Task:
    """A GLUE task id, a task, or a custom task declaration, as a task with labels known.

    Raises:
        ValueError: Unknown GLUE task id.
        SpecError: A bad custom task declaration.
    """
    if isinstance(task, str):
        return get_task(task)
    if isinstance(task, GlueTask):
        return task
    if isinstance(task, CustomTask):
        return resolve_custom_task(task)
    if isinstance(task, Mapping):
        return resolve_custom_task(validate_custom_task(dict(task)))
    raise TypeError(f"expected a task id, GlueTask or CustomTask, got {type(task).__name__}")


def task_info(task: TaskRef) -> TaskInfo:
    """(num_labels, is_regression, metrics, primary_metric) of a GLUE or custom task.

    A custom task without declared labels reads its training file to infer them.
    """
    t = resolve_task(task)
    return TaskInfo(t.num_labels, t.is_regression, t.metrics, t.primary_metric)


def result_metric_names(task: TaskRef) -> tuple[str, ...]:
    """Every task metric a full dev evaluation reports, unprefixed (see
    :func:`archsearch.spaces.result_metric_names`); a custom task is resolved first."""
    return glue_result_metric_names(resolve_task(task))
