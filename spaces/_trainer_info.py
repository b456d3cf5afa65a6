"""What a trainer is and what it reports: the metadata a worker sends when it registers.

Torch-free and shared by both sides. A trainer declares its :class:`TrainerInfo` where it lives
(``Trainer.info`` on the worker side, published as an ``archsearch.trainers`` entry point); a
worker sends it on ``RegisterWorker``; the server validates a study against it (the trainer
exists, trains the study's space, reports every objective metric) without importing the trainer.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from archsearch.spaces._candidate import data_tasks
from archsearch.spaces._custom_task import validate_custom_task
from archsearch.spaces._errors import SpecError
from archsearch.spaces._table import TABLE_METRIC
from archsearch.spaces._tasks import DEV_LOSS, get_task, result_metric_names

#: A trainer's name: what ``archsearch worker --trainer`` and a spec's ``trainer`` say.
TRAINER_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")
#: A metric a trainer declares (no ``.``: that separates a task prefix, ``sst2.accuracy``).
DECLARED_METRIC_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}\Z")
_SPACE_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}\Z")
_OPTION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}\Z")
#: How a trainer names each task's metrics (:attr:`TrainerInfo.task_metrics`).
TASK_METRIC_RULES = {
    "": "no per-task metrics",
    "glue": "each task's GLUE metrics (result_metric_names), a custom task's declared ones, "
    "then dev_loss (the mean loss of the gold dev labels)",
    "table": "one per task: the column a FlexiBERT table records (TABLE_METRIC)",
}
MAX_DESCRIPTION = 200
MAX_NAMES = 64
MAX_TEXT = 500


@dataclasses.dataclass(frozen=True)
class TrainerInfo:
    """A trainer's name, what it trains and the metrics it reports.

    What a trial reports, for the tasks ``T`` of its spec (:meth:`produced_metrics`):

    * ``multi_task`` False: the task metrics of ``T[0]`` (the one task it trains), then
      ``cost_metrics``, then ``metrics``.
    * ``multi_task`` True, one task: its task metrics, ``cost_metrics``, ``metrics``, then
      every one of the task metrics and cost metrics again as ``"<task>.<metric>"``.
    * ``multi_task`` True, several tasks: every task's ``"<task>.<metric>"`` (task and cost
      metrics), then ``multi_task_metrics`` and ``metrics`` unprefixed.

    Attributes:
        name: The trainer's name (``bert``, ``table``): 1-32 of ``[a-z0-9_-]``.
        description: One line for people (at most 200 characters).
        spaces: Spaces whose candidates it trains; empty: any space.
        task_metrics: How it names each task's metrics: a key of :data:`TASK_METRIC_RULES`.
        metrics: Metrics it reports once per trial, unprefixed (the table's ``score``).
        cost_metrics: Metrics it measures for every task (``params``, ``flops``, ...).
        multi_task_metrics: The cost metrics a multi-task trial also reports unprefixed.
        multi_task: Whether one trial trains several tasks (``data.tasks``); the GLUE
            averages (``glue_avg``) need it.
        required_space_options: Space options a study on it must set, each with why and how.
        labelled_metrics: Whether it also reports metrics as ``"<metric>@<label>"``, one per
            configuration of one set of weights it scores (the training loop's
            ``evaluate_many``: DyLoRA ranks ``accuracy@r2``, supernet students); the labels
            depend on the candidate, so they are not listed (see :meth:`declares`).
        data_fields: The fields of a candidate's ``data`` it reads; empty: every one. The
            server refuses a spec that sets, or searches in ``data_space``, a field the
            trainer does not read (every trial would train, or look up, the same thing).

    Raises:
        SpecError: A field is malformed; ``field`` names it (``trainer_info.metrics``).
    """

    name: str
    description: str = ""
    spaces: tuple[str, ...] = ()
    task_metrics: str = ""
    metrics: tuple[str, ...] = ()
    cost_metrics: tuple[str, ...] = ()
    multi_task_metrics: tuple[str, ...] = ()
    multi_task: bool = False
    required_space_options: Mapping[str, str] = dataclasses.field(default_factory=dict)
    labelled_metrics: bool = False
    data_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for key in ("spaces", "metrics", "cost_metrics", "multi_task_metrics", "data_fields"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        object.__setattr__(self, "required_space_options", dict(self.required_space_options))
        self._check()

    def _check(self) -> None:
        f = "trainer_info"
        if not isinstance(self.name, str) or not TRAINER_NAME_RE.match(self.name):
            raise SpecError(
                f"{f}.name",
                f"invalid trainer name {str(self.name)[:40]!r}",
                "1-32 of [a-z0-9_-], starting with a letter",
            )
        f = f"trainer_info[{self.name}]"
        if not isinstance(self.description, str) or len(self.description) > MAX_DESCRIPTION:
            raise SpecError(
                f"{f}.description", f"must be one line of at most {MAX_DESCRIPTION} characters"
            )
        if "\n" in self.description:
            raise SpecError(f"{f}.description", "must be one line")
        if self.task_metrics not in TASK_METRIC_RULES:
            raise SpecError(
                f"{f}.task_metrics",
                f"unknown rule {str(self.task_metrics)[:40]!r}",
                f"one of {', '.join(repr(k) for k in TASK_METRIC_RULES)}",
            )
        _names(f"{f}.spaces", self.spaces, _SPACE_NAME_RE)
        for key in ("metrics", "cost_metrics", "multi_task_metrics"):
            _names(f"{f}.{key}", getattr(self, key), DECLARED_METRIC_RE)
        extra = sorted(set(self.multi_task_metrics) - set(self.cost_metrics))
        if extra:
            raise SpecError(
                f"{f}.multi_task_metrics",
                f"{extra[0]!r} is not a cost metric",
                "list only names of cost_metrics",
            )
        if self.multi_task_metrics and not self.multi_task:
            raise SpecError(f"{f}.multi_task_metrics", "given, but multi_task is false")
        both = sorted(set(self.metrics) & set(self.cost_metrics))
        if both:
            raise SpecError(f"{f}.metrics", f"{both[0]!r} is also a cost metric", "list it once")
        if not (self.task_metrics or self.metrics or self.cost_metrics):
            raise SpecError(
                f"{f}.metrics",
                "the trainer reports no metric",
                "declare task_metrics, metrics or cost_metrics",
            )
        if not isinstance(self.multi_task, bool):
            raise SpecError(f"{f}.multi_task", "must be a bool")
        if not isinstance(self.labelled_metrics, bool):
            raise SpecError(f"{f}.labelled_metrics", "must be a bool")
        _names(f"{f}.data_fields", self.data_fields, _OPTION_RE)
        options = self.required_space_options
        _names(f"{f}.required_space_options", tuple(options), _OPTION_RE)
        for key, why in options.items():
            if not isinstance(why, str) or not 0 < len(why) <= MAX_TEXT:
                raise SpecError(
                    f"{f}.required_space_options.{key}",
                    f"must say why and how in 1-{MAX_TEXT} characters",
                )

    def produced_metrics(self, data: Mapping[str, Any]) -> tuple[str, ...]:
        """Every metric a trial on the spec's (validated) ``data`` reports, in the order the
        class docstring gives."""
        tasks = data_tasks(dict(data))
        if not self.multi_task:
            return (*self._task_metrics(tasks[0], data), *self.cost_metrics, *self.metrics)
        per_task = {t: (*self._task_metrics(t, data), *self.cost_metrics) for t in tasks}
        prefixed = tuple(f"{t}.{m}" for t, names in per_task.items() for m in names)
        if len(tasks) == 1:
            return (*per_task[tasks[0]], *self.metrics, *prefixed)
        return (*prefixed, *self.multi_task_metrics, *self.metrics)

    def curve_metrics(self, data: Mapping[str, Any]) -> tuple[str, ...]:
        """The metrics a trial on ``data`` measures while it trains, so may report as
        intermediate values (what a pruner reads): each task's metrics, unprefixed and as
        ``"<task>.<metric>"``; not its costs, known once trained."""
        tasks = data_tasks(dict(data))
        per_task = {t: self._task_metrics(t, data) for t in tasks}
        prefixed = tuple(f"{t}.{m}" for t, names in per_task.items() for m in names)
        return (*(m for names in per_task.values() for m in names), *prefixed)

    def declares(self, metric: str, data: Mapping[str, Any]) -> bool:
        """Whether a trial on ``data`` may report ``metric``: one of :meth:`produced_metrics`
        or, with ``labelled_metrics``, one of them followed by ``@<label>``."""
        produced = self.produced_metrics(data)
        if metric in produced:
            return True
        base, at, label = metric.partition("@")
        return self.labelled_metrics and bool(at and label) and base in produced

    def _task_metrics(self, task: str, data: Mapping[str, Any]) -> tuple[str, ...]:
        """The metrics a trial measures on ``task`` at each evaluation (so also while it
        trains, unlike its cost metrics)."""
        if self.task_metrics == "table":
            return (TABLE_METRIC.get(task, "accuracy"),)
        if self.task_metrics != "glue":
            return ()
        return (*self._glue_metrics(task, data), DEV_LOSS)

    def _glue_metrics(self, task: str, data: Mapping[str, Any]) -> tuple[str, ...]:
        if "custom_task" in data:
            custom = validate_custom_task(data["custom_task"])
            if task == custom.name:
                if custom.declared_metrics:
                    return tuple(custom.declared_metrics)
                if custom.is_regression:
                    return ("pearson", "spearman")
                return ("accuracy", "f1", "f1_macro")  # f1 with two classes, f1_macro with more
        return tuple(result_metric_names(get_task(task)))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back."""
        d = dataclasses.asdict(self)
        for key in ("spaces", "metrics", "cost_metrics", "multi_task_metrics"):
            d[key] = list(d[key])
        d["required_space_options"] = dict(self.required_space_options)
        return d

    @classmethod
    def from_dict(cls, obj: Any) -> TrainerInfo:
        """Reads :meth:`to_dict`'s output.

        Raises:
            SpecError: Not such a dict, or a field is malformed.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(obj, dict) or not set(obj) <= known:
            raise SpecError(
                "trainer_info",
                "must be an object with the fields of TrainerInfo",
                f"known: {', '.join(sorted(known))}",
            )
        for key in ("spaces", "metrics", "cost_metrics", "multi_task_metrics"):
            if not isinstance(obj.get(key, []), list | tuple):
                raise SpecError(f"trainer_info.{key}", "must be a list of names")
        if not isinstance(obj.get("required_space_options", {}), dict):
            raise SpecError("trainer_info.required_space_options", "must be an object")
        return cls(**obj)


def _names(field: str, names: tuple[str, ...], pattern: re.Pattern[str]) -> None:
    if len(names) > MAX_NAMES:
        raise SpecError(field, f"{len(names)} names; at most {MAX_NAMES}")
    for n in names:
        if not isinstance(n, str) or not pattern.match(n):
            raise SpecError(
                field, f"invalid name {str(n)[:40]!r}", f"names match {pattern.pattern}"
            )
    if len(set(names)) != len(names):
        raise SpecError(field, f"a name is listed twice: {list(names)}")
