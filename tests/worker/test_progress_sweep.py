"""Saved progress that no retry came back for is removed once it has not changed for
``--keep-progress-days``; a job's live progress, kept checkpoints and cached teachers stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from archsearch.worker._progress import ProgressFile
from archsearch.worker._progress_sweep import ProgressSweeper, job_folders, sweep

DAY = 86400.0


def make(root: Path, relative: str, age_days: float, now: float) -> None:
    """A file at ``root/relative`` that, with the folders above it, last changed ``age_days``
    before ``now``."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    stamp = now - age_days * DAY
    while path != root:
        os.utime(path, (stamp, stamp))
        path = path.parent


TEACHER = "progress/teacher/" + "d" * 64
PRETRAIN = "progress/pretrain/" + "p" * 64


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A checkpoint root with old and recent progress of every kind, and other keepsakes."""
    now = time.time()
    make(tmp_path, "progress/bert/aaaa/sst2/progress.pt", 9, now)  # old: a retry ran elsewhere
    make(tmp_path, "progress/bert/bbbb/sst2/progress.pt", 1, now)  # recent: waits for a retry
    make(tmp_path, "progress/lora/cccc/mrpc.done.pt", 9, now)  # a multi-task trial's, old ...
    make(tmp_path, "progress/lora/cccc/stsb/progress.pt", 0.01, now)  # ... its task is live
    make(tmp_path, f"{TEACHER}/progress.pt", 30, now)  # a teacher's fine-tuning
    make(tmp_path, f"{PRETRAIN}/progress.pt", 10, now)  # a FlexiBERT encoder's pre-training
    make(tmp_path, "autodistil/progress/eeee/progress.pt", 8, now)  # a supernet's
    make(tmp_path, "autodistil/progress/ffff/progress.pt", 2, now)
    make(tmp_path, "gggg/model.safetensors", 90, now)  # a kept checkpoint: never swept
    make(tmp_path, "teachers/hhhh/model.safetensors", 90, now)
    return tmp_path


def names(folders: list[Path], root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in folders}


def test_only_job_progress_folders_are_looked_at(root: Path) -> None:
    assert names(list(job_folders(root)), root) == {
        "progress/bert/aaaa",
        "progress/bert/bbbb",
        "progress/lora/cccc",
        TEACHER,
        PRETRAIN,
        "autodistil/progress/eeee",
        "autodistil/progress/ffff",
    }


def test_progress_unchanged_for_longer_than_the_age_is_removed(root: Path) -> None:
    removed = sweep(root, 7 * DAY)
    assert names(removed, root) == {
        "progress/bert/aaaa",
        TEACHER,
        PRETRAIN,
        "autodistil/progress/eeee",
    }
    assert all(not p.exists() for p in removed)
    for kept in ("progress/bert/bbbb", "progress/lora/cccc", "autodistil/progress/ffff"):
        assert (root / kept).is_dir(), kept  # a recent file anywhere inside keeps the job
    assert (root / "gggg/model.safetensors").exists()
    assert (root / "teachers/hhhh/model.safetensors").exists()
    assert names(sweep(root, 0.5 * DAY), root) == {"progress/bert/bbbb", "autodistil/progress/ffff"}


def test_a_missing_root_sweeps_nothing(tmp_path: Path) -> None:
    assert sweep(tmp_path / "nothing here", DAY) == []


def test_the_sweeper_looks_at_most_once_per_period(root: Path) -> None:
    clock = [100.0]
    sweeper = ProgressSweeper(lambda: root, 7 * DAY, every_s=3600, clock=lambda: clock[0])
    assert len(sweeper.maybe_sweep()) == 4  # the first call sweeps
    make(root, "progress/bert/iiii/sst2/progress.pt", 9, time.time())
    clock[0] += 3599
    assert sweeper.maybe_sweep() == []  # not yet due
    assert (root / "progress/bert/iiii").exists()
    clock[0] += 1
    assert names(sweeper.maybe_sweep(), root) == {"progress/bert/iiii"}


def test_a_sweeper_without_an_age_never_removes_anything(root: Path) -> None:
    assert ProgressSweeper(lambda: root, None).maybe_sweep() == []
    assert (root / "progress/bert/aaaa").exists()
    with pytest.raises(ValueError, match="max_age_s"):
        ProgressSweeper(lambda: root, 0)


class Run:
    """The least a ProgressFile can save and restore."""

    def __init__(self) -> None:
        self.step, self.weights = 0, torch.zeros(2)

    def state_dict(self) -> dict[str, object]:
        return {"step": self.step, "weights": self.weights}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.step = int(state["step"])  # type: ignore[call-overload]
        self.weights = state["weights"]  # type: ignore[assignment]


def test_a_job_that_continues_from_old_progress_is_not_swept_under_it(tmp_path: Path) -> None:
    folder = tmp_path / "progress/bert/jjjj/sst2"
    run = Run()
    run.step = 5
    ProgressFile(folder, 10).save(run, seconds=1.0)
    stamp = time.time() - 9 * DAY
    for path in [*folder.iterdir(), folder, folder.parent]:
        os.utime(path, (stamp, stamp))
    assert ProgressFile(folder, 10).restore(Run()) == {"seconds": 1.0, "step": 5}
    assert sweep(tmp_path, 7 * DAY) == []  # the restore touched the file
