"""A job's saved progress on disk (and through the server), so a stopped or lost job continues.

:class:`ProgressFile` keeps one job's state (anything with ``state_dict``,
``load_state_dict`` and ``step``: a supernet's training, a :class:`TrainingLoop`'s) in
``<folder>/progress.pt``, written atomically, with a note of the study, trial and step beside
it. A job asked to end while its lease is live can also upload the file as an artifact of its
trial, and a later attempt on a worker that shares no folder downloads the newest such upload
of its study. A file that cannot be read, or does not fit, is logged and ignored: the job then
starts from the beginning.

torch has no resumable-training helper outside its trainers (``transformers.Trainer`` and
Lightning keep their own), so the few lines of atomic save and checked restore are here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from archsearch.worker._trainer import TrainContext

log = logging.getLogger("archsearch.worker")


class Resumable(Protocol):
    """A job whose progress can be saved and restored."""

    @property
    def step(self) -> int: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


#: Minutes of training between two saves of a job's progress, unless the worker says.
DEFAULT_SAVE_MINUTES = 10.0
FILE = "progress.pt"
#: Beside the file: which study and trial saved it, at which step.
NOTE = "progress.json"


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
            f"--save-minutes {value!r}: give minutes between saves of a training job's "
            "progress, a number >= 0 (0: never save)"
        )
    return minutes


class ProgressFile:
    """Restores, saves and clears one job's progress.

    Args:
        folder: The job's own folder (one job per folder).
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

    def restore(self, run: Resumable) -> dict[str, Any]:
        """Loads the saved progress into ``run``; returns what it saved beside the training
        state (``seconds`` trained before), or ``{}`` when it starts from the beginning."""
        if not self.enabled or not self.path.exists():
            return {}
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            run.load_state_dict(state["training"])
        except Exception as e:  # a torn, foreign or unreadable file: train from the start
            log.warning("ignoring the saved progress %s: %s", self.path, e)
            return {}
        log.info("the job continues at step %d from %s", run.step, self.path)
        with contextlib.suppress(OSError):  # in use again: not old progress to sweep away
            os.utime(self.path)
        self._last = self.clock()
        return {"seconds": float(state.get("seconds", 0.0)), "step": run.step}

    def due(self) -> bool:
        """Whether ``save_minutes`` have passed since the last save (or restore)."""
        return self.enabled and self.clock() - self._last >= self.every_s

    def save(self, run: Resumable, seconds: float, context: TrainContext | None = None) -> None:
        """Writes ``run``'s state and ``seconds`` trained so far; replaces the earlier file
        atomically, so a kill while writing leaves the previous one. ``context`` (its study
        and trial) is noted beside it. A save that fails (a full disk, a folder that cannot be
        written) is logged and training goes on: the earlier file, if any, stays; the next
        save is tried ``save_minutes`` later."""
        if not self.enabled:
            return
        self._last = self.clock()
        staging = self.folder / f".{FILE}.tmp-{os.getpid()}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            torch.save(
                {"training": run.state_dict(), "seconds": seconds, "step": run.step}, staging
            )
            os.replace(staging, self.path)
            self._note(context, run.step)
        except (OSError, RuntimeError) as e:  # torch reports a failed write as RuntimeError
            with contextlib.suppress(OSError):
                staging.unlink()
            log.warning("progress not saved to %s (training goes on): %s", self.folder, e)
            return
        self._last = self.clock()

    def share(self, context: TrainContext, name: str) -> None:
        """Uploads the saved file as artifact ``name`` of ``context``'s trial (when a server is
        behind it); a refusal (too large for the server, the lease gone) is logged."""
        if not (self.enabled and context.has_server and self.path.exists()):
            return
        from archsearch.server.client import ClientError

        try:
            context.upload(self.path, name)
        except (ClientError, OSError, RuntimeError) as e:
            log.warning(
                "progress not uploaded (%s): only a worker that sees %s can continue this job",
                e,
                self.folder,
            )
        else:
            log.info("progress uploaded as %s", name)

    def fetch(self, context: TrainContext, name: str) -> None:
        """Downloads the newest upload ``name`` of ``context``'s study into the folder, unless
        the folder's own file comes from that trial or a later one of the study, or is further
        on (more steps: the folder may hold another study's progress of the same job, as a
        task teacher's is). Failures are logged (the job then starts from what the folder
        holds)."""
        if not (self.enabled and context.has_server and context.study_name):
            return
        from archsearch.server.client import ClientError

        try:
            newest = context.newest_holder(name)
            if newest is None:
                return
            note = self._read_note()
            local = note.get("trial") if note.get("study") == context.study_name else None
            if self.path.exists() and isinstance(local, int) and local >= newest:
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            staging = self.folder / f".{FILE}.download-{os.getpid()}"
            context.download(newest, name, staging)
            theirs, mine = _saved_step(staging), note.get("step")
            # keep ours when it is further on, or when the download cannot be read
            if self.path.exists() and isinstance(mine, int) and (theirs is None or theirs < mine):
                staging.unlink()
                log.info(
                    "kept the progress in %s (step %d) over trial %s:%d's (%s)",
                    self.folder,
                    mine,
                    context.study_name,
                    newest,
                    "unreadable" if theirs is None else f"step {theirs}",
                )
                return
            os.replace(staging, self.path)
            self._write_note({"study": context.study_name, "trial": newest, "step": theirs})
            log.info("progress of trial %s:%d downloaded", context.study_name, newest)
        except (ClientError, OSError, RuntimeError) as e:
            log.warning("progress not downloaded: %s", e)

    def _note(self, context: TrainContext | None, step: int) -> None:
        note: dict[str, Any] = {"step": step}
        if context is not None and context.trial_number is not None:
            note.update(study=context.study_name, trial=context.trial_number)
        self._write_note(note)

    def _write_note(self, note: dict[str, Any]) -> None:
        (self.folder / NOTE).write_text(json.dumps(note))

    def _read_note(self) -> dict[str, Any]:
        try:
            note = json.loads((self.folder / NOTE).read_text())
        except (OSError, ValueError):
            return {}
        return note if isinstance(note, dict) else {}

    def clear(self) -> None:
        """Removes the saved progress (the job finished), and its parent folder when that is
        left empty (a candidate's folder of per-task progress)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.folder.parent.rmdir()


def _saved_step(path: Path) -> int | None:
    """The step a saved progress file is at: -1 when it does not say (a file saved before
    files said), None when it cannot be read. Reads the file memory-mapped, so its tensors are
    not loaded."""
    try:
        step = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("step")
    except Exception:  # torn, foreign, not a torch file
        return None
    return step if isinstance(step, int) else -1
