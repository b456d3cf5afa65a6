"""The hub source: GLUE read from a Hugging Face hub dataset with ``datasets``.

An explicitly online path (DESIGN.md principle 7: never in tests). In offline mode
(``HF_HUB_OFFLINE``) ``datasets`` still answers from its own cache when a split was downloaded
before; otherwise :class:`HubUnavailableError` says what was tried and how to use local data.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from archsearch.spaces import GlueTask, canonical_split, get_task
from archsearch.worker._example import GlueExample, finite_score
from archsearch.worker._glue_dir import GLUE_DIR_ENV

if TYPE_CHECKING:
    import datasets

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


_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}
_GLUE_DIR_FIX = (
    f"pass --glue-dir /path/to/glue_data (or set {GLUE_DIR_ENV}) to read a local glue_data folder"
)
#: How to fix a failure when the hub was asked for by name (``data.source: hub``): a local
#: folder is not read then, so pointing the worker at one is not enough.
HUB_ONLY_FIX = (
    "run the worker online (unset HF_HUB_OFFLINE), or fetch the dataset into the datasets "
    'cache first, or set data.source to "auto" or "dir" to read a local glue_data folder '
    f"(--glue-dir or {GLUE_DIR_ENV})"
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


def one_line_per_message() -> None:
    """``datasets`` and ``huggingface_hub`` each add their own stderr handler and still pass
    their records on: under a program that logs (the worker), every hub warning (its five
    retries of an unreachable host) was printed twice. Their own handlers go then; their
    records keep reaching the program's log."""
    if not logging.getLogger().handlers:
        return
    for name in ("datasets", "huggingface_hub"):
        library = logging.getLogger(name)
        for handler in list(library.handlers):
            if getattr(handler, "stream", None) is sys.stderr and library.propagate:
                library.removeHandler(handler)


def hub_split_name(task: GlueTask, split: str) -> str:
    """The hub's name of ``split``: train, validation, validation_matched/_mismatched (MNLI)."""
    name = canonical_split(task, split)
    if name == "train":
        return "train"
    if name == "dev":
        name = task.dev_splits[0]
    return "validation" + name.removeprefix("dev")


def load_hub_split(
    task_id: str, split: str, dataset: str = DEFAULT_HUB_DATASET, fix: str = _GLUE_DIR_FIX
) -> list[GlueExample]:
    """Reads one labelled split of a GLUE task from a hub dataset with ``datasets``.

    This is the online path: ``datasets.load_dataset(dataset, task_id, split=...)``. In offline
    mode ``datasets`` still answers from its own cache when the split was downloaded before.

    Args:
        task_id: Canonical task id; also the hub config name.
        split: "train", "dev", "dev_matched", "dev_mismatched", or the hub's names
            ("validation", "validation_matched", "validation_mismatched").
        dataset: Hub dataset name with GLUE's configs and columns.
        fix: How to fix a failure to reach the hub, for the error message (default: pass
            ``--glue-dir``).

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

    one_line_per_message()
    try:
        loaded = datasets.load_dataset(dataset, task.id, split=hub_split)
    except _network_errors() as e:
        offline = hub_offline()
        why = f" ({offline} is set and no cached copy exists)" if offline else ""
        raise HubUnavailableError(
            f"could not load GLUE {task.id} {split} from the hub: {tried} failed{why}: "
            f"{type(e).__name__}: {e}. To fix: {fix}"
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
            label: int | float = finite_score(raw, f"{where} row {row}")
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
