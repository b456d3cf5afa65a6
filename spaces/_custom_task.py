"""A user's own task: the ``data.custom_task`` declaration and its checks.

Shared knowledge: the server validates the declaration when a study is created, the worker reads
the files it names. Only the declaration lives here; reading the files (and inferring labels
from the training file when the declaration omits them) is the worker's job
(``archsearch.worker``'s custom source).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from archsearch.spaces._errors import SpecError
from archsearch.spaces._tasks import GLUE_TASKS, SPLIT_ALIASES

#: File formats a custom task's files may have, and the extensions that imply each.
CUSTOM_FORMATS = {"tsv": (".tsv",), "csv": (".csv",), "jsonl": (".jsonl", ".ndjson")}
#: Metrics a custom task may ask for, per task type.
CUSTOM_METRICS = {
    "classification": ("accuracy", "f1", "f1_macro", "mcc"),
    "regression": ("pearson", "spearman"),
}
_CUSTOM_KEYS = (
    "name",
    "train",
    "dev",
    "format",
    "text_fields",
    "label_field",
    "type",
    "labels",
    "metrics",
)
_CUSTOM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclasses.dataclass(frozen=True)
class CustomTask:
    """A user's own sentence(-pair) task, declared in the search spec as ``data.custom_task``.

    Built by :func:`validate_custom_task` from its JSON form (:meth:`to_dict`). It offers the
    attributes of :class:`GlueTask` that trainers read (``id``, ``labels``, ``is_regression``,
    ``num_labels``, ``metrics``, ``primary_metric``, ``dev_splits``), so code can take either.

    Attributes:
        name: Task name; also the ``<task>`` of its ``<task>.<metric>`` result keys. Letters,
            digits, ``_`` and ``-`` (no dots), and not a GLUE task id.
        train: Path of the training file.
        dev: Path of the evaluation file.
        text_fields: One column (single sentence) or two (a pair), in model input order.
        label_field: The column holding the label (class name) or score (regression).
        task_type: "classification" or "regression" (JSON key ``type``).
        labels: Class names in class-index order. None for regression, and for classification
            until inferred from the training file (``archsearch.worker.resolve_custom_task``):
            then the distinct labels sorted, numerically when all are integers.
        format: "tsv", "csv" or "jsonl" for both files; None: each file's extension decides.
        declared_metrics: Metrics asked for (JSON key ``metrics``); the first is primary.
    """

    name: str
    train: str
    dev: str
    text_fields: tuple[str, ...]
    label_field: str
    task_type: str = "classification"
    labels: tuple[str, ...] | None = None
    format: str | None = None
    declared_metrics: tuple[str, ...] | None = None

    @property
    def id(self) -> str:
        return self.name

    @property
    def is_regression(self) -> bool:
        return self.task_type == "regression"

    @property
    def num_labels(self) -> int:
        """Output width of the head: 1 for regression, else the class count."""
        if self.is_regression:
            return 1
        return len(self._known_labels())

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics scored: the declared ones, else accuracy with f1 (two classes) or
        f1_macro (more), or pearson and spearman for regression."""
        if self.declared_metrics:
            return self.declared_metrics
        if self.is_regression:
            return ("pearson", "spearman")
        return ("accuracy", "f1") if len(self._known_labels()) == 2 else ("accuracy", "f1_macro")

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def dev_splits(self) -> tuple[str, ...]:
        return ("dev",)

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "dev")

    def split_path(self, split: str) -> Path:
        """The file of ``split`` ("train", or "dev"/"validation")."""
        split = SPLIT_ALIASES.get(split, split)
        if split not in self.splits:
            raise ValueError(
                f"custom task {self.name!r} has no split {split!r}; known splits: train, dev"
            )
        return Path(self.train if split == "train" else self.dev).expanduser()

    def file_format(self, split: str) -> str:
        """The format of ``split``'s file: the declared one, else from its extension."""
        if self.format:
            return self.format
        fmt = format_from_extension(str(self.split_path(split)))
        assert fmt is not None  # validate_custom_task checked the extension
        return fmt

    def with_labels(self, labels: tuple[str, ...]) -> CustomTask:
        """This task with its class labels known (the worker infers them from the training
        file when the declaration omits them; see ``archsearch.worker.resolve_custom_task``).

        Args:
            labels: The distinct labels of the training file, sorted (:func:`sorted_labels`).

        Raises:
            ValueError: Fewer than two classes.
            SpecError: Declared metrics do not fit the classes (f1 needs two).
        """
        if not labels:
            raise ValueError(
                f"{self.split_path('train')}: no examples (a header alone, or blank lines); "
                "a training file needs rows"
            )
        if len(labels) < 2:
            raise ValueError(
                f"{self.split_path('train')}: column {self.label_field!r} has {len(labels)} "
                "distinct label(s); classification needs at least 2 (declare them in labels)"
            )
        if self.declared_metrics and "f1" in self.declared_metrics and len(labels) != 2:
            raise SpecError(
                "data.custom_task.metrics",
                f"f1 needs exactly 2 classes, the training file has {len(labels)}",
                "use f1_macro",
            )
        return dataclasses.replace(self, labels=labels)

    @property
    def labels_known(self) -> bool:
        """Whether :attr:`num_labels` and :attr:`metrics` can be answered without the files."""
        return self.is_regression or self.labels is not None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that :func:`validate_custom_task` reads."""
        out: dict[str, Any] = {
            "name": self.name,
            "train": self.train,
            "dev": self.dev,
            "text_fields": list(self.text_fields),
            "label_field": self.label_field,
            "type": self.task_type,
        }
        if self.format:
            out["format"] = self.format
        if self.labels is not None:
            out["labels"] = list(self.labels)
        if self.declared_metrics:
            out["metrics"] = list(self.declared_metrics)
        return out

    def _known_labels(self) -> tuple[str, ...]:
        if self.labels is None:
            raise ValueError(
                f"custom task {self.name!r}: labels are not declared and not inferred yet; "
                "call archsearch.worker.resolve_custom_task (task_info and the data sources do)"
            )
        return self.labels


def validate_custom_task(obj: Any, field: str = "data.custom_task") -> CustomTask:
    """Checks a custom task declaration and builds the :class:`CustomTask`.

    Only the declaration is checked: the files are read by the worker, which may be another
    machine, so their existence is checked when they are loaded.

    Args:
        obj: The JSON object, e.g. ``{"name": "reviews", "train": "/d/train.csv",
            "dev": "/d/dev.csv", "text_fields": ["review"], "label_field": "stars",
            "type": "classification", "labels": ["neg", "pos"]}``.
        field: Where ``obj`` sits in the spec, for error messages.

    Raises:
        SpecError: A bad field; the error names it (e.g. ``data.custom_task.label_field``).
    """
    if not isinstance(obj, dict):
        raise SpecError(field, f"must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(_CUSTOM_KEYS))
    if unknown:
        raise SpecError(
            f"{field}.{unknown[0]}", "unknown field", f"known: {', '.join(_CUSTOM_KEYS)}"
        )

    def text(key: str) -> str:
        value = obj.get(key)
        if not isinstance(value, str) or not value.strip():
            raise SpecError(f"{field}.{key}", f"must be a non-empty string, got {value!r}")
        return value

    name = text("name")
    if not _CUSTOM_NAME.fullmatch(name):
        raise SpecError(
            f"{field}.name",
            f"{name!r} is not a valid task name",
            "use 1-64 letters, digits, '_' or '-', starting with a letter or digit (no dots)",
        )
    if name.lower() in GLUE_TASKS:
        raise SpecError(
            f"{field}.name", f"{name!r} is a GLUE task id", "give your own task another name"
        )
    train, dev = text("train"), text("dev")

    fmt = obj.get("format")
    if fmt is not None and fmt not in CUSTOM_FORMATS:
        raise SpecError(f"{field}.format", f"unknown format {fmt!r}", "one of tsv, csv, jsonl")
    if fmt is None:
        for key, path in (("train", train), ("dev", dev)):
            if format_from_extension(path) is None:
                raise SpecError(
                    f"{field}.format",
                    f"cannot tell the format of {key} file {path!r} from its extension",
                    "set format to tsv, csv or jsonl, or name files *.tsv, *.csv, *.jsonl",
                )

    fields = obj.get("text_fields")
    if (
        not isinstance(fields, list)
        or not 1 <= len(fields) <= 2
        or not all(isinstance(f, str) and f for f in fields)
        or len(set(fields)) != len(fields)
    ):
        raise SpecError(
            f"{field}.text_fields",
            f"must be a list of 1 or 2 distinct column names, got {fields!r}",
            'e.g. ["review"] or ["premise", "hypothesis"]',
        )
    label_field = text("label_field")
    if label_field in fields:
        raise SpecError(f"{field}.label_field", f"{label_field!r} is also a text field")

    task_type = obj.get("type", "classification")
    if task_type not in CUSTOM_METRICS:
        raise SpecError(
            f"{field}.type", f"unknown type {task_type!r}", "one of classification, regression"
        )

    labels = obj.get("labels")
    if labels is not None:
        if task_type == "regression":
            raise SpecError(f"{field}.labels", "a regression task has no labels", "drop labels")
        if (
            not isinstance(labels, list)
            or len(labels) < 2
            or not all(is_label_value(v) for v in labels)
            or len({label_key(v) for v in labels}) != len(labels)
        ):
            raise SpecError(
                f"{field}.labels",
                f"must be a list of at least 2 distinct strings or integers, got {labels!r}",
                "or leave it out to take the sorted labels of the training file",
            )
        labels = tuple(label_key(v) for v in labels)

    metrics = obj.get("metrics")
    if metrics is not None:
        allowed = CUSTOM_METRICS[task_type]
        if (
            not isinstance(metrics, list)
            or not metrics
            or len(set(map(str, metrics))) != len(metrics)
        ):
            raise SpecError(f"{field}.metrics", "must be a non-empty list of distinct names")
        bad = [m for m in metrics if m not in allowed]
        if bad:
            raise SpecError(
                f"{field}.metrics",
                f"{bad[0]!r} is not a {task_type} metric",
                f"one of {', '.join(allowed)}",
            )
        if "f1" in metrics and labels is not None and len(labels) != 2:
            raise SpecError(
                f"{field}.metrics",
                f"f1 needs exactly 2 labels, {len(labels)} declared",
                "use f1_macro",
            )
        metrics = tuple(metrics)

    return CustomTask(
        name=name,
        train=train,
        dev=dev,
        text_fields=tuple(fields),
        label_field=label_field,
        task_type=task_type,
        labels=labels,
        format=fmt,
        declared_metrics=metrics,
    )


def format_from_extension(path: str) -> str | None:
    """The format a file name implies ("tsv", "csv", "jsonl"), or None."""
    suffix = Path(path).suffix.lower()
    for fmt, suffixes in CUSTOM_FORMATS.items():
        if suffix in suffixes:
            return fmt
    return None


def is_label_value(value: Any) -> bool:
    """Whether ``value`` can name a class: a string or an integer (JSON 1.0 counts)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, (str, int))


def label_key(value: Any) -> str:
    """A class label as a string: JSON 1, 1.0 and "1" all name the class "1"."""
    if isinstance(value, float):
        return str(int(value))
    return str(value).strip()


def sorted_labels(labels: set[str]) -> tuple[str, ...]:
    """Sorted, numerically when every label is an integer ("2" before "10")."""
    try:
        return tuple(sorted(labels, key=int))
    except ValueError:
        return tuple(sorted(labels))
