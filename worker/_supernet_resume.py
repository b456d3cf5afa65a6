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

Workers that share no folder (Kubernetes pods with their own scratch space) share the progress
through the server: a job asked to end while its lease is live (SIGTERM, a drain) also uploads
the file as an artifact of its trial (``supernet-progress-<fingerprint>.pt``), and a later
attempt downloads the newest such upload of its study when its own folder holds none from a
later trial. A lost machine (SIGKILL) leaves only what its folder holds.

The file, its note and the upload are :class:`~archsearch.worker._progress.ProgressFile`'s.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from archsearch.worker._checkpoints import checkpoint_root
from archsearch.worker._progress import (
    DEFAULT_SAVE_MINUTES,
    ProgressFile,
)
from archsearch.worker._supernet_training import SupernetTraining
from archsearch.worker._trainer import TrainContext, TrialStopped

log = logging.getLogger("archsearch.worker")


def progress_folder(fingerprint: str) -> Path:
    """Where the progress of the candidate with this fingerprint is kept."""
    return checkpoint_root() / "autodistil" / "progress" / fingerprint


def artifact_name(fingerprint: str) -> str:
    """The name a job's progress is uploaded under."""
    return f"supernet-progress-{fingerprint}.pt"


@dataclasses.dataclass(frozen=True)
class Trained:
    """A supernet job's training, done: seconds over every attempt, the step this attempt
    started from (None: the beginning) and its progress file (cleared once the supernet is
    saved)."""

    seconds: float
    resumed_from: int | None
    progress: ProgressFile


def train_resumably(
    run: SupernetTraining,
    context: TrainContext,
    fingerprint: str,
    save_minutes: float = DEFAULT_SAVE_MINUTES,
    report_every: int = 1,
) -> Trained:
    """Trains ``run`` to its last step from the newest progress it can find (the folder, else
    the server), reporting the loss every ``report_every`` steps; saves the progress every
    ``save_minutes`` and, when the trial is asked to end, saves and uploads it before
    re-raising :class:`TrialStopped`."""
    progress = ProgressFile(progress_folder(fingerprint), save_minutes)
    name = artifact_name(fingerprint)
    progress.fetch(context, name)
    before = progress.restore(run)
    start = time.perf_counter() - before.get("seconds", 0.0)
    try:
        while not run.done:
            loss = run.train_step()
            context.check()
            if run.step % report_every == 0 or run.done:
                context.report(run.step, loss)
            if progress.due() and not run.done:
                progress.save(run, time.perf_counter() - start, context)
    except TrialStopped:
        progress.save(run, time.perf_counter() - start, context)
        progress.share(context, name)
        raise
    return Trained(time.perf_counter() - start, before.get("step"), progress)
