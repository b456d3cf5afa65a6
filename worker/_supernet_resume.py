"""Saved progress of a supernet job, so a job that was stopped or lost continues where it was.

A supernet job trains for hours on a real teacher. The worker saves its progress
(:meth:`SupernetTraining.state_dict`: weights, AdamW state, step, losses, random states) into
``<checkpoint root>/autodistil/progress/<candidate fingerprint>/progress.pt`` every
``save_minutes`` of training and when the trial is asked to end (SIGTERM, lease lost, study
stopped). A later attempt at the same candidate (the server's retry, or the same job run
again) on a worker that sees that folder (the same machine, or ``ARCHSEARCH_CHECKPOINT_DIR`` on
a shared file system) restores it and trains only the remaining steps; the result is the one
an uninterrupted job gives. The file goes when the job finishes. A file that cannot be read,
or does not fit the candidate, is logged and ignored: the job starts from the teacher.

torch has no resumable-training helper outside its trainers (``transformers.Trainer`` and
Lightning keep their own), so the few lines of atomic save and checked restore are here.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from archsearch.worker._checkpoints import checkpoint_root
from archsearch.worker._supernet_training import SupernetTraining

log = logging.getLogger("archsearch.worker")

#: Minutes of training between two saves of a supernet job's progress, unless the worker says.
DEFAULT_SAVE_MINUTES = 10.0
FILE = "progress.pt"


def check_save_minutes(value: Any) -> float:
    """``value`` as minutes between saves (0: never save).

    Raises:
        ValueError: Not a finite number ≥ 0; the message names ``--save-minutes``.
    """
    try:
        minutes = float(value)
    except (TypeError, ValueError):
        minutes = math.nan
    if isinstance(value, bool) or not math.isfinite(minutes) or minutes < 0:
        raise ValueError(
            f"--save-minutes {value!r}: give minutes between saves of a supernet job's "
            "progress, a number >= 0 (0: never save)"
        )
    return minutes


def progress_folder(fingerprint: str) -> Path:
    """Where the progress of the candidate with this fingerprint is kept."""
    return checkpoint_root() / "autodistil" / "progress" / fingerprint


class ProgressFile:
    """Restores, saves and clears one supernet job's progress.

    Args:
        folder: The job's :func:`progress_folder`.
        save_minutes: Minutes of training between saves; 0 never saves nor restores.
        clock: Seconds, monotonic (tests pass a fake).
    """

    def __init__(
        self,
        folder: Path,
        save_minutes: float = DEFAULT_SAVE_MINUTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder, self.every_s, self.clock = folder, save_minutes * 60.0, clock
        self.enabled = save_minutes > 0
        self._last = clock()

    @property
    def path(self) -> Path:
        return self.folder / FILE

    def restore(self, run: SupernetTraining) -> dict[str, Any]:
        """Loads the saved progress into ``run``; returns what it saved beside the training
        state (``seconds`` trained before), or ``{}`` when it starts from the beginning."""
        if not self.enabled or not self.path.exists():
            return {}
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            run.load_state_dict(state["training"])
        except Exception as e:  # a torn, foreign or unreadable file: train from the start
            log.warning("ignoring the saved supernet progress %s: %s", self.path, e)
            return {}
        log.info("supernet job continues at step %d from %s", run.step, self.path)
        self._last = self.clock()
        return {"seconds": float(state.get("seconds", 0.0)), "step": run.step}

    def due(self) -> bool:
        """Whether ``save_minutes`` have passed since the last save (or restore)."""
        return self.enabled and self.clock() - self._last >= self.every_s

    def save(self, run: SupernetTraining, seconds: float) -> None:
        """Writes ``run``'s state and ``seconds`` trained so far; replaces the earlier file
        atomically, so a kill while writing leaves the previous one."""
        if not self.enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        staging = self.folder / f".{FILE}.tmp-{os.getpid()}"
        torch.save({"training": run.state_dict(), "seconds": seconds}, staging)
        os.replace(staging, self.path)
        self._last = self.clock()

    def clear(self) -> None:
        """Removes the saved progress (the job finished)."""
        shutil.rmtree(self.folder, ignore_errors=True)
