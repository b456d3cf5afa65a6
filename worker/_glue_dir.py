"""The glue_data source: a local folder in the classic ``download_glue_data.py`` layout.

``<glue_dir>/<TASK>/{train,dev,test}.tsv``. Tests and the demo use only this source (DESIGN.md
principle 7). Every file is read tab-separated with quoting disabled (``csv.QUOTE_NONE``):
stray ``"`` characters are part of the text, and honouring them as quotes would silently merge
rows.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import sys
from pathlib import Path

from archsearch.spaces import GLUE_TASKS, GlueTask, get_task
from archsearch.worker._example import GlueExample, not_utf8

#: Environment variable naming the ``glue_data`` folder when ``--glue-dir`` is not given.
log = logging.getLogger("archsearch.worker")
GLUE_DIR_ENV = "ARCHSEARCH_GLUE_DIR"

# Some GLUE sentences (QNLI/MNLI parses) exceed csv's default 128 KiB field limit.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class GlueDataMissing(FileNotFoundError):
    """This machine's GLUE data lacks what a trial needs: no folder, or a task's split file.

    The machine's, not the candidate's: another worker may have the data, so the trial is
    retried, and the worker says it in one line (the message names the path and the fix)
    rather than with a traceback.
    """


class GlueDataInvalid(ValueError):
    """A GLUE split file this machine has cannot be parsed (a missing column, a short row, a
    label the task does not have): the machine's copy, like :class:`GlueDataMissing`, so the
    trial is retried (another worker's copy may be whole) and the worker says it in one line,
    naming the file and line."""


def glue_tasks_in(folder: Path) -> list[str]:
    """The GLUE task folders under ``folder`` that have a ``train`` split (``["SST-2"]``), in
    the registry's order."""
    return [
        task.folder
        for task in GLUE_TASKS.values()
        if (folder / task.folder / task.split_file("train")).is_file()
    ]


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
        GlueDataMissing: The named folder does not exist (or is a file, or one task's folder),
            or no fallback exists; the message lists every place looked at and how to point
            archsearch at the data.
    """
    fix = (
        f"pass --glue-dir /path/to/glue_data or set {GLUE_DIR_ENV}=/path/to/glue_data "
        "(a folder in download_glue_data.py layout: <TASK>/train.tsv, <TASK>/dev.tsv)"
    )
    if glue_dir is not None and not glue_dir.strip():  # an empty variable is unset; a flag is not
        raise GlueDataMissing(f"--glue-dir is empty; {fix}")
    named = [(glue_dir, "--glue-dir"), (os.environ.get(GLUE_DIR_ENV), f"${GLUE_DIR_ENV}")]
    for value, source in named:
        if value:
            path = Path(value).expanduser().resolve()
            if not path.is_dir():
                what = "is a file, not a folder" if path.exists() else "does not exist"
                raise GlueDataMissing(f"GLUE folder {path} (from {source}) {what}; {fix}")
            _refuse_a_task_folder(path, source)
            return path, f"using GLUE data from {path} (given by {source})"
    looked: list[str] = []
    for path, description in default_glue_dirs():
        path = path.resolve()
        if path.is_dir():
            return path, f"using GLUE data from {path} ({description})"
        if not any(entry.startswith(f"{path} (") for entry in looked):  # run from the parent
            looked.append(f"{path} ({description})")
    raise GlueDataMissing(
        "no GLUE data folder found: --glue-dir not given, "
        f"${GLUE_DIR_ENV} not set, and none of these exist: {'; '.join(looked)}. To fix: {fix}"
    )


def _refuse_a_task_folder(path: Path, source: str) -> None:
    """A named folder that is one task's folder (``glue_data/SST-2``: it holds ``train.tsv``
    and no task folders) would make every trial look for ``SST-2/SST-2/train.tsv``."""
    if (path / "train.tsv").is_file() and not glue_tasks_in(path):
        raise GlueDataMissing(
            f"GLUE folder {path} (from {source}) is one task's folder (it holds train.tsv); "
            "name the glue_data folder above it: "
            + (
                f"--glue-dir {path.parent}"
                if source == "--glue-dir"
                else f"{GLUE_DIR_ENV}={path.parent}"
            )
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
        GlueDataMissing: The split's file is missing; the message names the exact path.
    """
    path = split_path(task_id, split, glue_dir).resolve()
    if not path.is_file():
        folder = path.parent
        why = "" if folder.is_dir() else f" (the folder {folder} does not exist either)"
        raise GlueDataMissing(
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
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = list(next(rows, [])) if task.has_header else list(task.column_names)
            first_line = 2 if task.has_header else 1
            wanted = [*task.text_columns, task.label_column]
            missing = [c for c in wanted if c not in header]
            if missing:
                raise GlueDataInvalid(f"{path}: header {header} lacks column(s) {missing}")
            text_idx = [header.index(c) for c in task.text_columns]
            label_idx = header.index(task.label_column)
            needed = max(*text_idx, label_idx) + 1
            examples = []
            skipped: list[int] = []
            for line, row in enumerate(rows, start=first_line):
                if len(row) < needed:
                    if task.tolerate_short_rows:
                        skipped.append(line)
                        continue
                    raise GlueDataInvalid(
                        f"{path}:{line}: {len(row)} columns, expected at least {needed}"
                    )
                texts = tuple(row[i] for i in text_idx)
                examples.append(GlueExample(texts, _parse_label(task, row[label_idx], path, line)))
    except UnicodeDecodeError:
        raise GlueDataInvalid(not_utf8(path)) from None
    if skipped:  # said once per file read (reads are cached): a dev set smaller than GLUE's
        log.warning(
            "%s: skipped %d row(s) with fewer than %d columns (line %s%s), as GLUE's own "
            "loaders do; %d examples read",
            path,
            len(skipped),
            needed,
            ", ".join(map(str, skipped[:5])),
            ", ..." if len(skipped) > 5 else "",
            len(examples),
        )
    return examples


def _parse_label(task: GlueTask, raw: str, path: Path, line: int) -> int | float:
    if task.labels is None:
        try:
            return float(raw)
        except ValueError:
            raise GlueDataInvalid(f"{path}:{line}: score {raw!r} is not a number") from None
    try:
        return task.labels.index(raw)
    except ValueError:
        raise GlueDataInvalid(
            f"{path}:{line}: label {raw!r} not one of {list(task.labels)}"
        ) from None
