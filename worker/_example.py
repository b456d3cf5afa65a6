"""The unit every data source yields: one labelled example of a task."""

from __future__ import annotations

import dataclasses
import math
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
