"""``archsearch launch`` reads a custom task's files when they are on the launching machine.

The server never reads them (it need not see the workers' files), so a misspelt
``label_field``, a dev label the training file lacks or a row that does not parse was found
by the first worker, after the study had started. Where the files are here (a shared folder,
the usual case), the launch reads them as a worker does and refuses such a spec with the
file and line; where they are not, it says nothing: the workers may have them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def custom_task_problem(spec: dict[str, Any]) -> str:
    """What is wrong with the spec's custom task's files as read here ("" when nothing is,
    or when a file is not on this machine, or the declaration itself is malformed: the
    server says that)."""
    data = spec.get("data")
    declared = data.get("custom_task") if isinstance(data, dict) else None
    if not isinstance(declared, dict):
        return ""
    from archsearch.spaces import SpecError, validate_custom_task

    try:
        task = validate_custom_task(declared)
    except (SpecError, ValueError, TypeError):
        return ""  # the server names the field
    if not all(Path(task.split_path(split)).expanduser().is_file() for split in ("train", "dev")):
        return ""
    from archsearch.worker._custom_files import load_custom_split

    try:
        for split in ("train", "dev"):
            load_custom_split(task, split)
    except (ValueError, SpecError, FileNotFoundError) as e:
        return str(e)
    return ""
