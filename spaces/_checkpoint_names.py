"""How a kept checkpoint's files are named on the server, shared by the worker that uploads
them and ``archsearch fetch`` that downloads them (torch-free).

A trial that keeps its checkpoint (``recipe.keep_checkpoint``) on a worker connected to a
server uploads every file of the checkpoint folder as an artifact of its trial:
``checkpoint-<file>`` for a one-task trial, ``checkpoint-<task>--<file>`` for each task of a
multi-task trial. Artifact names are 1-128 of ``[A-Za-z0-9._-]``; a file whose name cannot be
written so is not uploaded (the worker logs it).
"""

from __future__ import annotations

import re

#: The note a kept checkpoint folder holds: the candidate, and the step and dev value of the
#: weights kept (``worker/_checkpoints.py``).
NOTE_FILE = "archsearch_checkpoint.json"
#: A LoRA trainer's adapter folder also holds its LoRA settings and rank (``worker/_dylora.py``).
DYLORA_FILE = "dylora.json"
#: A FlexiBERT model's configuration (``worker/_flexibert_config.py``); a transformers model's
#: is ``config.json``.
FLEXIBERT_CONFIG_FILE = "flexibert_config.json"

PREFIX = "checkpoint-"
#: Separates the task from the file in a multi-task trial's names.
TASK_SEPARATOR = "--"
#: Every artifact name the server accepts (``server/_trial_artifacts.py`` checks uploads by it).
ARTIFACT_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}\Z")


def checkpoint_artifact(file: str, task: str | None = None) -> str | None:
    """The artifact name of checkpoint file ``file`` (of ``task`` in a multi-task trial);
    None when no valid artifact name can hold it."""
    if task is not None:
        task = re.sub(r"[^A-Za-z0-9._]", "_", task).strip("_") or "task"
        name = f"{PREFIX}{task}{TASK_SEPARATOR}{file}"
    elif TASK_SEPARATOR in file:  # would read back as a task's file
        return None
    else:
        name = f"{PREFIX}{file}"
    return name if ARTIFACT_NAME_RE.match(name) else None


def parse_checkpoint_artifact(name: str) -> tuple[str | None, str] | None:
    """(task or None, file) of a checkpoint artifact's name; None for any other artifact."""
    if not name.startswith(PREFIX) or len(name) == len(PREFIX):
        return None
    rest = name[len(PREFIX) :]
    task, sep, file = rest.partition(TASK_SEPARATOR)
    if sep and task and file:
        return task, file
    return None, rest


#: ``trial:N`` / ``trial:STUDY:N``: a trial whose kept checkpoint a recipe starts from
_REF = re.compile(r"^trial:(?:(?P<study>.+):)?(?P<number>[0-9]{1,9})\Z")


def parse_trial_ref(text: str, field: str = "recipe.transfer_from") -> tuple[str, int] | None:
    """(study, trial number) of ``"trial:N"`` (study "": this trial's) or
    ``"trial:STUDY:N"``; None for anything else (a path).

    Raises:
        ValueError: ``text`` starts with ``trial:`` but is not one of the two forms.
    """
    if not text.startswith("trial:"):
        return None
    m = _REF.match(text)
    if m is None:
        raise ValueError(
            f"{field} {text[:80]!r}: write trial:N (trial N of this study) or trial:STUDY:N"
        )
    return m.group("study") or "", int(m.group("number"))
