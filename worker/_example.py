"""The unit every data source yields: one labelled example of a task."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class GlueExample:
    """One labelled example.

    Attributes:
        texts: The sentence, or the sentence pair, in the task's column order.
        label: Class index (classification) or score (STS-B regression).
    """

    texts: tuple[str, ...]
    label: int | float


def finite_score(raw: Any, where: str) -> float:
    """A regression label as a finite float.

    Raises:
        ValueError: ``raw`` is not a number, or not finite; the message starts with ``where``.
    """
    if isinstance(raw, bool):
        raise ValueError(f"{where}: score {raw!r} is not a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: score {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: score {raw!r} is not finite")
    return value


def not_utf8(path: Path) -> str:
    """Where ``path`` stops being UTF-8 text, as a message: its file, line and byte (what a
    reader's UnicodeDecodeError leaves out), and the fix."""
    data = path.read_bytes()
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return (
            f"{path}:{line}: not UTF-8 text (byte {data[e.start : e.start + 1]!r} at offset "
            f"{e.start}: {e.reason}); save the file as UTF-8"
        )
    return f"{path}: not UTF-8 text; save the file as UTF-8"
