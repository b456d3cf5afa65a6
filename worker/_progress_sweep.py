"""Removes saved progress that no retry came back for (:class:`ProgressSweeper`).

A job's progress (:mod:`~archsearch.worker._progress`) goes when the job finishes, is pruned or
fails, on the machine that finishes it. What stays behind: a copy on a machine whose retry ran
elsewhere (a pod with its own disk uploaded it and another pod finished the job), and the
progress of a trial that was never retried (its study was stopped or deleted meanwhile). A
BERT-base fine-tuning's file is 1.3-1.8 GB, so a long-lived worker would fill its disk. The
sweeper removes a job's progress folder once nothing in it has changed for ``max_age_s``
(default 7 days: a live job rewrites its file every ``--save-minutes``, and a job that continues
from a file touches it once it has loaded it).

The folders it looks at, under the checkpoint root: ``progress/<trainer>/<fingerprint>`` (one
candidate's tasks, finished outcomes included), ``progress/teacher/<key>`` (a task teacher's
fine-tuning), ``progress/pretrain/<key>`` (a FlexiBERT encoder's MLM pre-training) and
``autodistil/progress/<fingerprint>`` (a supernet). Nothing else there (kept
checkpoints, the teacher cache) is touched.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger("archsearch.worker")

#: Default for ``archsearch worker --keep-progress-days``.
DEFAULT_KEEP_DAYS = 7.0
#: How often a running worker looks (a look lists a few folders and reads their times).
SWEEP_EVERY_S = 3600.0


def job_folders(root: Path) -> Iterator[Path]:
    """Every job's progress folder under the checkpoint root ``root``."""
    jobs = root / "progress"  # <trainer, "teacher" or "pretrain">/<fingerprint or key>
    if jobs.is_dir():
        yield from (p for p in jobs.glob("*/*") if p.is_dir())
    supernets = root / "autodistil" / "progress"
    if supernets.is_dir():
        yield from (p for p in supernets.iterdir() if p.is_dir())


def last_change(folder: Path) -> float:
    """The newest modification time of ``folder`` and everything in it (0 when it is gone)."""
    newest = 0.0
    try:
        newest = folder.stat().st_mtime
        for path in folder.rglob("*"):
            newest = max(newest, path.stat().st_mtime)
    except OSError:  # removed while we looked: another worker swept it or the job finished
        pass
    return newest


def sweep(root: Path, max_age_s: float, now: float | None = None) -> list[Path]:
    """Removes every job progress folder under ``root`` unchanged for more than ``max_age_s``
    seconds; returns the folders removed."""
    cutoff = (time.time() if now is None else now) - max_age_s
    removed = []
    for folder in list(job_folders(root)):
        changed = last_change(folder)
        if 0 < changed < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            log.info(
                "removed progress %s: unchanged for %.1f days (--keep-progress-days)",
                folder,
                (cutoff + max_age_s - changed) / 86400,
            )
    return removed


class ProgressSweeper:
    """Sweeps ``root()`` at most every ``every_s`` seconds (the first call sweeps); with
    ``max_age_s`` None it never does.

    Args:
        root: The checkpoint root, read at each sweep (it follows the environment).
        max_age_s: Remove a job's progress unchanged for longer than this.
        every_s: Seconds between sweeps.
        clock: Monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        root: Callable[[], Path],
        max_age_s: float | None = DEFAULT_KEEP_DAYS * 86400,
        every_s: float = SWEEP_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_age_s is not None and not max_age_s > 0:
            raise ValueError(f"max_age_s must be > 0 or None, got {max_age_s}")
        self.root, self.max_age_s, self.every_s, self.clock = root, max_age_s, every_s, clock
        self._last: float | None = None

    def maybe_sweep(self) -> list[Path]:
        """Sweeps when due; returns the folders removed. Errors are logged, never raised."""
        if self.max_age_s is None:
            return []
        now = self.clock()
        if self._last is not None and now - self._last < self.every_s:
            return []
        self._last = now
        try:
            return sweep(self.root(), self.max_age_s)
        except OSError as e:
            log.warning("old progress not swept: %s", e)
            return []
