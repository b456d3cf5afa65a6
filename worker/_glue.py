"""GLUE data access: the task registry, finding the data folder, reading splits, subsetting.

Reads the standard ``glue_data`` layout that the classic ``download_glue_data.py`` writes
(``<glue_dir>/<TASK>/{train,dev,test}.tsv``) from local disk only. Loading GLUE from the
Hugging Face hub by dataset name is deliberately left out of this module: workers in tests and
the demo must never touch the network (DESIGN.md principle 7), and a hub loader would be a
separate, explicitly online code path.

Every file is read tab-separated with quoting disabled (``csv.QUOTE_NONE``): stray ``"``
characters are part of the text, and honouring them as quotes would silently merge rows.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

#: Environment variable naming the ``glue_data`` folder when ``--glue-dir`` is not given.
GLUE_DIR_ENV = "ARCHSEARCH_GLUE_DIR"

# Some GLUE sentences (QNLI/MNLI parses) exceed csv's default 128 KiB field limit.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

_T = TypeVar("_T")


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
        tolerate_short_rows: Skip rows with too few columns instead of failing. True only
            where the official release itself has such rows (QQP's train file), so that
            corruption of any other file is reported rather than hidden.
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


@dataclasses.dataclass(frozen=True)
class GlueExample:
    """One labelled example.

    Attributes:
        texts: The sentence, or the sentence pair, in the task's column order.
        label: Class index (classification) or score (STS-B regression).
    """

    texts: tuple[str, ...]
    label: int | float


def get_task(task_id: str) -> GlueTask:
    """Returns the registry entry for ``task_id``.

    Raises:
        ValueError: Unknown task id; the message lists the known ones.
    """
    try:
        return GLUE_TASKS[task_id]
    except KeyError:
        raise ValueError(
            f"unknown GLUE task {task_id!r}; known tasks: {', '.join(GLUE_TASKS)}"
        ) from None


def default_glue_dirs() -> list[tuple[Path, str]]:
    """The fallback locations of ``glue_data``, in search order, each with a description."""
    repo_root = Path(__file__).resolve().parents[1]
    relative = Path("..") / "shared" / "data" / "glue"
    return [
        (repo_root / relative, "the shared data folder next to the archsearch checkout"),
        (Path.cwd() / relative, "../shared/data/glue relative to the working directory"),
    ]


def resolve_glue_dir(glue_dir: str | None) -> tuple[Path, str]:
    """Finds the local ``glue_data`` folder.

    Looks at, in order: ``glue_dir``; ``$ARCHSEARCH_GLUE_DIR``; ``../shared/data/glue`` next to
    the repository root; ``../shared/data/glue`` relative to the working directory. An explicit
    argument or environment variable that names a missing folder is an error rather than a
    reason to fall back: silently training on other data than the user named would be worse.

    Args:
        glue_dir: Folder given explicitly (``--glue-dir``), or None.

    Returns:
        The resolved folder and a sentence saying which source it came from.

    Raises:
        FileNotFoundError: The named folder does not exist, or no fallback exists; the message
            lists every place looked at and how to point archsearch at the data.
    """
    fix = (
        f"pass --glue-dir /path/to/glue_data or set {GLUE_DIR_ENV}=/path/to/glue_data "
        "(a folder in download_glue_data.py layout: <TASK>/train.tsv, <TASK>/dev.tsv)"
    )
    named = [(glue_dir, "--glue-dir"), (os.environ.get(GLUE_DIR_ENV), f"${GLUE_DIR_ENV}")]
    for value, source in named:
        if value:
            path = Path(value).expanduser().resolve()
            if not path.is_dir():
                raise FileNotFoundError(f"GLUE folder {path} (from {source}) does not exist; {fix}")
            return path, f"using GLUE data from {path} (given by {source})"
    looked = []
    for path, description in default_glue_dirs():
        path = path.resolve()
        if path.is_dir():
            return path, f"using GLUE data from {path} ({description})"
        looked.append(f"{path} ({description})")
    raise FileNotFoundError(
        "no GLUE data folder found: --glue-dir not given, "
        f"${GLUE_DIR_ENV} not set, and none of these exist: {'; '.join(looked)}. To fix: {fix}"
    )


def split_path(task_id: str, split: str, glue_dir: str | Path) -> Path:
    """Path of ``split`` of ``task_id`` under ``glue_dir`` (whether or not it exists)."""
    task = get_task(task_id)
    return Path(glue_dir) / task.folder / task.split_file(split)


def load_split(task_id: str, split: str, glue_dir: str | Path) -> list[GlueExample]:
    """Reads one labelled split of a GLUE task.

    Results are cached per (task, split, file) in-process, so repeated trials on a worker
    read each file once. Callers must not mutate the returned list.

    Args:
        task_id: Canonical task id ("sst2", ...).
        split: "train", "dev", or a named dev split ("dev_matched", "dev_mismatched").
        glue_dir: The ``glue_data`` folder.

    Returns:
        The examples in file order.

    Raises:
        ValueError: Unknown task or split, or a malformed row (too few columns where the
            official files have none, an unknown label); the message names file and line.
        FileNotFoundError: The split's file is missing; the message names the exact path.
    """
    path = split_path(task_id, split, glue_dir).resolve()
    if not path.is_file():
        folder = path.parent
        why = "" if folder.is_dir() else f" (the folder {folder} does not exist either)"
        raise FileNotFoundError(
            f"GLUE {task_id} {split} split not found: looked for {path}{why}. Point --glue-dir or "
            f"{GLUE_DIR_ENV} at a glue_data folder that has {folder.name}/{path.name}"
        )
    return _read_split_cached(task_id, str(path))


@functools.lru_cache(maxsize=32)
def _read_split_cached(task_id: str, path: str) -> list[GlueExample]:
    return read_tsv(GLUE_TASKS[task_id], Path(path))


def read_tsv(task: GlueTask, path: Path) -> list[GlueExample]:
    """Parses one labelled GLUE TSV file (no caching); see :func:`load_split`."""
    # utf-8-sig strips MRPC's byte-order mark, which would otherwise glue itself onto the
    # first column name ("\ufeffQuality") and hide the label column.
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = list(next(rows, [])) if task.has_header else list(task.column_names)
        first_line = 2 if task.has_header else 1
        wanted = [*task.text_columns, task.label_column]
        missing = [c for c in wanted if c not in header]
        if missing:
            raise ValueError(f"{path}: header {header} lacks column(s) {missing}")
        text_idx = [header.index(c) for c in task.text_columns]
        label_idx = header.index(task.label_column)
        needed = max(*text_idx, label_idx) + 1
        examples = []
        for line, row in enumerate(rows, start=first_line):
            if len(row) < needed:
                if task.tolerate_short_rows:
                    continue
                raise ValueError(f"{path}:{line}: {len(row)} columns, expected at least {needed}")
            texts = tuple(row[i] for i in text_idx)
            examples.append(GlueExample(texts, _parse_label(task, row[label_idx], path, line)))
    return examples


def _parse_label(task: GlueTask, raw: str, path: Path, line: int) -> int | float:
    if task.labels is None:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{path}:{line}: score {raw!r} is not a number") from None
    try:
        return task.labels.index(raw)
    except ValueError:
        raise ValueError(f"{path}:{line}: label {raw!r} not one of {list(task.labels)}") from None


def take_subset(items: Sequence[_T], size: int, seed: int) -> list[_T]:
    """The first ``size`` items after a shuffle seeded by ``seed``: reproducible slices.

    Args:
        items: The whole split.
        size: How many to keep; 0 (or at least ``len(items)``) keeps the whole split in its
            original order, so "the whole split" means the same thing for every seed.
        seed: Shuffle seed (the recipe's seed).

    Returns:
        A new list.
    """
    if size < 0:
        raise ValueError(f"subset size must be >= 0, got {size}")
    if size == 0 or size >= len(items):
        return list(items)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in order[:size]]
