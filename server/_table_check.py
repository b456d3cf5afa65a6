"""Whether a ``table`` trial was scored with its study's table: a worker answers with the
score its own ``--table`` recorded, and one started with another table (another file, or
another version of it) gave other scores with nothing said. The worker sends its table's
sha256 (``table_sha256`` info); the server compares it with the study's own table
(``space_options.table``, when it can read it) and says a mismatch in the trial's
``table_warning`` info, which ``show`` lists among the workers' warnings."""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any


@functools.lru_cache(maxsize=32)
def _sha256(path: str, _mtime_ns: int, _size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str) -> str | None:
    """The file's sha256 (cached while its size and modification time stay), or None when
    this machine cannot read it."""
    try:
        stat = os.stat(path)
        return _sha256(path, stat.st_mtime_ns, stat.st_size)
    except OSError:
        return None


def table_warning(spec: Any, info: dict[str, str]) -> dict[str, str]:
    """``info`` with a ``table_warning`` when the worker's table is not the study's."""
    sent = info.get("table_sha256")
    table = (spec.space_options or {}).get("table")
    if not sent or not isinstance(table, str):  # a trainer that answers from a table sends it
        return info
    own = file_sha256(table)
    if own is None or own == sent:
        return info
    return {
        **info,
        "table_warning": (
            f"scored with the worker's table {info.get('table', '?')}, not the study's "
            f"{table} (their contents differ): its score is not this study's table's; start "
            f"the worker with --table {table} (or a copy of it)"
        ),
    }
