"""Search loops ("strategies"), all behind :class:`SearchLoop`, which the server drives."""

from __future__ import annotations

from typing import Any

from archsearch.search._base import SearchLoop
from archsearch.search._optuna_loops import SAMPLER_FACTORIES, OptunaSamplerLoop
from archsearch.search._pruning import (
    PrimaryObjectiveView,
    ServerStudy,
    make_pruner,
    should_prune,
)

LOOPS = tuple(SAMPLER_FACTORIES)


def make_loop(
    name: str, seed: int | None, n_objectives: int, options: dict[str, Any] | None = None
) -> SearchLoop:
    """Builds the loop ``name``; SpecError for unknown names or options."""
    return OptunaSamplerLoop(name, seed, n_objectives, options)


__all__ = [
    "LOOPS",
    "OptunaSamplerLoop",
    "PrimaryObjectiveView",
    "SearchLoop",
    "ServerStudy",
    "make_loop",
    "make_pruner",
    "should_prune",
]
