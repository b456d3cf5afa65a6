"""The finished tasks of a multi-task trial, kept until the trial ends, so that its retry trains
only the tasks it had not finished.

A trial of several tasks (a GLUE average; an autodistil ``rank`` job's proxy tasks) trains
them one after the other (:func:`each_task`). When a task ends,
its outcome (metrics, info, final dev predictions and labels, kept checkpoint's path, training
answers, the intermediate values it sent and its curriculum's state) is written to
``<checkpoint root>/progress/<trainer>/<candidate fingerprint>/<task>.done.pt``; the task in
progress keeps its own :class:`~archsearch.worker._progress.ProgressFile` beside it. A retry on
a worker that sees that folder reuses each finished task's outcome (sending its intermediate
values again, to the new trial) and continues the task in progress. The folder goes when the
trial ends. An outcome whose checkpoint folder is gone, or that cannot be read, is trained
again.

Workers that share no folder pass the outcomes through the server: a trial asked to end
uploads each finished task's outcome as an artifact of its trial
(``done-<trainer>-<fingerprint>-<task>.pt``, a few kilobytes: metrics, dev predictions), beside
the task in progress's file, and a retry whose folder lacks an outcome downloads the newest
upload of its study. A finished task's kept checkpoint (``recipe.keep_checkpoint``) goes with
it: each file of its folder as ``done-<trainer>-<fingerprint>-<task>--<file>``, uploaded
before the outcome (which then lists them), and a retry on a machine without that folder
downloads them into its own checkpoint folder for the task. A checkpoint that cannot be
uploaded whole (a refusal, a stop that ends first) leaves its outcome unshared: another machine
trains that task again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from archsearch.spaces._checkpoint_names import ARTIFACT_NAME_RE
from archsearch.worker._trainer import CandidateError, TrainContext, TrialPruned, TrialStopped

if TYPE_CHECKING:
    from archsearch.worker._curriculum import Curriculum
    from archsearch.worker._task_training import TaskOutcome

log = logging.getLogger("archsearch.worker")

SUFFIX = ".done.pt"


class FinishedTasks:
    """The outcomes a multi-task trial's tasks left in ``folder`` (its candidate's progress
    folder); ``share_prefix`` starts the names of their uploads (none when empty)."""

    def __init__(
        self, folder: Path, share_prefix: str = "", checkpoints: Path | None = None
    ) -> None:
        self.folder, self.share_prefix = folder, share_prefix
        #: This machine's folder of the candidate's kept checkpoints (one per task in it).
        self.checkpoints = checkpoints

    def _path(self, task_id: str) -> Path:
        return self.folder / f"{task_id}{SUFFIX}"

    def artifact(self, task_id: str) -> str:
        """The artifact name ``task_id``'s outcome is uploaded under."""
        return f"{self.share_prefix}{_safe(task_id)}.pt"

    def checkpoint_artifact(self, task_id: str, file: str) -> str | None:
        """The artifact name of file ``file`` of ``task_id``'s kept checkpoint; None when no
        valid artifact name holds it."""
        name = f"{self.share_prefix}{_safe(task_id)}--{file}"
        return name if ARTIFACT_NAME_RE.match(name) else None

    def share(self, context: TrainContext) -> None:
        """Uploads every finished task's outcome, after its kept checkpoint's files, as
        artifacts of ``context``'s trial (when a server is behind it); a refusal is logged."""
        if not (self.share_prefix and context.has_server and self.folder.is_dir()):
            return
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            task_id = path.name[: -len(SUFFIX)]
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                if state["checkpoint"] is not None:
                    state["checkpoint_files"] = self._share_checkpoint(
                        task_id, Path(state["checkpoint"]), context
                    )
                    self._write(path, state)
                context.upload(path, self.artifact(task_id))
            except Exception as e:  # unreadable, refused: the stop must still hand back
                log.warning("outcome of finished task %s not uploaded: %s", task_id, e)

    def _share_checkpoint(self, task_id: str, folder: Path, context: TrainContext) -> list[str]:
        """Uploads each file of ``task_id``'s kept checkpoint ``folder``; returns their names.

        Raises:
            ValueError: The folder is gone, or a file has a name no artifact name holds.
        """
        if not folder.is_dir():
            raise ValueError(f"its checkpoint {folder} is gone")
        files = sorted(p for p in folder.iterdir() if p.is_file())
        for file in files:
            name = self.checkpoint_artifact(task_id, file.name)
            if name is None:
                raise ValueError(f"no artifact name holds its checkpoint file {file.name!r}")
            context.upload(file, name)
        return [file.name for file in files]

    def _fetch_checkpoint(
        self, task_id: str, files: list[str], context: TrainContext
    ) -> str | None:
        """Downloads ``task_id``'s kept checkpoint (``files``, shared with its outcome) from
        the newest trial of the study holding them into this machine's checkpoint folder for
        the task; its path, or None when it cannot be had (the task is then trained)."""
        if not (files and self.checkpoints is not None and context.has_server):
            return None
        from archsearch.server.client import ClientError

        names = [self.checkpoint_artifact(task_id, file) or "" for file in files]
        dest = self.checkpoints / task_id
        staging = dest.with_name(f".{dest.name}.download-{os.getpid()}")
        try:
            holder = context.newest_holder(names[0])
            if holder is None:
                return None
            staging.mkdir(parents=True, exist_ok=True)
            for file, name in zip(files, names, strict=True):
                context.download(holder, name, staging / file)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(staging, dest)
        except (ClientError, OSError, RuntimeError) as e:
            log.warning("kept checkpoint of finished task %s not downloaded: %s", task_id, e)
            return None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("kept checkpoint of task %s downloaded from trial %d", task_id, holder)
        return str(dest)

    def _fetch(self, task_id: str, context: TrainContext) -> None:
        """Downloads the newest upload of ``task_id``'s outcome in ``context``'s study into the
        folder; failures are logged (the task is then trained)."""
        if not (self.share_prefix and context.has_server and context.study_name):
            return
        from archsearch.server.client import ClientError

        name = self.artifact(task_id)
        try:
            newest = context.newest_holder(name)
            if newest is None:
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            staging = self.folder / f".{task_id}{SUFFIX}.download-{os.getpid()}"
            context.download(newest, name, staging)
            os.replace(staging, self._path(task_id))
            log.info("outcome of task %s downloaded from trial %d", task_id, newest)
        except (ClientError, OSError, RuntimeError) as e:
            log.warning("outcome of finished task %s not downloaded: %s", task_id, e)

    def save(self, task_id: str, outcome: TaskOutcome, curriculum: Curriculum | None) -> None:
        """Keeps ``outcome`` of ``task_id`` (and its curriculum's state), written atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {
            "metrics": dict(outcome.metrics),
            "checkpoint": outcome.checkpoint,
            "predictions": torch.from_numpy(np.ascontiguousarray(outcome.predictions)),
            "labels": torch.from_numpy(np.ascontiguousarray(outcome.labels)),
            "info": dict(outcome.info),
            "answers": None if outcome.answers is None else torch.from_numpy(outcome.answers),
            "reported": [[step, value] for step, value in outcome.reported],
            "curriculum": curriculum.state_dict() if curriculum is not None else None,
        }
        self._write(self._path(task_id), state)

    def _write(self, path: Path, state: dict[str, Any]) -> None:
        staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        torch.save(state, staging)
        os.replace(staging, path)

    def load(
        self, task_id: str, context: TrainContext, curriculum: Curriculum | None
    ) -> TaskOutcome | None:
        """``task_id``'s kept outcome, with its intermediate values sent again through
        ``context`` and its curriculum's state restored; None when there is none to use (the
        task is then trained).

        Raises:
            TrialStopped: A value sent again pruned the trial.
        """
        from archsearch.worker._task_training import TaskOutcome

        path = self._path(task_id)
        if not path.exists():
            self._fetch(task_id, context)
        if not path.exists():
            return None
        try:
            state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
            checkpoint = state["checkpoint"]
            if checkpoint is not None and not Path(checkpoint).exists():
                # written on another machine: its files came with the outcome, if it shared
                checkpoint = self._fetch_checkpoint(
                    task_id, list(state.get("checkpoint_files") or []), context
                )
                if checkpoint is None:
                    raise ValueError(f"its checkpoint {state['checkpoint']} is gone")
            outcome = TaskOutcome(
                metrics={k: float(v) for k, v in state["metrics"].items()},
                checkpoint=checkpoint,
                predictions=state["predictions"].numpy(),
                labels=state["labels"].numpy(),
                info={k: str(v) for k, v in state["info"].items()},
                answers=None if state["answers"] is None else state["answers"].numpy(),
                reported=[(int(s), float(v)) for s, v in state["reported"]],
            )
            if curriculum is not None and state["curriculum"] is not None:
                curriculum.load_state_dict(state["curriculum"])
        except Exception as e:  # a torn or foreign file: train the task again
            log.warning("training %s again: its kept outcome %s is unusable: %s", task_id, path, e)
            return None
        log.info("task %s was finished by an earlier attempt: its outcome is reused", task_id)
        with contextlib.suppress(OSError):  # in use again: not old progress to sweep away
            os.utime(path)
        for step, value in outcome.reported:
            context.report(step, value)
        return outcome

    def clear(self) -> None:
        """Removes the folder (the trial ended)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def each_task(
    finished: FinishedTasks | None,
    task_ids: Sequence[str],
    context: TrainContext,
    train: Callable[[str], TaskOutcome],
    curricula: Mapping[str, Curriculum | None] | None = None,
) -> dict[str, TaskOutcome]:
    """``train(task_id)`` for each task in turn, by task id. With ``finished`` (a multi-task
    job), a task an earlier attempt finished is not trained again, each task is kept as it
    ends, a job asked to end uploads what it finished (for a retry elsewhere), and one that
    ends for good (pruned, a bad candidate) clears them. ``curricula`` (by task id) are saved
    and restored with the outcomes."""
    outcomes = {}
    try:
        for task_id in task_ids:
            curriculum = (curricula or {}).get(task_id)
            outcome = finished.load(task_id, context, curriculum) if finished else None
            if outcome is None:
                outcome = train(task_id)
                if finished is not None:
                    finished.save(task_id, outcome, curriculum)
            outcomes[task_id] = outcome
    except (CandidateError, TrialPruned):
        if finished is not None:  # the job ends for good: nothing to continue
            finished.clear()
        raise
    except TrialStopped:
        if finished is not None:  # for a retry on a machine that does not see the folder
            finished.share(context)
        raise
    return outcomes


def _safe(task_id: str) -> str:
    """A task id as part of an artifact name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", task_id)[:40]
