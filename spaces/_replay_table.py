"""A table of measured architectures, as every table format's reader returns it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from archsearch.spaces._base import DesignSpace
from archsearch.spaces._errors import SpecError

DIRECTIONS = ("maximize", "minimize")


@dataclasses.dataclass
class ReplayTable:
    """Rows of measured architectures and the space a loop searches over them.

    Attributes:
        source: Where the rows came from (for messages and reports).
        architectures: The rows' architectures, distinct, in the source's order.
        scores: The score of each row.
        direction: ``maximize`` or ``minimize``: which scores are better.
        space: The design space whose members are exactly the rows.
        metric: What the score is (``accuracy``, ``valid_ppl``, ...).
        repeated: Rows dropped because their architecture came earlier.
        conflicting: How many of those gave another score than the row kept.
        unscored: Rows left out because they have no finite score for ``metric``.
        derived: Trials of a study left out because archsearch derived them from another's
            report (a DyLoRA rank, an AutoDistil student's proxy score): not candidates a
            loop proposed and a worker trained.
    """

    source: str
    architectures: list[dict[str, Any]]
    scores: list[float]
    direction: str
    space: DesignSpace
    metric: str = "score"
    repeated: int = 0
    conflicting: int = 0
    unscored: int = 0
    derived: int = 0

    def __post_init__(self) -> None:
        # a reader's (a plugin format's) table is checked as the built-in readers check
        # theirs: "minimise" reached Optuna as a traceback, a NaN score was replayed
        if self.direction not in DIRECTIONS:
            raise SpecError(
                "table",
                f"{self.source}: direction {self.direction!r} is not one of {list(DIRECTIONS)}",
                "its table format's reader must set maximize or minimize",
            )
        if len(self.scores) != len(self.architectures) or not self.scores:
            raise SpecError(
                "table",
                f"{self.source}: {len(self.architectures)} rows and {len(self.scores)} scores",
                "one finite score per row, at least one row",
            )
        bad = [s for s in self.scores if not _finite(s)]
        if bad:
            raise SpecError(
                "table",
                f"{self.source}: {len(bad)} scores are not finite numbers (first {bad[0]!r})",
                "its reader must leave out (and count as unscored) a row without a score",
            )
        self._by_key = {
            self.key(a): s for a, s in zip(self.architectures, self.scores, strict=True)
        }

    def key(self, architecture: Mapping[str, Any]) -> str:
        """The row key of ``architecture`` (the space's description)."""
        return self.space.describe(dict(architecture))

    def score(self, architecture: Mapping[str, Any]) -> float:
        """The score of the row ``architecture``; KeyError when it is no row."""
        return self._by_key[self.key(architecture)]


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
