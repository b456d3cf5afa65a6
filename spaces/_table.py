"""Tabular NAS benchmarks in the FlexiBERT format (``dataset_small_sst2.json``).

The file lists ``model_dicts`` (architectures as ``{"l", "a", "h", "s", "f"}``) and, per
architecture, ``accuracies``: a dict of GLUE task name -> dev score (or null). Looking up a
candidate means finding its architecture and reading the task's score.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

from archsearch.spaces._errors import SpecError
from archsearch.spaces._files import MAX_TABLE_BYTES, read_text

# archsearch task ids -> the task names the FlexiBERT table uses.
TABLE_TASK_NAMES = {
    "cola": "CoLA",
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "stsb": "STS-B",
    "qqp": "QQP",
    "mnli": "MNLI-mm",
    "qnli": "QNLI",
    "rte": "RTE",
    "wnli": "WNLI",
}

ArchKey = tuple[int, tuple[int, ...], tuple[int, ...], tuple[str, ...], tuple[int, ...]]


# The table records each task's main dev metric; these are the names archsearch gives them.
# Its MNLI column is MNLI-mm: the mismatched dev accuracy.
TABLE_METRIC = {
    "cola": "mcc",
    "stsb": "pearson",
    "mrpc": "f1",
    "qqp": "f1",
    "mnli": "accuracy_mismatched",
}


def arch_key(arch: dict[str, Any]) -> ArchKey:
    """Hashable canonical form of a FlexiBERT-small architecture dict."""
    return (
        int(arch["l"]),
        tuple(int(x) for x in arch["a"]),
        tuple(int(x) for x in arch["h"]),
        tuple(str(x) for x in arch["s"]),
        tuple(int(x) for x in arch["f"]),
    )


class NasTable:
    """A loaded tabular benchmark.

    Args:
        path: JSON file in the FlexiBERT ``dataset_*.json`` format.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        text = read_text(
            self.path, "table", MAX_TABLE_BYTES, "pass the path of a FlexiBERT table JSON"
        )
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError("table", f"{self.path} is not valid JSON: {e}") from e
        except RecursionError as e:
            raise SpecError("table", f"{self.path} is nested too deeply to be a table") from e
        if not isinstance(raw, dict) or "model_dicts" not in raw or "accuracies" not in raw:
            raise SpecError(
                "table", f"{self.path} lacks 'model_dicts' or 'accuracies'", "is it a table file?"
            )
        dicts, accs = raw["model_dicts"], raw["accuracies"]
        for key, value in (("model_dicts", dicts), ("accuracies", accs)):
            if not isinstance(value, list):
                raise SpecError("table", f"{self.path}: '{key}' must be a list")
        if len(dicts) != len(accs):
            raise SpecError(
                "table",
                f"{self.path}: {len(dicts)} model_dicts but {len(accs)} accuracies",
                "one accuracies entry per architecture",
            )
        self.architectures: list[dict[str, Any]] = []
        self._scores: dict[ArchKey, dict[str, float]] = {}
        #: per table task: rows whose architecture already had a score on it (the first
        #: score is kept, as every other table format keeps it; the last one won), and how
        #: many of those gave another score
        self.repeated: dict[str, int] = {}
        self.conflicting: dict[str, int] = {}
        for i, (arch, acc) in enumerate(zip(dicts, accs, strict=True)):
            row, scores = _row_key(self.path, i, arch), _row_scores(self.path, i, acc)
            if row not in self._scores:
                self._scores[row] = {}
                self.architectures.append(dict(arch))
            kept = self._scores[row]
            for task, score in scores.items():  # a task the first row lacked is added
                if task in kept:
                    self.repeated[task] = self.repeated.get(task, 0) + 1
                    self.conflicting[task] = self.conflicting.get(task, 0) + (score != kept[task])
                else:
                    kept[task] = score

    @staticmethod
    def table_task(task: str) -> str:
        if not isinstance(task, str):
            raise SpecError("task", f"must be a task id string, got {task!r}")
        try:
            return TABLE_TASK_NAMES[task]
        except KeyError as e:
            raise SpecError(
                "task", f"unknown task {task!r}", f"one of {', '.join(TABLE_TASK_NAMES)}"
            ) from e

    def score(self, arch: dict[str, Any], task: str) -> float | None:
        """The recorded score of ``arch`` on ``task``; None when the table has none."""
        return self._scores.get(arch_key(arch), {}).get(self.table_task(task))

    def scored(self, task: str) -> list[dict[str, Any]]:
        """Architectures with a recorded score on ``task``, in file order."""
        name = self.table_task(task)
        return [a for a in self.architectures if name in self._scores[arch_key(a)]]


def _row_key(path: Path, i: int, arch: Any) -> ArchKey:
    """The key of row ``i``'s architecture; SpecError naming the row when it is malformed."""
    try:
        if not isinstance(arch, dict):
            raise TypeError(f"a JSON object, not {type(arch).__name__}")
        for k in ("a", "h", "s", "f"):
            if not isinstance(arch.get(k), list):
                raise TypeError(f"'{k}' must be a list")
        if isinstance(arch.get("l"), bool | list | dict):
            raise TypeError("'l' must be an int")
        return arch_key(arch)
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise SpecError(
            "table", f"{path}: model_dicts[{i}] is not an architecture ({e})", "keys l, a, h, s, f"
        ) from e


def _row_scores(path: Path, i: int, acc: Any) -> dict[str, float]:
    """Row ``i``'s scores by table task name (null scores left out)."""
    if acc is None:
        return {}
    if not isinstance(acc, dict):
        raise SpecError("table", f"{path}: accuracies[{i}] must be an object of task: score")
    scores = {}
    for task, v in acc.items():
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise SpecError(
                "table", f"{path}: accuracies[{i}][{task!r}] is {v!r}, not a finite score"
            )
        scores[task] = float(v)
    return scores


@functools.lru_cache(maxsize=8)
def load_table(path: str) -> NasTable:
    """Loads a table once per process (tables are read-only)."""
    return NasTable(path)
