"""Task data: the GLUE registry, the three data sources, user tasks, and tokenised-data caching.

A task's examples can come from three places, all mapped to the same :class:`GlueExample` list:

1. **A local ``glue_data`` folder** in the layout the classic ``download_glue_data.py`` writes
   (``<glue_dir>/<TASK>/{train,dev,test}.tsv``). Tests and the demo use only this source
   (DESIGN.md principle 7). Every file is read tab-separated with quoting disabled
   (``csv.QUOTE_NONE``): stray ``"`` characters are part of the text, and honouring them as
   quotes would silently merge rows.
2. **A hub dataset** (default ``nyu-mll/glue``) through ``datasets.load_dataset``: an explicitly
   online path, used when the caller asks for it (``source="hub"``) or, with ``source="auto"``,
   when no local folder exists and ``HF_HUB_OFFLINE`` is not set.
3. **A user's own task** (:class:`CustomTask`), declared in the search spec as
   ``data.custom_task`` and read from the user's TSV, CSV or JSONL files.

:func:`load_examples` and :func:`task_info` are the single entry points that treat all three
alike; :func:`encode_examples` tokenises examples into an Arrow file keyed by a fingerprint of
the data, the tokenizer and the sequence length, so other worker processes re-use it.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import math
import os
import random
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias, TypeVar

import numpy as np

from archsearch.spaces import SpecError

if TYPE_CHECKING:
    import datasets

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


# --------------------------------------------------------------------------------------------
# Source 2: the Hugging Face hub.

#: The hub dataset GLUE is read from when the hub source is used.
DEFAULT_HUB_DATASET = "nyu-mll/glue"

#: Text columns of each config of the hub's ``glue`` dataset, in the registry's text order.
#: Its integer labels use the registry's label order (see :data:`GLUE_TASKS`), so they are
#: class indices as they stand.
HUB_TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "cola": ("sentence",),
    "sst2": ("sentence",),
    "mrpc": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}

#: The values of ``source`` that :func:`load_examples` accepts.
SOURCES = ("auto", "dir", "hub")

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}
# Hub split names accepted as aliases of ours.
_SPLIT_ALIASES = {
    "validation": "dev",
    "validation_matched": "dev_matched",
    "validation_mismatched": "dev_mismatched",
}
_GLUE_DIR_FIX = (
    f"pass --glue-dir /path/to/glue_data (or set {GLUE_DIR_ENV}) to read a local glue_data folder"
)


class HubUnavailableError(ConnectionError):
    """The hub could not be reached (offline mode or a network failure).

    The message says what was tried and how to use local data instead.
    """


def hub_offline() -> str | None:
    """The ``NAME=value`` of the variable that puts the hub offline, or None when online."""
    for name in _OFFLINE_VARS:
        value = os.environ.get(name, "")
        if value.strip().upper() in _TRUE:
            return f"{name}={value}"
    return None


def canonical_split(task: GlueTask, split: str) -> str:
    """Our name of ``split`` ("train", "dev", "dev_matched", ...); hub names are accepted.

    Raises:
        ValueError: ``task`` has no such split.
    """
    name = _SPLIT_ALIASES.get(split, split)
    if name not in task.splits:
        task.split_file(split)  # raises ValueError naming the known splits
    return name


def hub_split_name(task: GlueTask, split: str) -> str:
    """The hub's name of ``split``: train, validation, validation_matched/_mismatched (MNLI)."""
    name = canonical_split(task, split)
    if name == "train":
        return "train"
    if name == "dev":
        name = task.dev_splits[0]
    return "validation" + name.removeprefix("dev")


def load_hub_split(
    task_id: str, split: str, dataset: str = DEFAULT_HUB_DATASET
) -> list[GlueExample]:
    """Reads one labelled split of a GLUE task from a hub dataset with ``datasets``.

    This is the online path: ``datasets.load_dataset(dataset, task_id, split=...)``. In offline
    mode ``datasets`` still answers from its own cache when the split was downloaded before.

    Args:
        task_id: Canonical task id; also the hub config name.
        split: "train", "dev", "dev_matched", "dev_mismatched", or the hub's names
            ("validation", "validation_matched", "validation_mismatched").
        dataset: Hub dataset name with GLUE's configs and columns.

    Returns:
        The examples in the hub's order.

    Raises:
        HubUnavailableError: Offline mode without a cached copy, or a network failure; the
            message names the call that was tried and says to pass ``--glue-dir``.
        ValueError: Unknown task or split, a missing column, or an unlabelled or bad label.
    """
    task = get_task(task_id)
    hub_split = hub_split_name(task, split)
    tried = f"datasets.load_dataset({dataset!r}, {task.id!r}, split={hub_split!r})"
    import datasets

    try:
        loaded = datasets.load_dataset(dataset, task.id, split=hub_split)
    except _network_errors() as e:
        offline = hub_offline()
        why = f" ({offline} is set and no cached copy exists)" if offline else ""
        raise HubUnavailableError(
            f"could not load GLUE {task.id} {split} from the hub: {tried} failed{why}: "
            f"{type(e).__name__}: {e}. To fix: {_GLUE_DIR_FIX}"
        ) from e
    if isinstance(loaded, Mapping):  # a DatasetDict: pick the split
        if hub_split not in loaded:
            raise ValueError(f"{tried} has no split {hub_split!r}; it has {sorted(loaded)}")
        loaded = loaded[hub_split]
    return hub_rows_to_examples(task, loaded, where=f"{dataset}/{task.id}/{hub_split}")


def hub_rows_to_examples(task: GlueTask, rows: datasets.Dataset, where: str) -> list[GlueExample]:
    """Maps a hub GLUE split (columns :data:`HUB_TEXT_COLUMNS` and ``label``) to examples.

    Raises:
        ValueError: A column is missing, or a label is -1 (an unlabelled test row), out of
            range, or not a number; the message names ``where`` and the row.
    """
    columns = [*HUB_TEXT_COLUMNS[task.id], "label"]
    missing = [c for c in columns if c not in rows.column_names]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; it has {rows.column_names}")
    texts = [list(rows[c]) for c in columns[:-1]]
    examples = []
    for row, raw in enumerate(rows["label"]):
        if task.labels is None:
            label: int | float = _finite_score(raw, f"{where} row {row}")
        else:
            if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
                raise ValueError(
                    f"{where} row {row}: label {raw!r} is not a class index"
                    + (" (an unlabelled test row)" if raw == -1 else "")
                )
            if raw >= task.num_labels:
                raise ValueError(
                    f"{where} row {row}: label {raw} out of range for {task.num_labels} classes"
                )
            label = raw
        examples.append(GlueExample(tuple(str(col[row]) for col in texts), label))
    return examples


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the hub could not be reached"."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        import httpx

        errors.append(httpx.TransportError)
    except ImportError:  # pragma: no cover - huggingface_hub depends on httpx
        pass
    try:
        import requests

        errors += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def _finite_score(raw: Any, where: str) -> float:
    if isinstance(raw, bool):
        raise ValueError(f"{where}: score {raw!r} is not a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: score {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: score {raw!r} is not finite")
    return value


# --------------------------------------------------------------------------------------------
# Source 3: a user's own task.

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
            until inferred from the training file (:meth:`resolve`): then the distinct labels
            sorted, numerically when all are integers.
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
        split = _SPLIT_ALIASES.get(split, split)
        if split not in self.splits:
            raise ValueError(
                f"custom task {self.name!r} has no split {split!r}; known splits: train, dev"
            )
        return Path(self.train if split == "train" else self.dev).expanduser()

    def file_format(self, split: str) -> str:
        """The format of ``split``'s file: the declared one, else from its extension."""
        if self.format:
            return self.format
        fmt = _format_from_extension(str(self.split_path(split)))
        assert fmt is not None  # validate_custom_task checked the extension
        return fmt

    def resolve(self) -> CustomTask:
        """This task with its labels known: inferred from the training file if not declared.

        Raises:
            FileNotFoundError: The training file is missing (the message names the path).
            ValueError: A malformed row (file and line named), or fewer than two classes.
            SpecError: Declared metrics do not fit the inferred classes (f1 needs two).
        """
        if self.is_regression or self.labels is not None:
            return self
        rows = _read_custom_rows(self, "train")
        labels = _sorted_labels({raw for _, raw, _ in rows})
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
                "call resolve() (or use task_info/load_examples, which do)"
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
            if _format_from_extension(path) is None:
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
            or not all(_is_label_value(v) for v in labels)
            or len({_label_key(v) for v in labels}) != len(labels)
        ):
            raise SpecError(
                f"{field}.labels",
                f"must be a list of at least 2 distinct strings or integers, got {labels!r}",
                "or leave it out to take the sorted labels of the training file",
            )
        labels = tuple(_label_key(v) for v in labels)

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


def load_custom_split(task: CustomTask, split: str) -> list[GlueExample]:
    """Reads one split of a custom task.

    Results are cached in-process per file (keyed by its modification time and size, so an
    edited file is read again). Callers must not mutate the returned list.

    Raises:
        FileNotFoundError: The split's file is missing; the message names the path.
        ValueError: A row lacks a column, has an unknown label or a bad score, or a JSONL
            line is not a JSON object; the message names file and line.
    """
    task = task.resolve()
    rows = _read_custom_rows(task, split)
    path = task.split_path(split)
    if task.is_regression:
        return [
            GlueExample(texts, _finite_score(raw, f"{path}:{line}: column {task.label_field!r}"))
            for texts, raw, line in rows
        ]
    index = {label: i for i, label in enumerate(task._known_labels())}
    examples = []
    for texts, raw, line in rows:
        if raw not in index:
            raise ValueError(f"{path}:{line}: label {raw!r} not one of {list(index)}")
        examples.append(GlueExample(texts, index[raw]))
    return examples


_RawRow = tuple[tuple[str, ...], Any, int]  # texts, raw label (a str key or a number), line


def _read_custom_rows(task: CustomTask, split: str) -> tuple[_RawRow, ...]:
    path = task.split_path(split).resolve()
    if not path.is_file():
        why = "" if path.parent.is_dir() else f" (the folder {path.parent} does not exist either)"
        raise FileNotFoundError(
            f"custom task {task.name!r}: {split} file {path} not found{why}; fix the path in "
            f"data.custom_task.{'train' if split == 'train' else 'dev'}"
        )
    stat = path.stat()
    return _read_custom_cached(
        str(path),
        task.file_format(split),
        task.text_fields,
        task.label_field,
        task.is_regression,
        stat.st_mtime_ns,
        stat.st_size,
    )


@functools.lru_cache(maxsize=16)
def _read_custom_cached(
    path: str,
    fmt: str,
    text_fields: tuple[str, ...],
    label_field: str,
    regression: bool,
    _mtime_ns: int,
    _size: int,
) -> tuple[_RawRow, ...]:
    out = []
    for line, row in _iter_records(Path(path), fmt):
        values = []
        for column in (*text_fields, label_field):
            value = row.get(column)
            if value is None:
                raise ValueError(f"{path}:{line}: missing column {column!r}")
            values.append(value)
        texts = []
        for column, value in zip(text_fields, values, strict=False):
            if isinstance(value, (dict, list)):
                raise ValueError(f"{path}:{line}: column {column!r} is not text: {value!r}")
            texts.append(str(value))
        raw = values[-1]
        if not regression:
            if not _is_label_value(raw):
                raise ValueError(f"{path}:{line}: label {raw!r} is not a string or integer")
            raw = _label_key(raw)
        out.append((tuple(texts), raw, line))
    return tuple(out)


def _iter_records(path: Path, fmt: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(line number, column -> value) for each record; a missing column maps to None."""
    # utf-8-sig: a byte-order mark would otherwise glue itself onto the first column name.
    with path.open(encoding="utf-8-sig", newline="") as f:
        if fmt == "jsonl":
            for line, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{line}: not valid JSON: {e}") from None
                if not isinstance(record, dict):
                    raise ValueError(f"{path}:{line}: expected a JSON object per line")
                yield line, record
            return
        if fmt == "tsv":  # as GLUE: no quoting, a '"' is text
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path}: empty file; the first line must name the columns")
        header = [h.strip() for h in header]
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            record = dict(zip(header, row, strict=False))
            yield reader.line_num, record


def _format_from_extension(path: str) -> str | None:
    suffix = Path(path).suffix.lower()
    for fmt, suffixes in CUSTOM_FORMATS.items():
        if suffix in suffixes:
            return fmt
    return None


def _is_label_value(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, (str, int))


def _label_key(value: Any) -> str:
    """A class label as a string: JSON 1, 1.0 and "1" all name the class "1"."""
    if isinstance(value, float):
        return str(int(value))
    return str(value).strip()


def _sorted_labels(labels: set[str]) -> tuple[str, ...]:
    """Sorted, numerically when every label is an integer ("2" before "10")."""
    try:
        return tuple(sorted(labels, key=int))
    except ValueError:
        return tuple(sorted(labels))


# --------------------------------------------------------------------------------------------
# One entry point for all sources.

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
        return task.resolve()
    if isinstance(task, Mapping):
        return validate_custom_task(dict(task)).resolve()
    raise TypeError(f"expected a task id, GlueTask or CustomTask, got {type(task).__name__}")


def task_info(task: TaskRef) -> TaskInfo:
    """(num_labels, is_regression, metrics, primary_metric) of a GLUE or custom task.

    A custom task without declared labels reads its training file to infer them.
    """
    t = resolve_task(task)
    return TaskInfo(t.num_labels, t.is_regression, t.metrics, t.primary_metric)


def result_metric_names(task: TaskRef) -> tuple[str, ...]:
    """Every task metric a full dev evaluation reports, unprefixed.

    The primary dev split's metrics are unsuffixed; a later dev split's carry its suffix: MNLI
    gives ``("accuracy", "accuracy_mismatched")``.
    """
    t = resolve_task(task)
    extra = [
        f"{metric}_{split.removeprefix('dev_')}"
        for split in t.dev_splits[1:]
        for metric in t.metrics
    ]
    return (*t.metrics, *extra)


def load_examples(
    task: TaskRef,
    split: str,
    glue_dir: str | Path | None = None,
    source: str = "auto",
    *,
    hub_dataset: str = DEFAULT_HUB_DATASET,
) -> list[GlueExample]:
    """Loads one labelled split of a GLUE task or a custom task, from wherever it lives.

    For a custom task, ``glue_dir``, ``source`` and ``hub_dataset`` are ignored: its files
    are named in its declaration. For a GLUE task, ``source`` picks where to read:

    - ``"dir"``: the local ``glue_data`` folder (:func:`resolve_glue_dir` finds it).
    - ``"hub"``: ``datasets.load_dataset(hub_dataset, task_id)`` (:func:`load_hub_split`).
    - ``"auto"``: the local folder if ``glue_dir`` or ``$ARCHSEARCH_GLUE_DIR`` names one or a
      default one exists; otherwise the hub, unless ``HF_HUB_OFFLINE`` is set. A folder that
      is named but missing is an error, never a reason to go online.

    Args:
        task: GLUE task id, :class:`GlueTask`, :class:`CustomTask`, or its JSON declaration.
        split: "train", "dev", "dev_matched", "dev_mismatched"; the hub's names
            ("validation", ...) are accepted too.
        glue_dir: The ``glue_data`` folder, or None for the fallbacks.
        source: "auto", "dir" or "hub".
        hub_dataset: Hub dataset name for the hub source.

    Returns:
        The examples in file order. Callers must not mutate the list (it may be cached).

    Raises:
        FileNotFoundError: A local file or folder is missing (the path is named).
        HubUnavailableError: The hub was needed and could not be reached, or the hub fallback
            is off because of ``HF_HUB_OFFLINE``; the message lists what was tried.
        ValueError: Unknown task, split or source, or a malformed row.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; one of {', '.join(SOURCES)}")
    if not isinstance(task, (str, GlueTask)):
        custom = resolve_task(task)
        assert isinstance(custom, CustomTask)
        return load_custom_split(custom, split)
    glue = resolve_task(task)
    assert isinstance(glue, GlueTask)
    split = canonical_split(glue, split)
    if source == "hub":
        return load_hub_split(glue.id, split, hub_dataset)
    if source == "dir":
        return load_split(glue.id, split, resolve_glue_dir(_str_or_none(glue_dir))[0])
    try:
        folder, _ = resolve_glue_dir(_str_or_none(glue_dir))
    except FileNotFoundError as e:
        if glue_dir or os.environ.get(GLUE_DIR_ENV):
            raise  # a named folder is missing: do not silently read other data
        offline = hub_offline()
        if offline:
            raise HubUnavailableError(
                f"{e}. The hub fallback ({hub_dataset}) was not tried because {offline} is set"
            ) from e
        try:
            return load_hub_split(glue.id, split, hub_dataset)
        except HubUnavailableError as hub_error:
            raise HubUnavailableError(f"{e}. Then: {hub_error}") from hub_error
    return load_split(glue.id, split, folder)


def _str_or_none(path: str | Path | None) -> str | None:
    return None if path is None else str(path)


# --------------------------------------------------------------------------------------------
# Tokenised data, cached on disk by datasets fingerprints.

#: Environment variable naming archsearch's cache folder (tokenised data goes in ``tokenized/``).
CACHE_DIR_ENV = "ARCHSEARCH_CACHE_DIR"
# Bump when the encoding below changes, so old cache files are no longer matched.
_ENCODING_VERSION = 1


def default_cache_dir() -> Path:
    """``$ARCHSEARCH_CACHE_DIR/tokenized``, else ``~/.cache/archsearch/tokenized``."""
    root = os.environ.get(CACHE_DIR_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "archsearch"
    return base / "tokenized"


def examples_hash(examples: Sequence[GlueExample]) -> str:
    """sha256 (hex) of the examples' texts and labels, in order: the data's provenance hash."""
    digest = hashlib.sha256()
    for example in examples:
        record = json.dumps([list(example.texts), example.label], ensure_ascii=False)
        digest.update(record.encode())
        digest.update(b"\n")
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class EncodedExamples:
    """Tokenised examples (see :func:`encode_examples`).

    Attributes:
        dataset: A ``datasets.Dataset`` with columns ``label`` (int64 class or float32 score),
            ``input_ids`` (int32 lists) and ``token_type_ids`` (int8 lists), unpadded, in the
            examples' order; memory-mapped from ``cache_file`` when there is one.
        data_hash: :func:`examples_hash` of the examples (for provenance).
        fingerprint: The ``datasets`` fingerprint (data hash, tokenizer, length, version).
        cache_file: The Arrow file holding ``dataset``; None for an empty example list.
        from_cache: Whether the file existed already, so nothing was tokenised.
    """

    dataset: datasets.Dataset
    data_hash: str
    fingerprint: str
    cache_file: Path | None
    from_cache: bool

    def __len__(self) -> int:
        return len(self.dataset)

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat numpy arrays: ``input_ids`` and ``token_type_ids`` concatenated, ``offsets``
        (example ``i`` spans ``offsets[i]:offsets[i + 1]``, length n + 1), and ``labels``."""
        table = self.dataset.data.table
        out: dict[str, np.ndarray] = {}
        offsets = np.zeros(1, dtype=np.int64)
        for name, dtype in (("input_ids", np.int32), ("token_type_ids", np.int8)):
            column = table.column(name).combine_chunks()
            if len(column) == 0:
                out[name] = np.empty(0, dtype)
                continue
            out[name] = column.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
            raw = column.offsets.to_numpy().astype(np.int64)
            offsets = raw - raw[0]
        out["offsets"] = offsets
        labels = table.column("label").to_numpy()
        out["labels"] = labels.astype(np.float32 if labels.dtype.kind == "f" else np.int64)
        return out


def encode_examples(
    examples: Sequence[GlueExample],
    tokenizer: Any,
    max_seq_length: int,
    cache_dir: str | Path | None = None,
    *,
    is_regression: bool | None = None,
) -> EncodedExamples:
    """Tokenises examples once per machine: later calls, in any process, read the Arrow file.

    The examples become a ``datasets.Dataset`` tokenised with ``.map(batched=True)`` under an
    explicit ``new_fingerprint`` and ``cache_file_name`` derived from: the sha256 of the
    examples' texts and labels, the tokenizer's ``name_or_path``, class and vocabulary size
    (``len(tokenizer)``), ``max_seq_length`` and an encoding version. ``datasets`` writes the
    file atomically (a temporary file, then a rename), so concurrent workers are safe.

    Texts are truncated to ``max_seq_length`` tokens (pairs: longest first) and not padded;
    tokenizers without ``token_type_ids`` get zeros.

    Args:
        examples: The examples; all single sentences or all pairs.
        tokenizer: A Hugging Face tokenizer (callable on text lists, with ``name_or_path``).
        max_seq_length: Truncation length in tokens.
        cache_dir: Folder for the Arrow files; default :func:`default_cache_dir`.
        is_regression: Whether labels are scores; default: whether any label is a float.

    Returns:
        The :class:`EncodedExamples`.

    Raises:
        ValueError: Mixed single sentences and pairs, or ``max_seq_length`` < 2.
    """
    import datasets

    if max_seq_length < 2:
        raise ValueError(f"max_seq_length must be >= 2, got {max_seq_length}")
    widths = {len(e.texts) for e in examples}
    if len(widths) > 1:
        raise ValueError(f"examples mix {sorted(widths)} texts each; all must have the same")
    if is_regression is None:
        is_regression = any(isinstance(e.label, float) for e in examples)
    data_hash = examples_hash(examples)
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "version": _ENCODING_VERSION,
                "data": data_hash,
                "tokenizer": str(getattr(tokenizer, "name_or_path", "")),
                "tokenizer_class": type(tokenizer).__name__,
                "vocab_size": _vocab_size(tokenizer),
                "max_seq_length": max_seq_length,
                "regression": is_regression,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    label_type = datasets.Value("float32" if is_regression else "int64")
    features = datasets.Features(
        {
            "label": label_type,
            "input_ids": datasets.List(datasets.Value("int32")),
            "token_type_ids": datasets.List(datasets.Value("int8")),
        }
    )
    if not examples:
        empty = datasets.Dataset.from_dict({k: [] for k in features}, features=features)
        return EncodedExamples(empty, data_hash, fingerprint, None, False)

    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    cache_file = folder / f"{fingerprint}.arrow"
    from_cache = cache_file.is_file()
    width = widths.pop()
    text_columns = [f"text_{i}" for i in range(width)]
    columns: dict[str, list[Any]] = {
        name: [e.texts[i] for e in examples] for i, name in enumerate(text_columns)
    }
    columns["label"] = [e.label for e in examples]
    input_features = datasets.Features(
        {**{name: datasets.Value("string") for name in text_columns}, "label": label_type}
    )
    raw = datasets.Dataset.from_dict(columns, features=input_features)

    def tokenize(batch: Mapping[str, list[Any]]) -> dict[str, list[list[int]]]:
        second = batch["text_1"] if width > 1 else None
        encoded = tokenizer(
            batch["text_0"],
            second,
            truncation=True,
            max_length=max_seq_length,
            return_attention_mask=False,
        )
        ids = encoded["input_ids"]
        types = encoded.get("token_type_ids") or [[0] * len(row) for row in ids]
        return {"input_ids": ids, "token_type_ids": types}

    dataset = raw.map(
        tokenize,
        batched=True,
        remove_columns=text_columns,
        features=features,
        load_from_cache_file=True,
        cache_file_name=str(cache_file),
        new_fingerprint=fingerprint,
        desc="tokenizing",
    )
    return EncodedExamples(dataset, data_hash, fingerprint, cache_file, from_cache)


def _vocab_size(tokenizer: Any) -> int:
    try:
        return len(tokenizer)
    except TypeError:
        return int(getattr(tokenizer, "vocab_size", 0))
