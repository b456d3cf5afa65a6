"""Kept checkpoints: where they go and how one is written.

Imports torch (through the loop) at module level; ``archsearch.worker`` does not import it
eagerly.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from archsearch.spaces import Candidate
from archsearch.spaces._checkpoint_names import NOTE_FILE
from archsearch.worker._checkpoint_dir import CHECKPOINT_DIR_ENV, checkpoint_root
from archsearch.worker._loop import TrainingLoop

__all__ = ["CHECKPOINT_DIR_ENV", "NOTE_FILE", "checkpoint_root", "save_checkpoint"]


def save_checkpoint(
    model: torch.nn.Module,
    loop: TrainingLoop,
    folder: Path,
    candidate: Candidate,
    tokenizer: Any,
    write_weights: Callable[[Path], None] | None = None,
    final: bool = False,
) -> Path:
    """Writes the best evaluated weights, the tokenizer and a note of which step and value
    they come from; replaces an earlier folder atomically.

    Args:
        write_weights: Writes the weights into the staging folder it is given; default the
            model's ``save_pretrained`` with the loop's best state (a LoRA trainer writes its
            adapter instead).
        final: ``write_weights`` writes the final weights, not the best evaluated ones (a
            DyLoRA trial: every rank was scored on the final weights); the note says so.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    if write_weights is not None:
        write_weights(staging)
    else:
        # best_state is None only when no evaluation scored a number (all NaN): keep the last.
        pretrained: Any = model
        pretrained.save_pretrained(staging, state_dict=loop.best_state)
    tokenizer.save_pretrained(str(staging))
    kept_best = loop.best_state is not None and not final
    note = {
        "candidate": candidate.to_dict(),
        "task": loop.task.id,  # of a multi-task candidate: the task these weights are for
        "metric": loop.select_metric,
        "value": loop.best_value if kept_best else None,
        "step": loop.best_step if kept_best else loop.recipe["max_steps"],
        **({"final": True} if final else {}),
    }
    (staging / NOTE_FILE).write_text(json.dumps(note, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)
    return folder
