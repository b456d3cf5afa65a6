"""``archsearch worker --keep-progress-days``: a worker process removes saved progress that has
not changed for that long from its checkpoint folder, and keeps the rest."""

from __future__ import annotations

import os
import time
from pathlib import Path

from _procs import Proc, ServerProc, table_worker

DAY = 86400.0


def progress(root: Path, relative: str, age_days: float) -> Path:
    """A job's progress folder under ``root`` whose contents last changed ``age_days`` ago."""
    folder = root / relative
    folder.mkdir(parents=True)
    (folder / "progress.pt").write_bytes(b"x")
    stamp = time.time() - age_days * DAY
    for path in (folder / "progress.pt", folder, folder.parent):
        os.utime(path, (stamp, stamp))
    return folder


def test_a_worker_sweeps_progress_older_than_its_limit(tmp_path: Path, procs: list[Proc]) -> None:
    root = tmp_path / "checkpoints"
    old = progress(root, "progress/bert/aaaa/sst2", 3).parent
    recent = progress(root, "progress/bert/bbbb/sst2", 1).parent
    kept_checkpoint = progress(root, "cccc", 30)  # a kept checkpoint, not progress
    server = ServerProc(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "server.log").start()
    procs.append(server)

    worker = table_worker(
        server.address, tmp_path / "w.log", 0.0, "--idle-exit", "1", "--keep-progress-days", "2"
    )
    worker.env["ARCHSEARCH_CHECKPOINT_DIR"] = str(root)
    procs.append(worker.start())
    assert worker.wait(60) == 0  # nothing to do: it sweeps, idles and exits
    assert not old.exists()
    assert recent.is_dir() and kept_checkpoint.is_dir()
    assert "removed progress" in worker.output()
