"""The note column of ``show``'s trial table: what each trial is beside its values (a
repeat's original, a DyLoRA rank, an AutoDistil proxy row, where a running trial is, where a
pruned one stopped, why one failed), and which trials are ranks or prepared candidates."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from archsearch.v1 import archsearch_pb2 as pb

#: Widest note (a longer failure reason is cut).
NOTE_WIDTH = 48


def is_proxy_row(t: pb.Trial) -> bool:
    """An AutoDistil student's row (stored ``score_kind`` "proxy"): its values are the proxy
    scores its rank job gave it (``derived_from``), not measured; it was never trained."""
    if not t.HasField("derived_from"):
        return False
    return bool(json.loads(t.params_json or "{}").get("target") == "student")


def trial_note(t: pb.Trial, max_steps: Any = None, rank: tuple[int, pb.Trial] | None = None) -> str:
    """The table's note: a repeat's original ("= #2"), a DyLoRA rank trial's rank and training
    trial (``rank``, see :func:`rank_trials_of`: "rank 3 of #2"), an AutoDistil student's proxy
    row ("proxy scores (rank #4)"), where a pruned trial stopped, or why a trial failed."""
    if t.duplicate_of >= 0:
        return f"= #{t.duplicate_of} (repeat)"
    if rank is not None:
        return f"rank {rank[0]} of #{rank[1].number}"
    if is_proxy_row(t):
        return f"proxy scores (rank #{t.derived_from})"
    if t.state == pb.PRUNED and t.intermediate_values:
        of = f" of {max_steps}" if max_steps else ""
        return f"pruned at step {max(t.intermediate_values)}{of}"
    if t.state == pb.RUNNING and (progress := _progress_note(t, max_steps)):
        return progress
    if t.HasField("retry_of") and t.state != pb.FAIL:
        return f"retries #{t.retry_of}"
    reason = t.fail_reason or ""
    return reason if len(reason) <= NOTE_WIDTH else reason[: NOTE_WIDTH - 1] + "…"


def _progress_note(t: pb.Trial, max_steps: Any = None) -> str:
    """Where a running trial is: its last report, a job's progress ("step 40: 1.813", an
    AutoDistil supernet's distillation loss at its own step count) or the objective's last
    intermediate value ("step 40 of 100: 0.8125")."""
    if t.HasField("progress_step"):
        return f"step {t.progress_step}: {t.progress_value:.4g}"
    if not t.intermediate_values:
        return ""
    step = max(t.intermediate_values)
    of = f" of {max_steps}" if max_steps else ""
    return f"step {step}{of}: {t.intermediate_values[step]:.4g}"


def is_prepared(t: pb.Trial) -> bool:
    """A candidate the server stored ready for the next acquire (RUNNING in the storage, so
    that a restart finds it) that no worker holds yet."""
    return t.state == pb.RUNNING and not t.worker_id


def rank_trials_of(trials: Sequence[pb.Trial]) -> dict[int, tuple[int, pb.Trial]]:
    """DyLoRA rank trials (``server/_rank_trials.py``) by number: their rank and training trial.

    The training trial is ``Trial.derived_from``; from a server that does not send it, the
    latest completed trial before the rank trial with its parameters but the rank (rank trials
    are stored with their training trial's completion)."""
    from archsearch.server._rank_trials import RANK_PARAM

    out: dict[int, tuple[int, pb.Trial]] = {}
    trained: dict[str, pb.Trial] = {}
    by_number = {t.number: t for t in trials}
    for t in sorted(trials, key=lambda t: t.number):
        params = json.loads(t.params_json or "{}")
        rank = params.pop(RANK_PARAM, None)
        key = json.dumps(params, sort_keys=True)
        if rank is None:
            if t.state == pb.COMPLETE and t.duplicate_of < 0:
                trained[key] = t
        elif t.HasField("derived_from") and t.derived_from in by_number:  # the server says
            out[t.number] = (int(rank), by_number[t.derived_from])
        elif key in trained:
            out[t.number] = (int(rank), trained[key])
    return out
