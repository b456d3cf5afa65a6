"""Converters between protobuf messages and domain objects (the only place that knows both).

Pure functions of frozen values (Optuna's ``FrozenTrial``, ``StudySnapshot``, ``Grant``), in the
manner of OSS Vizier's ``proto_converters``: they never reach the manager or the storage.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Sequence
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from archsearch.server._derived_trials import derived_from
from archsearch.server._errors import InvalidArgument
from archsearch.server._index import (
    COMPLETED,
    RUNNING,
    STOPPED,
    Grant,
    StudySnapshot,
)
from archsearch.server._rank_trials import RANK_OF_ATTR, RANK_PARAM
from archsearch.server._trial_writes import PROGRESS_STEP_ATTR, PROGRESS_VALUE_ATTR
from archsearch.v1 import archsearch_pb2 as pb

TRIAL_STATE_TO_PB = {
    TrialState.RUNNING: pb.RUNNING,
    TrialState.COMPLETE: pb.COMPLETE,
    TrialState.PRUNED: pb.PRUNED,
    TrialState.FAIL: pb.FAIL,
    TrialState.WAITING: pb.WAITING,
}
TRIAL_STATE_FROM_PB = {v: k for k, v in TRIAL_STATE_TO_PB.items()}
STUDY_STATE_TO_PB = {
    RUNNING: pb.STUDY_RUNNING,
    STOPPED: pb.STUDY_STOPPED,
    COMPLETED: pb.STUDY_COMPLETED,
}
DIRECTION_TO_PB = {"maximize": pb.MAXIMIZE, "minimize": pb.MINIMIZE}


def _iso(dt: Any) -> str:
    """RFC 3339 in UTC, as the proto says. Optuna stores naive local times
    (``datetime.now()``), which ``astimezone`` reads as this server's local time; a server
    under ``TZ=America/New_York`` printed them five hours off, with no offset."""
    if dt is None:
        return ""
    return dt.astimezone(datetime.UTC).isoformat(timespec="seconds")


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def trial_to_pb(t: FrozenTrial, searched: Sequence[str] = ()) -> pb.Trial:
    """A stored trial on the wire; ``searched``: the data fields its study searches (its
    description names their values, as ``show`` does)."""
    metrics = t.user_attrs.get("metrics") or {}
    return pb.Trial(
        number=t.number,
        state=TRIAL_STATE_TO_PB[t.state],
        values=list(t.values or []) if t.state == TrialState.COMPLETE else [],
        params_json=_json(t.params),
        candidate_json=_json(t.user_attrs.get("candidate", {})),
        metrics={k: float(v) for k, v in metrics.items()},
        intermediate_values={int(k): float(v) for k, v in t.intermediate_values.items()},
        started_at=_iso(t.datetime_start),
        finished_at=_iso(t.datetime_complete),
        attempt=len(t.system_attrs.get("retry_history", [])),
        fail_reason=str(t.user_attrs.get("fail_reason", "")),
        worker_id=str(t.user_attrs.get("worker", "")),
        duplicate_of=_duplicate_of(t),
        description=_description(t, searched),
        **({"derived_from": n} if (n := derived_from(t)) >= 0 else {}),
        info=_info(t),
        **({"retry_of": n} if (n := _retry_of(t)) >= 0 else {}),
        **_progress(t),
    )


def _progress(t: FrozenTrial) -> dict[str, Any]:
    """A job's latest report (``Trial.progress_step``/``progress_value``), when it made one."""
    step = t.user_attrs.get(PROGRESS_STEP_ATTR)
    value = t.user_attrs.get(PROGRESS_VALUE_ATTR)
    if not isinstance(step, int) or isinstance(step, bool) or not isinstance(value, int | float):
        return {}
    return {"progress_step": step, "progress_value": float(value)}


def _retry_of(t: FrozenTrial) -> int:
    """The trial ``t`` retries (the last of its ``retry_history``), -1 for a first attempt."""
    history = t.system_attrs.get("retry_history") or []
    last = history[-1] if history else -1
    return last if isinstance(last, int) and not isinstance(last, bool) else -1


def _info(t: FrozenTrial) -> dict[str, str]:
    """The worker's ``info`` of a trial (``Trial.info``), as strings."""
    info = t.user_attrs.get("info")
    return {str(k): str(v) for k, v in info.items()} if isinstance(info, dict) else {}


def _description(t: FrozenTrial, searched: Sequence[str] = ()) -> str:
    """What the trial is (``Trial.description``): its stored ``arch`` text with its data
    choices (a joint study's trials read alike without them: ``[selection: random
    size=300]``), or for a DyLoRA rank trial "rank b of #N"."""
    from archsearch.server._format import data_suffix

    arch = t.user_attrs.get("arch")
    if isinstance(arch, str) and arch:
        return arch + data_suffix(t.user_attrs.get("candidate"), searched)
    rank_of = t.user_attrs.get(RANK_OF_ATTR)
    if isinstance(rank_of, int) and RANK_PARAM in t.params:
        return f"rank {t.params[RANK_PARAM]} of #{rank_of}"
    return ""


def _duplicate_of(t: FrozenTrial) -> int:
    """The earlier trial a repeated candidate copies (the ``duplicate_of`` user attribute), -1
    when none."""
    earlier = t.user_attrs.get("duplicate_of")
    return earlier if isinstance(earlier, int) and not isinstance(earlier, bool) else -1


def study_to_pb(snap: StudySnapshot, max_bytes: int | None = None) -> pb.Study:
    """The ``Study`` message of a snapshot (best trials only when the snapshot has them), cut
    to ``max_bytes`` when given (see :func:`_fit`)."""
    counts = snap.counts
    msg = pb.Study(
        name=snap.spec.name,
        spec_json=snap.spec.to_json(),
        state=STUDY_STATE_TO_PB[snap.state],
        objectives=[
            pb.Objective(metric=o.metric, direction=DIRECTION_TO_PB[o.direction])
            for o in snap.spec.objectives
        ],
        n_trials=snap.spec.n_trials,
        n_complete=counts[TrialState.COMPLETE],
        n_pruned=counts[TrialState.PRUNED],
        n_fail=counts[TrialState.FAIL],
        n_running=counts[TrialState.RUNNING],
        n_waiting=counts[TrialState.WAITING],
        n_derived=snap.derived,
        n_unrun=snap.unrun,
        n_handed_back=snap.handed_back,
        completed_reason=snap.completed_reason,
        created_at=snap.created_at,
        workers_for_trainer=snap.connected_trainers.get(snap.spec.trainer, 0),
        connected_trainers=sorted(snap.connected_trainers),
        workers_elsewhere=snap.workers_elsewhere,
        workers_lacking_data=snap.workers_lacking_data,
    )
    searched = tuple(snap.spec.data_space)
    msg.best_trials.extend(trial_to_pb(t, searched) for t in snap.best_trials)
    if max_bytes is not None:
        _fit(msg, max_bytes)
    return msg


def _fit(msg: pb.Study, max_bytes: int) -> None:
    """Cuts ``msg``'s best trials until it is at most ``max_bytes``: first their info, then
    the last of them (counted in ``best_trials_left_out``). A Pareto front of 40 trials with
    64 info entries each outgrew the 4 MiB limit, and GetStudy, StopSearch and ResumeSearch
    answered RESOURCE_EXHAUSTED (the last two after they had stopped or resumed the study)."""
    if msg.ByteSize() <= max_bytes:
        return
    for t in msg.best_trials:
        t.info.clear()
    while msg.best_trials and msg.ByteSize() > max_bytes:
        del msg.best_trials[-1]
        msg.best_trials_left_out += 1


def grant_to_pb(g: Grant | None) -> pb.AcquireTrialResponse:
    if g is None:
        return pb.AcquireTrialResponse(has_trial=False)
    return pb.AcquireTrialResponse(
        has_trial=True,
        lease=pb.Lease(
            lease_id=g.lease_id,
            study_name=g.study_name,
            trial_number=g.trial_number,
            deadline_unix=g.deadline_unix,
        ),
        candidate_json=g.candidate.to_json(),
        trainer=g.trainer,
        objective_metrics=list(g.objective_metrics),
        intermediate_metric=g.intermediate_metric,
    )


def states_from_pb(states: Any) -> list[TrialState]:
    out = []
    for s in states:
        if s not in TRIAL_STATE_FROM_PB:
            raise InvalidArgument(f"states: {s} is not a trial state (use RUNNING..WAITING)")
        out.append(TRIAL_STATE_FROM_PB[s])
    return out


def metrics_from_pb(metrics: Any) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if not math.isfinite(v):
            raise InvalidArgument(f"metric {k!r} must be finite, got {v}")
        out[str(k)] = float(v)
    return out
