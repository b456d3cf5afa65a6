"""What a library loop reads from a snapshot: its trials as library rows, observed or in flight."""

from __future__ import annotations

from typing import Any

import numpy as np

from archsearch.search._base import LoopSnapshot, TrialView
from archsearch.search._library import CandidateLibrary, JointRows
from archsearch.spaces import DesignSpace, SpecError

#: System attributes of a trial a library loop proposed: its library row, and why it was
#: chosen (``Proposal.kind``; BOSHNAS derives its aleatoric phase from the history of kinds).
LOOP_ATTR = "archsearch:library_row"
KIND_ATTR = "archsearch:proposal_kind"


def in_flight_rows(snapshot: LoopSnapshot, joint: JointRows) -> list[int]:
    """Rows (library row with data choice, :class:`JointRows`) of the trials in flight
    that this loop proposed."""
    out = []
    for t in snapshot.trials:
        row = t.attrs.get(LOOP_ATTR)
        if t.active and isinstance(row, int) and 0 <= row < len(joint.lib):
            index = joint.index_of(row, t)
            if index is not None:
                out.append(index)
    return out


def history(
    snapshot: LoopSnapshot, joint: JointRows
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, int]:
    """Observed rows (in the order their results arrived), their raw objective values
    and proposal kinds, every row any trial holds (observed, in flight or failed), and how
    many rows proposed at random are in flight (part of the initial design). A row is a
    library row with a data choice (:class:`JointRows`)."""
    n_obj = len(snapshot.directions)
    done: list[tuple[Any, int, int, list[float], str]] = []
    done_rows: set[int] = set()  # a re-trained row (a retry) is one observation
    excluded: set[int] = set()
    random_in_flight = 0
    for t in snapshot.trials:
        lib_row = row_of(t, snapshot.space, joint.lib)
        row = None if lib_row is None else joint.index_of(lib_row, t)
        if row is None:
            continue
        excluded.add(row)
        if t.active and t.attrs.get(KIND_ATTR) == "random":
            random_in_flight += 1
        if t.state == "COMPLETE" and t.values is not None:
            vals = [float(v) for v in t.values]
            if len(vals) == n_obj and all(np.isfinite(vals)) and row not in done_rows:
                done_rows.add(row)
                kind = str(t.attrs.get(KIND_ATTR, "random"))
                done.append((t.completed_at, t.number, row, vals, kind))
    done.sort(key=lambda d: (d[0] is None, d[0] or 0, d[1]))
    return (
        np.asarray([d[2] for d in done], dtype=np.int64),
        np.asarray([d[3] for d in done], dtype=np.float64).reshape(len(done), n_obj),
        [d[4] for d in done],
        np.asarray(sorted(excluded), dtype=np.int64),
        random_in_flight,
    )


def row_of(t: TrialView, space: DesignSpace, lib: CandidateLibrary) -> int | None:
    """The library row of trial ``t``: the one it was proposed as, else the row of its
    architecture (None when it has none or the library does not hold it)."""
    row = t.attrs.get(LOOP_ATTR)
    if isinstance(row, int) and 0 <= row < len(lib):
        return row
    try:
        if t.architecture is not None:
            arch = space.validate(dict(t.architecture))
        elif t.params:
            arch = space.from_params(t.params)
        else:
            return None
    except (SpecError, ValueError, KeyError):
        return None
    return lib.row(arch)
