"""Where a worker keeps what outlives a trial: kept checkpoints and saved progress (no torch, so
the worker's loop can sweep old progress without importing it)."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the folder kept checkpoints and saved progress go under.
CHECKPOINT_DIR_ENV = "ARCHSEARCH_CHECKPOINT_DIR"


def checkpoint_root() -> Path:
    """Where kept checkpoints go: ``$ARCHSEARCH_CHECKPOINT_DIR``, else
    ``~/.cache/archsearch/checkpoints``; each candidate's under its fingerprint (and, for a
    multi-task trial, one folder per task inside that)."""
    named = os.environ.get(CHECKPOINT_DIR_ENV)
    if named:
        return Path(named).expanduser()
    return Path.home() / ".cache" / "archsearch" / "checkpoints"
