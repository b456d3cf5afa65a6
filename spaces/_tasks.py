"""The GLUE task catalogue: ids, file layout, labels, dev splits and metrics of each task.

Shared knowledge: the server checks task names and reads metric names here, the worker reads
and scores the data. Pure Python; reading the files is the worker's job
(``archsearch.worker``'s data sources).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """How one GLUE task is laid out on disk and scored.

    Attributes:
        id: Canonical task id ("cola", "sst2", ...), as used in ``Candidate.data["task"]``.
        folder: Folder name inside ``glue_data`` ("CoLA", "SST-2", ...).
        text_columns: Column(s) holding the text: one for single-sentence tasks, two for pairs.
        label_column: Column holding the gold label (or score, for STS-B).
        labels: The label strings in class-index order; None for regression (STS-B).
        dev_files: Dev file name(s); the first is the primary dev split. MNLI has two.
        has_header: Whether the first line of train/dev files is a header.
        column_names: Column names to use when the file has no header (CoLA).
        metrics: Names of the metrics ``compute_metrics`` returns for this task.
        primary_metric: The metric GLUE ranks this task by.
        tolerate_short_rows: Skip rows with too few columns instead of failing (with a
            warning naming the lines), in every split of the task. True only where the
            official release itself has such rows (QQP's train file), so that corruption of
            any other task's file is reported rather than hidden.
    """

    id: str
    folder: str
    text_columns: tuple[str, ...]
    label_column: str
    labels: tuple[str, ...] | None
    dev_files: tuple[str, ...]
    has_header: bool
    metrics: tuple[str, ...]
    primary_metric: str
    column_names: tuple[str, ...] = ()
    tolerate_short_rows: bool = False

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        """Output width of a classifier head: 1 for regression, else the class count."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def dev_splits(self) -> tuple[str, ...]:
        """Names of the dev splits: "dev" for most tasks, one per file for MNLI."""
        return tuple(name.removesuffix(".tsv") for name in self.dev_files)

    @property
    def splits(self) -> tuple[str, ...]:
        """Every split name ``load_split`` accepts for this task."""
        return ("train", "dev", *(s for s in self.dev_splits if s != "dev"))

    def split_file(self, split: str) -> str:
        """File name of ``split``; "dev" means the primary dev file.

        Raises:
            ValueError: ``split`` is not one of :attr:`splits`.
        """
        if split == "train":
            return "train.tsv"
        if split == "dev":
            return self.dev_files[0]
        if split in self.dev_splits:
            return f"{split}.tsv"
        raise ValueError(
            f"GLUE task {self.id!r} has no split {split!r}; known splits: {', '.join(self.splits)}"
            " (test files carry no labels and are not read)"
        )


_PAIR = ("sentence1", "sentence2")
_BINARY = ("0", "1")
_NLI3 = ("entailment", "neutral", "contradiction")
_NLI2 = ("entailment", "not_entailment")

#: All nine GLUE tasks by canonical id. Label orders follow the Hugging Face ``glue`` dataset.
GLUE_TASKS: dict[str, GlueTask] = {
    t.id: t
    for t in (
        GlueTask(
            id="cola",
            folder="CoLA",
            text_columns=("sentence",),
            label_column="label",
            labels=_BINARY,
            dev_files=("dev.tsv",),
            has_header=False,
            column_names=("source", "label", "original_judgement", "sentence"),
            metrics=("mcc",),
            primary_metric="mcc",
        ),
        GlueTask(
            id="sst2",
            folder="SST-2",
            text_columns=("sentence",),
            label_column="label",
            labels=_BINARY,
            dev_files=("dev.tsv",),
            has_header=True,
            metrics=("accuracy",),
            primary_metric="accuracy",
        ),
        GlueTask(
            id="mrpc",
            folder="MRPC",
            text_columns=("#1 String", "#2 String"),
            label_column="Quality",
            labels=_BINARY,
            dev_files=("dev.tsv",),
            has_header=True,
            metrics=("f1", "accuracy"),
            primary_metric="f1",
        ),
        GlueTask(
            id="stsb",
            folder="STS-B",
            text_columns=_PAIR,
            label_column="score",
            labels=None,
            dev_files=("dev.tsv",),
            has_header=True,
            metrics=("pearson", "spearman"),
            primary_metric="pearson",
        ),
        GlueTask(
            id="qqp",
            folder="QQP",
            text_columns=("question1", "question2"),
            label_column="is_duplicate",
            labels=_BINARY,
            dev_files=("dev.tsv",),
            has_header=True,
            metrics=("f1", "accuracy"),
            primary_metric="f1",
            tolerate_short_rows=True,
        ),
        GlueTask(
            id="mnli",
            folder="MNLI",
            text_columns=_PAIR,
            label_column="gold_label",
            labels=_NLI3,
            dev_files=("dev_matched.tsv", "dev_mismatched.tsv"),
            has_header=True,
            metrics=("accuracy",),
            primary_metric="accuracy",
        ),
        GlueTask(
            id="qnli",
            folder="QNLI",
            text_columns=("question", "sentence"),
            label_column="label",
            labels=_NLI2,
            dev_files=("dev.tsv",),
            has_header=True,
            metrics=("accuracy",),
            primary_metric="accuracy",
        ),
        GlueTask(
            id="rte",
            folder="RTE",
            text_columns=_PAIR,
            label_column="label",
            labels=_NLI2,
            dev_files=("dev.tsv",),
            has_header=True,
            metrics=("accuracy",),
            primary_metric="accuracy",
        ),
        GlueTask(
            id="wnli",
            folder="WNLI",
            text_columns=_PAIR,
            label_column="label",
            labels=_BINARY,
            dev_files=("dev.tsv",),
            has_header=True,
            metrics=("accuracy",),
            primary_metric="accuracy",
        ),
    )
}


#: The nine GLUE task ids, in the registry's order.
GLUE_TASK_IDS: tuple[str, ...] = tuple(GLUE_TASKS)

#: Examples in each GLUE task's training split as released (``glue_data``, and the hub's
#: ``nyu-mll/glue``): what a selection of more than that cannot be made from.
GLUE_TRAIN_EXAMPLES: dict[str, int] = {
    "cola": 8_551, "sst2": 67_349, "mrpc": 3_668, "stsb": 5_749, "qqp": 363_846,
    "mnli": 392_702, "qnli": 104_743, "rte": 2_490, "wnli": 635,
}  # fmt: skip

#: Hub split names accepted as aliases of ours.
SPLIT_ALIASES = {
    "validation": "dev",
    "validation_matched": "dev_matched",
    "validation_mismatched": "dev_mismatched",
}


def get_task(task_id: str) -> GlueTask:
    """Returns the registry entry for ``task_id``.

    Raises:
        ValueError: Unknown task id; the message lists the known ones.
    """
    try:
        return GLUE_TASKS[task_id]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown GLUE task {task_id!r}; {folder_hint(task_id)}known tasks: "
            f"{', '.join(GLUE_TASKS)}"
        ) from None


def folder_hint(name: object) -> str:
    """ "did you mean 'sst2' ...? " when ``name`` is a glue_data folder's name (SST-2, CoLA,
    STS-B: the likeliest slip for a task id); "" otherwise."""
    meant = next((t.id for t in GLUE_TASKS.values() if str(name).lower() == t.folder.lower()), None)
    return f"did you mean {meant!r} (the id of the {name} folder)? " if meant else ""


class _HasMetrics(Protocol):
    @property
    def metrics(self) -> tuple[str, ...]: ...

    @property
    def dev_splits(self) -> tuple[str, ...]: ...


#: The mean loss of the gold dev labels (cross-entropy; squared error for regression) that
#: every evaluation of a training loop reports beside the task's metrics.
DEV_LOSS = "dev_loss"


def result_metric_names(task: _HasMetrics) -> tuple[str, ...]:
    """Every task metric a full dev evaluation of ``task`` reports, unprefixed.

    The primary dev split's metrics are unsuffixed; a later dev split's carry its suffix: MNLI
    gives ``("accuracy", "accuracy_mismatched")``. ``task`` is a :class:`GlueTask` or a
    resolved custom task (anything with ``metrics`` and ``dev_splits``).
    """
    extra = [
        f"{metric}_{split.removeprefix('dev_')}"
        for split in task.dev_splits[1:]
        for metric in task.metrics
    ]
    return (*task.metrics, *extra)


def canonical_split(task: GlueTask, split: str) -> str:
    """Our name of ``split`` ("train", "dev", "dev_matched", ...); hub names are accepted.

    Raises:
        ValueError: ``task`` has no such split.
    """
    name = SPLIT_ALIASES.get(split, split)
    if name not in task.splits:
        task.split_file(split)  # raises ValueError naming the known splits
    return name
