"""Named text sources for data selection: GLUE text, text files and JSONL files.

A ``data.selection`` (or ``data.pretrain_selection``) names its pool and target as source
names (one string or a list):

* ``"train"``, ``"dev"``, ``"test"`` (or another dev split name): the candidate's own task's
  split, read by the trainer's data source;
* ``"glue:TASK"`` or ``"glue:TASK/SPLIT"`` (SPLIT ``train`` by default; ``test`` splits are
  unlabelled and read for their text only): another GLUE task's text from the ``glue_data``
  folder;
* ``"file:PATH"``, or a path ending in ``.txt`` or ``.jsonl``: a text file (one text per line,
  blank lines skipped) or a JSONL file (one object per line with a ``"text"`` field).

A sentence pair becomes one text, its sentences joined by a space. Torch-free.
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Sequence
from pathlib import Path

from archsearch.spaces import get_task
from archsearch.worker._glue_dir import load_split, resolve_glue_dir

#: The candidate's own task's splits, as source names.
OWN_SPLITS = ("train", "dev", "test", "dev_matched", "dev_mismatched")
FILE_SUFFIXES = (".txt", ".jsonl")
SOURCE_FORMS = (
    "'train' | 'dev' | 'test' (the task's own split), 'glue:TASK[/SPLIT]', "
    "'file:PATH' or a path ending in .txt or .jsonl"
)


def source_names(value: str | Sequence[str]) -> list[str]:
    """``value`` (one source name or a list) as a checked list of names.

    Raises:
        ValueError: Not a non-empty string or list of them, a name twice, or a name of no
            known form (the message lists the forms).
    """
    names = [value] if isinstance(value, str) else list(value)
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f"must be a source name or a non-empty list of them, got {value!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"names a source twice: {names}")
    for name in names:
        if name in OWN_SPLITS or name.startswith("file:") or name.endswith(FILE_SUFFIXES):
            continue
        if name.startswith("glue:"):
            _glue_name(name)
            continue
        raise ValueError(f"unknown source {name!r}; a source is {SOURCE_FORMS}")
    return names


def load_texts(name: str, glue_dir: str | Path | None = None) -> list[str]:
    """The texts of a ``glue:`` or file source (own-split names are read by the trainer).

    Raises:
        FileNotFoundError: The file or GLUE split is missing (the path is named).
        ValueError: An unknown form, a JSONL line without a ``text`` string, or no text.
    """
    if name.startswith("glue:"):
        task_id, split = _glue_name(name)
        folder = resolve_glue_dir(None if glue_dir is None else str(glue_dir))[0]
        texts = glue_texts(task_id, split, folder)
    elif name.startswith("file:") or name.endswith(FILE_SUFFIXES):
        texts = file_texts(name.removeprefix("file:"))
    else:
        raise ValueError(f"unknown source {name!r}; a source is {SOURCE_FORMS}")
    if not texts:
        raise ValueError(f"source {name!r} holds no text")
    return texts


def glue_texts(task_id: str, split: str, glue_dir: str | Path) -> list[str]:
    """The texts of a GLUE split (labelled, or a ``test`` split read by its header)."""
    if split != "test":
        return [" ".join(e.texts) for e in load_split(task_id, split, glue_dir)]
    folder = Path(glue_dir) / get_task(task_id).folder
    return list(_test_texts(task_id, str((folder / "test.tsv").resolve())))


def file_texts(path: str | Path) -> list[str]:
    """The texts of a ``.jsonl`` file (``"text"`` fields) or any other text file (lines)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text source {path} does not exist on this worker")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix != ".jsonl":
        return [line.strip() for line in lines if line.strip()]
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            text = json.loads(line).get("text")
        except (json.JSONDecodeError, AttributeError):
            text = None
        if not isinstance(text, str):
            raise ValueError(f"{path}:{number}: not a JSON object with a 'text' string")
        texts.append(text)
    return texts


def _glue_name(name: str) -> tuple[str, str]:
    task_id, _, split = name.removeprefix("glue:").partition("/")
    try:
        task = get_task(task_id)
    except ValueError as e:  # SpecError too: an unknown task
        raise ValueError(f"{name!r}: {e}") from None
    split = split or "train"
    if split not in ("train", "test", *task.dev_splits):
        known = ", ".join(("train", *task.dev_splits, "test"))
        raise ValueError(f"{name!r}: GLUE {task_id} has no split {split!r} ({known})")
    return task.id, split


@functools.lru_cache(maxsize=16)
def _test_texts(task_id: str, path: str) -> tuple[str, ...]:
    task = get_task(task_id)
    if not Path(path).is_file():
        raise FileNotFoundError(f"GLUE {task_id} test split not found: looked for {path}")
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, [])
        missing = [c for c in task.text_columns if c not in header]
        if missing:
            raise ValueError(f"{path}: header {header} lacks column(s) {missing}")
        idx = [header.index(c) for c in task.text_columns]
        return tuple(" ".join(row[i] for i in idx) for row in rows if len(row) > max(idx))
