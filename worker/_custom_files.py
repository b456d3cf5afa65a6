"""The custom source: a user's own task, read from the TSV, CSV or JSONL files it names.

The declaration (:class:`~archsearch.spaces.CustomTask`) is shared with the server; reading
its files, and inferring its labels from the training file when it declares none, happen here.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from archsearch.spaces import CustomTask
from archsearch.spaces._custom_task import is_label_value, label_key, sorted_labels
from archsearch.worker._custom_tables import table_records
from archsearch.worker._example import GlueExample, finite_score, not_utf8
from archsearch.worker._glue_dir import GlueDataMissing


class CustomFileMissing(GlueDataMissing):
    """A custom task's file is not on this worker: this machine's lack, like GLUE data it
    does not have (another worker may have the file), so the trial is handed back and the
    worker skips the study for a while (``_data_skips``) instead of failing the candidate."""


log = logging.getLogger(__name__)

#: A class with fewer training rows than this, and under 1% of them, is warned of.
RARE_CLASS_ROWS = 5


def resolve_custom_task(task: CustomTask) -> CustomTask:
    """``task`` with its labels known: inferred from the training file if not declared.

    The labels are the distinct values of the label column, sorted (numerically when all
    are integers).

    Raises:
        FileNotFoundError: The training file is missing (the message names the path).
        ValueError: A malformed row (file and line named), or fewer than two classes.
        SpecError: Declared metrics do not fit the inferred classes (f1 needs two).
    """
    if task.labels_known:
        return task
    rows = _read_custom_rows(task, "train")
    return task.with_labels(sorted_labels({raw for _, raw, _ in rows}))


def label_info(task: object) -> dict[str, str]:
    """What a trial's info says of a custom classification task's classes: their index order
    and, with two, the class ``f1`` scores (the second); nothing for other tasks."""
    if not isinstance(task, CustomTask) or task.is_regression or task.labels is None:
        return {}
    info = {"labels": ", ".join(task.labels)}
    if len(task.labels) == 2:
        info["f1_positive_label"] = task.labels[1]
    if warning := rare_classes(task):
        info["custom_task_warning"] = warning  # show: "custom_task: class 'x' has 1 of ..."
        log.warning("data.custom_task: %s", warning)
    return info


def rare_classes(task: CustomTask) -> str:
    """What to say of classes with fewer than 5 training rows that are also under 1% of
    them (the usual sign of misread rows: a text's separator taken for the label's), naming
    where each first appears; "" when none is so rare or the file cannot be read."""
    try:
        rows = _read_custom_rows(task, "train")
    except (OSError, ValueError):
        return ""  # the data loading says why
    first: dict[str, int] = {}
    counts: Counter[str] = Counter()
    for _, raw, line in rows:
        counts[raw] += 1
        first.setdefault(raw, line)
    rare = [
        label
        for label in task._known_labels()
        if counts[label] < min(RARE_CLASS_ROWS, 0.01 * len(rows))
    ]
    if not rare:
        return ""
    said = ", ".join(
        f"{label!r} ({counts[label]} of them, line {first[label]})"
        if label in first
        else f"{label!r} (none)"
        for label in rare
    )
    classes = "class" if len(rare) == 1 else "classes"
    return (
        f"rare {classes} among the {len(rows)} rows of {task.split_path('train')}: {said}; "
        "a class this rare is often a misread row (a separator in an unquoted text)"
    )


def load_custom_split(task: CustomTask, split: str) -> list[GlueExample]:
    """Reads one split of a custom task.

    Results are cached in-process per file (keyed by its modification time and size, so an
    edited file is read again). Callers must not mutate the returned list.

    Raises:
        FileNotFoundError: The split's file is missing; the message names the path.
        ValueError: A row lacks a column, has another field count than the header, an empty
            or null value, an unknown label or a bad score, or a JSONL line is not a JSON
            object; a column the task reads is named twice; the message names file and line.
    """
    task = resolve_custom_task(task)
    rows = _read_custom_rows(task, split)
    path = task.split_path(split)
    if task.is_regression:
        return [
            GlueExample(texts, finite_score(raw, f"{path}:{line}: column {task.label_field!r}"))
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
        raise CustomFileMissing(
            f"custom task {task.name!r}: {split} file {path} not found on this worker{why}; "
            "every worker needs the task's files at that path (a shared folder, or a copy), "
            f"or fix data.custom_task.{'train' if split == 'train' else 'dev'}"
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
    for line, row in _iter_records(Path(path), fmt, (*text_fields, label_field)):
        values = []
        for column in (*text_fields, label_field):
            if column not in row:
                has = ", ".join(repr(str(c)) for c in row) or "none"
                raise ValueError(f"{path}:{line}: missing column {column!r} (it has: {has})")
            if row[column] is None:  # JSON null
                raise ValueError(f"{path}:{line}: column {column!r} is null; give it a value")
            values.append(row[column])
        texts = []
        for column, value in zip(text_fields, values, strict=False):
            if isinstance(value, (dict, list)):
                raise ValueError(f"{path}:{line}: column {column!r} is not text: {value!r}")
            texts.append(str(value))
        raw = values[-1]
        if not regression:
            if not is_label_value(raw):
                raise ValueError(f"{path}:{line}: label {raw!r} is not a string or integer")
            raw = label_key(raw)
            if not raw:  # "hello," would otherwise train a class ''
                raise ValueError(
                    f"{path}:{line}: column {label_field!r} is empty; give the row its label "
                    "or drop it"
                )
        out.append((tuple(texts), raw, line))
    return tuple(out)


def _iter_records(
    path: Path, fmt: str, columns: tuple[str, ...] = ()
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(line number, column -> value) for each record; ``columns``, those the task reads,
    may not be named twice in a CSV or TSV header."""
    # utf-8-sig: a byte-order mark would otherwise glue itself onto the first column name.
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            if fmt != "jsonl":
                yield from table_records(path, f.read(), fmt, columns)
                return
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
    except UnicodeDecodeError:
        raise ValueError(not_utf8(path)) from None
