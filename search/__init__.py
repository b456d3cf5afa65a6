"""Search loops ("strategies"), all behind :class:`SearchLoop`, which the server drives."""

from __future__ import annotations

from typing import Any

from archsearch.search._base import SearchLoop
from archsearch.search._library_loops import (
    LIBRARY_LOOPS,
    BoshnasLoop,
    CandidateLibrary,
    EmbeddingGPLoop,
    LibraryLoop,
)
from archsearch.search._optuna_loops import SAMPLER_FACTORIES, OptunaSamplerLoop
from archsearch.search._pruning import (
    PrimaryObjectiveView,
    ServerStudy,
    make_pruner,
    should_prune,
)

LOOPS = (*SAMPLER_FACTORIES, *LIBRARY_LOOPS)


def make_loop(
    name: str, seed: int | None, n_objectives: int, options: dict[str, Any] | None = None
) -> SearchLoop:
    """Builds the loop ``name``; SpecError for unknown names or options."""
    if name in LIBRARY_LOOPS:
        return LIBRARY_LOOPS[name](seed, n_objectives, options)
    return OptunaSamplerLoop(name, seed, n_objectives, options)


__all__ = [
    "LIBRARY_LOOPS",
    "LOOPS",
    "BoshnasLoop",
    "CandidateLibrary",
    "EmbeddingGPLoop",
    "LibraryLoop",
    "OptunaSamplerLoop",
    "PrimaryObjectiveView",
    "SearchLoop",
    "ServerStudy",
    "make_loop",
    "make_pruner",
    "should_prune",
]
