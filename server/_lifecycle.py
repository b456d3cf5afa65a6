"""Study state and the ends of trials: completion, stop, and the writes that finish a trial.

A study is running, stopped or completed (its ``archsearch:state`` attribute); it completes when
its budget is spent (or its loop has nothing new) and nothing is live, waiting, finishing or
being prepared. Trials end here: :meth:`StudyLifecycle.finish` is ``Study.tell`` for a trial
this server knows is RUNNING, :meth:`StudyLifecycle.fail_unrun` fails one no worker holds.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from optuna.trial import TrialState

from archsearch.server import _storage, _trial_writes
from archsearch.server._deferred_storage import DeferredTrialStorage
from archsearch.server._index import (
    COMPLETED,
    COMPLETED_REASON_ATTR,
    RUNNING,
    STATE_ATTR,
    STOPPED,
    STOPPED_REASON,
    StudyHandle,
)
from archsearch.server._writer import StorageWriter

log = logging.getLogger("archsearch.server")

#: how the completed reason of a study whose budget was spent begins (``resume`` reads it)
N_TRIALS_REASON = "n_trials reached"


class StudyLifecycle:
    """Sets study states and finishes trials.

    Args:
        storage: the server's Optuna storage.
        writer: the group-commit writer.
        notify: wakes acquires waiting for work.
    """

    def __init__(
        self,
        storage: DeferredTrialStorage,
        writer: StorageWriter,
        notify: Callable[[], None],
    ) -> None:
        self.storage = storage
        self.writer = writer
        self.notify = notify

    def set_state(self, h: StudyHandle, state: str) -> None:
        self.storage.set_study_user_attr(h.study_id, STATE_ATTR, state)
        h.state = state

    def maybe_complete(self, h: StudyHandle) -> None:
        idx = h.index
        if h.state != RUNNING:
            return
        if (
            (idx.originals >= h.spec.n_trials or idx.exhausted)
            and not idx.live
            and not idx.waiting
            and not idx.finishing
            and not idx.preparing
        ):
            reason = idx.exhausted or f"{N_TRIALS_REASON}: {idx.originals} distinct candidates"
            self.storage.set_study_user_attr(h.study_id, COMPLETED_REASON_ATTR, reason)
            h.completed_reason = reason
            self.set_state(h, COMPLETED)
            log.info("study %s completed: %s", h.spec.name, reason)

    def stop_failed(self, h: StudyHandle, reason: str) -> None:
        """Stops ``h`` because its loop failed (``_loop_guard``), as ``archsearch stop`` does,
        and keeps ``reason`` where a completed study keeps its own (``completed_reason``:
        ``show``, ``studies`` and a worker bound to the study read it; resume clears it)."""
        with h.lock:
            if h.state != RUNNING:
                return
            self.storage.set_study_user_attr(h.study_id, COMPLETED_REASON_ATTR, reason)
            h.completed_reason = reason
            self.set_state(h, STOPPED)
            self.end_unrun(h)
        self.notify()

    def after_finish(self, h: StudyHandle) -> None:
        """Index bookkeeping after a trial finished (caller holds ``h.lock``); the caller then
        calls ``CandidatePool.top_up`` after releasing it."""
        self.maybe_complete(h)
        self.notify()

    def end_unrun(self, h: StudyHandle) -> None:
        """Fails every candidate of a stopped study that no worker holds: the prepared pool
        and the queued retries. Caller holds ``h.lock``."""
        idx = h.index
        while idx.pool:
            tid = idx.pool.popleft()
            idx.live.pop(tid, None)
            self.fail_unrun(h, tid, STOPPED_REASON)
        for tid in sorted(idx.waiting):
            idx.waiting.discard(tid)
            self.fail_unrun(h, tid, STOPPED_REASON, expected=TrialState.WAITING)

    def fail_unrun(
        self,
        h: StudyHandle,
        tid: int,
        reason: str,
        expected: TrialState = TrialState.RUNNING,
    ) -> None:
        """Fails a trial no worker holds, with its reason, in one write (nothing when it is no
        longer in the ``expected`` state)."""
        op = _trial_writes.finish_op(
            tid, TrialState.FAIL, None, {"fail_reason": reason}, expected=expected
        )
        with contextlib.suppress(_trial_writes.TrialNotRunning):
            self.writer.run(op)

    def finish(
        self,
        h: StudyHandle,
        tid: int,
        state: TrialState,
        values: list[float] | None,
        user: dict[str, Any] | None = None,
    ) -> None:
        """``Study.tell`` for a trial this server knows is RUNNING, with validated values;
        ``user`` attributes are stored with the state, in one write.

        Raises:
            _trial_writes.TrialNotRunning: the trial is finished already; nothing changed.
        """
        self.after_trial_hook(h, tid, state, values)
        if user:
            self.writer.run(_trial_writes.finish_op(tid, state, values, user))
        else:
            self.storage.set_trial_state_values(tid, state, values)

    def after_trial_hook(
        self, h: StudyHandle, tid: int, state: TrialState, values: list[float] | None
    ) -> None:
        """The sampler's ``after_trial`` hook, as ``Study.tell`` calls it before storing.

        ``tell`` re-reads the trial twice to validate what the server already checked; here the
        hook gets the stored trial only when it does something (the built-in samplers' hooks
        act only on constraint functions, which archsearch never sets; an unknown sampler is
        always called).
        """
        sampler = h.study.sampler
        if _storage.after_trial_acts(sampler):
            sampler.after_trial(h.study, self.storage.get_trial(tid), state, values)
