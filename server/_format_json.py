"""Studies and trials as ``--json`` prints them (``show``, ``studies``, ``wait``): plain
dicts of the RPC messages, with the state names and links the text tables use."""

from __future__ import annotations

import json
from typing import Any

from archsearch.server._format import STUDY_STATE_NAMES, TRIAL_STATE_NAMES
from archsearch.server._trial_notes import is_prepared, is_proxy_row


def study_dict(s: Any, best: bool = True) -> dict[str, Any]:
    """A study as ``--json`` prints it; ``best=False`` leaves out ``best_trials`` (ListStudies
    does not compute them: ``studies --json`` would print an empty list for every study)."""
    out = {
        "name": s.name,
        "state": STUDY_STATE_NAMES[s.state],
        "spec": json.loads(s.spec_json),
        "n_trials": s.n_trials,
        "counts": {
            "complete": s.n_complete,
            "pruned": s.n_pruned,
            "fail": s.n_fail,
            "running": s.n_running,
            "waiting": s.n_waiting,
            "derived": s.n_derived,
            "unrun": s.n_unrun,
            "handed_back": s.n_handed_back,
        },
        "best_trials": [trial_dict(t) for t in s.best_trials],
        "best_trials_left_out": s.best_trials_left_out,
        "created_at": s.created_at,
        "workers_for_trainer": s.workers_for_trainer,
        "connected_trainers": list(s.connected_trainers),
        "completed_reason": s.completed_reason,
    }
    if not best:
        del out["best_trials"], out["best_trials_left_out"]
    return out


def _rank_of(t: Any) -> int | None:
    """A DyLoRA rank trial's training trial from the trial alone (its ``lora_rank`` and
    ``derived_from``), for lists that do not hold the training trial (best trials)."""
    from archsearch.server._rank_trials import RANK_PARAM

    if not t.HasField("derived_from"):
        return None
    return int(t.derived_from) if RANK_PARAM in json.loads(t.params_json or "{}") else None


def trial_dict(t: Any, rank: tuple[int, Any] | None = None) -> dict[str, Any]:
    """A trial as ``show --json`` prints it; a DyLoRA rank trial (``rank``, from
    :func:`rank_trials_of`) names its training trial in ``rank_of``."""
    return {
        "number": t.number,
        "state": TRIAL_STATE_NAMES[t.state],
        # RUNNING in the storage, held by no worker yet: the next acquire's (show: PREPARED)
        "prepared": is_prepared(t),
        "values": list(t.values),
        "params": json.loads(t.params_json or "{}"),
        "metrics": dict(t.metrics),
        "candidate": json.loads(t.candidate_json or "{}"),
        "intermediate_values": {int(k): v for k, v in t.intermediate_values.items()},
        "attempt": t.attempt,
        "worker_id": t.worker_id,
        "fail_reason": t.fail_reason,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
        "duplicate_of": t.duplicate_of if t.duplicate_of >= 0 else None,
        "rank_of": rank[1].number if rank else _rank_of(t),
        "derived_from": t.derived_from if t.HasField("derived_from") else None,
        # an AutoDistil student's row: its values are proxy scores (stored score_kind "proxy")
        "proxy": is_proxy_row(t),
        "description": t.description,
        "info": dict(t.info),
        "retry_of": t.retry_of if t.HasField("retry_of") else None,
    }
