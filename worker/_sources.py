"""Where a task's examples come from: one small interface, three sources, one chooser.

A candidate's ``data`` names its source (``source``: ``auto`` | ``dir`` | ``hub``, and
``hub_dataset``) or declares its own task (``custom_task``); the worker adds its ``--glue-dir``.
:func:`choose_source` turns those into a :class:`DataSource`, and every source maps its rows to
the same :class:`~archsearch.worker._example.GlueExample` list, so the stages after it (the data
selector, tokenising) never know where the data came from.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from archsearch.spaces import CustomTask, GlueTask, canonical_split
from archsearch.worker._custom_files import load_custom_split
from archsearch.worker._example import GlueExample
from archsearch.worker._glue_dir import GLUE_DIR_ENV, GlueDataMissing, load_split, resolve_glue_dir
from archsearch.worker._hub import (
    DEFAULT_HUB_DATASET,
    HUB_ONLY_FIX,
    HubUnavailableError,
    hub_offline,
    load_hub_split,
)
from archsearch.worker._task_info import Task, TaskRef, resolve_task
from archsearch.worker._trainer import CandidateError

#: The values of ``data.source``.
SOURCES = ("auto", "dir", "hub")


class DataSource(abc.ABC):
    """Loads the labelled examples of one task's splits from one place.

    Implementations today:

    * :class:`GlueDirSource`: a local ``glue_data`` folder (GLUE tasks).
    * :class:`HubSource`: a hub dataset with GLUE's configs and columns (GLUE tasks).
    * :class:`CustomSource`: the files a user's own task declares.

    :func:`choose_source` picks one from a candidate's ``data`` and the worker's ``--glue-dir``.
    """

    @abc.abstractmethod
    def load(self, task: Task, split: str) -> list[GlueExample]:
        """The examples of ``split`` of ``task``, in the source's order.

        Args:
            task: The task (a GLUE task, or a custom task for :class:`CustomSource`).
            split: "train", "dev", "dev_matched", "dev_mismatched"; the hub's names
                ("validation", ...) are accepted too.

        Returns:
            The examples. Callers must not mutate the list (it may be cached).

        Raises:
            FileNotFoundError: A local file or folder is missing (the path is named).
            HubUnavailableError: The hub could not be reached (what was tried is named).
            ValueError: Unknown split, a task this source cannot read, or a malformed row.
        """

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the data comes from, in words (logged, and kept in the trial's info)."""


class GlueDirSource(DataSource):
    """A local ``glue_data`` folder (:func:`~archsearch.worker._glue_dir.load_split`).

    Args:
        folder: The folder.
        how: How it was found ("given by --glue-dir", ...), for :meth:`describe`.
    """

    def __init__(self, folder: str | Path, how: str = "") -> None:
        self.folder = Path(folder)
        self.how = how

    def load(self, task: Task, split: str) -> list[GlueExample]:
        glue = _glue_task(task, self)
        return load_split(glue.id, canonical_split(glue, split), self.folder)

    def describe(self) -> str:
        return self.how or f"using GLUE data from {self.folder}"


class HubSource(DataSource):
    """A hub dataset read with ``datasets.load_dataset(dataset, task_id, split=...)``.

    Args:
        dataset: Hub dataset name with GLUE's configs and columns.
        fallback_from: Set when the hub was not asked for by name: why no local folder was
            used (``source: auto`` found none; the message lists where it looked). Put in
            front of a failure's message, so both failures are reported.
    """

    def __init__(self, dataset: str = DEFAULT_HUB_DATASET, fallback_from: str = "") -> None:
        self.dataset = dataset
        self.fallback_from = fallback_from

    def load(self, task: Task, split: str) -> list[GlueExample]:
        glue = _glue_task(task, self)
        if not self.fallback_from:  # asked for by name: a glue_data folder is not a fix
            return load_hub_split(glue.id, split, self.dataset, fix=HUB_ONLY_FIX)
        try:
            return load_hub_split(glue.id, split, self.dataset)
        except HubUnavailableError as e:
            raise HubUnavailableError(f"{self.fallback_from}. Then: {e}") from e

    def describe(self) -> str:
        where = f"hub dataset {self.dataset} (datasets.load_dataset)"
        if self.fallback_from:
            return f"{where}: data.source auto found no glue_data folder"
        return where


class CustomSource(DataSource):
    """The files a user's own task names (:class:`~archsearch.spaces.CustomTask`)."""

    def load(self, task: Task, split: str) -> list[GlueExample]:
        if not isinstance(task, CustomTask):
            raise ValueError(f"the custom source reads custom tasks, not GLUE task {task.id!r}")
        try:
            return load_custom_split(task, split)
        except GlueDataMissing:  # not on this worker: handed back, another may have it
            raise
        except (FileNotFoundError, ValueError) as e:  # the spec's file: a retry reads the same
            raise CandidateError(f"{e} (on this worker)") from e

    def describe(self) -> str:
        return "the custom task's own files"


def choose_source(
    task: Task, data: Mapping[str, Any] | None = None, glue_dir: str | Path | None = None
) -> DataSource:
    """The source of ``task``'s examples for a candidate's ``data`` on this worker.

    A custom task always reads its own files (``source`` and ``hub_dataset`` apply to GLUE
    tasks). For a GLUE task, ``data["source"]`` decides:

    - ``"dir"``: the local ``glue_data`` folder: ``glue_dir`` (``--glue-dir``), else
      ``$ARCHSEARCH_GLUE_DIR``, else ``../shared/data/glue`` next to the checkout or the working
      directory (:func:`~archsearch.worker._glue_dir.resolve_glue_dir`).
    - ``"hub"``: ``data["hub_dataset"]`` (default ``nyu-mll/glue``) from the hub, even when a
      local folder exists. Offline (``HF_HUB_OFFLINE``) it works only from ``datasets``'s cache.
    - ``"auto"`` (default): the local folder when one is found as for ``"dir"``; otherwise the
      hub, unless ``HF_HUB_OFFLINE`` is set. A folder that is named (``--glue-dir``,
      ``$ARCHSEARCH_GLUE_DIR``) but missing is an error, never a reason to go online.
      :meth:`DataSource.describe` says which was used.

    Args:
        task: The task (resolved: a GLUE task or a custom task).
        data: The candidate's data choices; None means all defaults.
        glue_dir: The worker's ``--glue-dir``, or None.

    Raises:
        ValueError: Unknown ``source``.
        FileNotFoundError: ``dir``, or ``auto`` with a named folder, and the folder is missing.
        HubUnavailableError: ``auto`` found no folder and the hub is offline.
    """
    data = data or {}
    if isinstance(task, CustomTask):
        return CustomSource()
    source = data.get("source", "auto")
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; one of {', '.join(SOURCES)}")
    dataset = data.get("hub_dataset") or DEFAULT_HUB_DATASET
    if source == "hub":
        return HubSource(dataset)
    named = None if glue_dir is None else str(glue_dir)
    try:
        return GlueDirSource(*resolve_glue_dir(named))
    except FileNotFoundError as e:
        if source == "dir" or named or os.environ.get(GLUE_DIR_ENV):
            raise  # a named folder is missing: do not silently read other data
        offline = hub_offline()
        if offline:
            raise HubUnavailableError(
                f"{e}. The hub fallback ({dataset}) was not tried because {offline} is set"
            ) from e
        return HubSource(dataset, fallback_from=str(e))


def load_examples(
    task: TaskRef,
    split: str,
    glue_dir: str | Path | None = None,
    source: str = "auto",
    *,
    hub_dataset: str = DEFAULT_HUB_DATASET,
) -> list[GlueExample]:
    """Loads one labelled split of a GLUE task or a custom task, from wherever it lives.

    ``choose_source(task, {"source": source, "hub_dataset": hub_dataset}, glue_dir)`` then
    :meth:`DataSource.load`; see :func:`choose_source` for how the source is chosen.

    Args:
        task: GLUE task id, :class:`~archsearch.spaces.GlueTask`,
            :class:`~archsearch.spaces.CustomTask`, or its JSON declaration.
        split: "train", "dev", "dev_matched", "dev_mismatched", or the hub's names.
        glue_dir: The ``glue_data`` folder, or None for the fallbacks.
        source: "auto", "dir" or "hub".
        hub_dataset: Hub dataset name for the hub source.

    Raises:
        FileNotFoundError: A local file or folder is missing (the path is named).
        HubUnavailableError: The hub was needed and could not be reached, or the hub fallback
            is off because of ``HF_HUB_OFFLINE``; the message lists what was tried.
        ValueError: Unknown task, split or source, or a malformed row.
    """
    if source not in SOURCES:  # checked before the task, as a caller's first mistake
        raise ValueError(f"unknown data source {source!r}; one of {', '.join(SOURCES)}")
    resolved = resolve_task(task)
    data = {"source": source, "hub_dataset": hub_dataset}
    return choose_source(resolved, data, glue_dir).load(resolved, split)


def _glue_task(task: Task, source: DataSource) -> GlueTask:
    if not isinstance(task, GlueTask):
        raise ValueError(
            f"{type(source).__name__} reads GLUE tasks; custom task {task.id!r} reads its own "
            "files (CustomSource)"
        )
    return task
