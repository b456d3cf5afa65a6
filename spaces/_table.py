"""Tabular NAS benchmarks in the FlexiBERT format (``dataset_small_sst2.json``).

The file lists ``model_dicts`` (architectures as ``{"l", "a", "h", "s", "f"}``) and, per
architecture, ``accuracies``: a dict of GLUE task name -> dev score (or null). Looking up a
candidate means finding its architecture and reading the task's score.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from archsearch.spaces._errors import SpecError

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
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError as e:
            raise SpecError(
                "table", f"file {self.path} not found", "pass the path of a FlexiBERT table JSON"
            ) from e
        except json.JSONDecodeError as e:
            raise SpecError("table", f"{self.path} is not valid JSON: {e}") from e
        try:
            dicts = raw["model_dicts"]
            accs = raw["accuracies"]
        except (KeyError, TypeError) as e:
            raise SpecError(
                "table", f"{self.path} lacks 'model_dicts' or 'accuracies'", "is it a table file?"
            ) from e
        self.architectures: list[dict[str, Any]] = [dict(d) for d in dicts]
        self._scores: dict[ArchKey, dict[str, float]] = {}
        for arch, acc in zip(dicts, accs, strict=True):
            scores = {k: float(v) for k, v in (acc or {}).items() if v is not None}
            self._scores[arch_key(arch)] = scores

    @staticmethod
    def table_task(task: str) -> str:
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


@functools.lru_cache(maxsize=8)
def load_table(path: str) -> NasTable:
    """Loads a table once per process (tables are read-only)."""
    return NasTable(path)
