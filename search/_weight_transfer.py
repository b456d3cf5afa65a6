"""FlexiBERT's knowledge transfer for library loops: the neighbour a new candidate starts from.

A proposal gets ``recipe.transfer_from`` = the kept checkpoint of the completed trial whose
weights cover the largest share of the new architecture (``spaces.weight_overlap``), when that
share is at least ``OVERLAP_THRESHOLD`` (0.8, the paper's rule). A checkpoint its worker uploaded
to the server (info ``checkpoint_artifacts``) is named ``"trial:N"`` and any worker downloads
it; otherwise it is the folder on the worker that trained it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from archsearch.search._base import LoopSnapshot
from archsearch.spaces import FlexiBertConvertible, SpecError


def transfer_source(snapshot: LoopSnapshot, arch: Mapping[str, Any]) -> str | None:
    """The kept checkpoint of the completed trial with the largest weight overlap with
    ``arch``, when it reaches ``OVERLAP_THRESHOLD``; None otherwise (also when the space
    has no FlexiBERT form)."""
    from archsearch.spaces import OVERLAP_THRESHOLD, weight_overlap

    space = snapshot.space
    if not isinstance(space, FlexiBertConvertible):
        return None
    target = space.to_flexibert(dict(arch))
    best: tuple[float, str] | None = None
    for t in snapshot.completed:
        if t.architecture is None:
            continue
        checkpoint = t.info.get("checkpoint")
        if not isinstance(checkpoint, str):
            continue
        if t.info.get("checkpoint_artifacts"):  # uploaded to the server: any worker fetches it
            checkpoint = f"trial:{t.number}"
        try:
            overlap = weight_overlap(space.to_flexibert(dict(t.architecture)), target)
        except (SpecError, KeyError, TypeError, ValueError):
            continue
        if best is None or overlap > best[0]:
            best = (overlap, checkpoint)
    if best is None or best[0] < OVERLAP_THRESHOLD:
        return None
    return best[1]
