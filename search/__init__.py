"""Search loops ("strategies"), all behind :class:`SearchLoop`, which the server drives.

Each loop registers itself in :data:`LOOPS` where it is defined; importing this package imports
every built-in loop module.
"""

from __future__ import annotations

from typing import Any

from archsearch.search._autodistil_loop import AutoDistilLoop
from archsearch.search._base import (
    JOB_KINDS,
    LOOPS,
    LoopFactory,
    LoopSnapshot,
    NoSuggestion,
    SearchLoop,
    Suggestion,
    TrialView,
)
from archsearch.search._boshnas_loop import BoshnasLoop
from archsearch.search._embedding_gp_loop import EmbeddingGPLoop, NumericGPLoop
from archsearch.search._evolution_loop import RegularisedEvolutionLoop
from archsearch.search._library import CandidateLibrary
from archsearch.search._library_loops import LibraryLoop
from archsearch.search._local_search_loop import LocalSearchLoop
from archsearch.search._optuna_loops import SAMPLER_FACTORIES, OptunaSamplerLoop
from archsearch.search._pruning import (
    PrimaryObjectiveView,
    ServerStudy,
    make_pruner,
    should_prune,
)

#: The registered loops that choose among a library of embedded candidates (they need a
#: graph space).
LIBRARY_LOOPS = tuple(
    name for name, f in LOOPS.items() if isinstance(f, type) and issubclass(f, LibraryLoop)
)


def make_loop(
    name: str, seed: int | None, n_objectives: int, options: dict[str, Any] | None = None
) -> SearchLoop:
    """Builds the loop ``name``.

    Raises:
        SpecError: Unknown name (``UnknownName`` lists the registered ones) or bad options.
    """
    return LOOPS[name](seed, n_objectives, options)


__all__ = [
    "JOB_KINDS",
    "LIBRARY_LOOPS",
    "LOOPS",
    "SAMPLER_FACTORIES",
    "AutoDistilLoop",
    "BoshnasLoop",
    "CandidateLibrary",
    "EmbeddingGPLoop",
    "LibraryLoop",
    "LocalSearchLoop",
    "LoopFactory",
    "LoopSnapshot",
    "NoSuggestion",
    "NumericGPLoop",
    "OptunaSamplerLoop",
    "PrimaryObjectiveView",
    "RegularisedEvolutionLoop",
    "SearchLoop",
    "ServerStudy",
    "Suggestion",
    "TrialView",
    "make_loop",
    "make_pruner",
    "should_prune",
]
