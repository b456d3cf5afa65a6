"""What a leased trial's worker reports: intermediate values, completion, failure.

Each report is resolved to its trial in one place (:meth:`LeaseTable.resolve`), which also
answers a repeated report the same way; then :class:`TrialOutcomes` stores it, asks the pruner,
re-queues a failed candidate when allowed, and tops the study's pool up.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from archsearch.search import should_prune
from archsearch.server import _dashboard_attrs as dashboard
from archsearch.server import _trial_writes
from archsearch.server._deferred_storage import DeferredTrialStorage
from archsearch.server._derived_trials import completion_extras
from archsearch.server._errors import AlreadyExists, FailedPrecondition, InvalidArgument
from archsearch.server._failure_streak import SAME_FAILURES, same_failure, stop_reason
from archsearch.server._index import HANDED_BACK_ATTR, RUNNING, LiveTrial, StudyHandle
from archsearch.server._leases import WORKER_CODE_ATTR, LeaseTable
from archsearch.server._lifecycle import StudyLifecycle
from archsearch.server._objectives import MAX_TEXT, check_finite, checked_report, objective_values
from archsearch.server._other_code import OtherCode, Reopening, same_report
from archsearch.server._pool import CandidatePool
from archsearch.server._rank_trials import CompletedJob, check_ranks, finish_with_ranks_op
from archsearch.server._retries import Retries
from archsearch.server._student_trials import job_values
from archsearch.server._table_check import table_warning
from archsearch.server._writer import StorageWriter

log = logging.getLogger("archsearch.server")


class TrialOutcomes:
    """Stores what workers report about their leased trials.

    Args:
        rdb: the Optuna RDB storage (heartbeats, attribute writes).
        storage: the server's cached storage.
        writer: the group-commit writer.
        leases: resolves a report's lease.
        lifecycle: finishes trials and completes studies.
        pool: tops a study's prepared candidates up after a trial ends.
        retries: re-queues failed candidates.
        other_code: re-queues, once, a candidate failed for good by a worker that runs other
            code than the server (None: every failure counts as reported).
    """

    def __init__(
        self,
        rdb: optuna.storages.RDBStorage,
        storage: DeferredTrialStorage,
        writer: StorageWriter,
        leases: LeaseTable,
        lifecycle: StudyLifecycle,
        pool: CandidatePool,
        retries: Retries,
        other_code: OtherCode | None = None,
    ) -> None:
        self.rdb = rdb
        self.storage = storage
        self.writer = writer
        self.leases = leases
        self.lifecycle = lifecycle
        self.pool = pool
        self.retries = retries
        self.other_code = other_code

    def report(self, lease_id: str, step: int, value: float) -> tuple[bool, float]:
        """Stores an intermediate value and asks the pruner about the trial (a job of another
        kind than ``train`` stores it as its progress and is never pruned).

        Returns:
            (should_prune, new deadline): a pruned trial's deadline is now; the same report
            about a trial already pruned gets (True, now) again.

        Raises:
            InvalidArgument: ``value`` is not finite or ``step`` is negative.
            NotFound: a lease this server never issued.
            FailedPrecondition: the trial is finished (other than pruned), expired or given up.
        """
        check_finite("value", value)
        if not 0 <= step < 2**62:
            raise InvalidArgument(f"step must be in 0..2**62-1, got {step}")

        def again(_h: StudyHandle, frozen: FrozenTrial) -> tuple[bool, float] | None:
            # a repeated report after the prune decision
            return (True, time.time()) if frozen.state == TrialState.PRUNED else None

        with self.leases.resolve(lease_id, again) as lease:
            h, tid, live = lease.handle, lease.trial_id, lease.live
            if live is None:
                assert lease.answer is not None
                return lease.answer
            # Only a trained candidate's reports are the objective's learning curve: a job
            # (an AutoDistil supernet's distillation loss) keeps its latest report as progress
            # attributes, which neither the pruner nor the dashboard's curve plot reads.
            job = live.candidate.kind != "train"
            op = _trial_writes.progress_op if job else _trial_writes.intermediate_op
            # Value and heartbeat in one queued write, committed without the study lock: held
            # across two transactions of their own (and SQLite's busy waits), it stalled every
            # acquire and completion of the study (the soak's profile, issue 16).
            written = self.writer.submit(op(tid, step, float(value)))
        try:
            written.result()
        except _trial_writes.TrialNotRunning as e:
            raise FailedPrecondition(
                f"trial {live.number} of {h.spec.name} is already {e.state}; stop working on it"
            ) from e
        with h.lock:
            if h.index.live.get(tid) is not live or live.lease_id != lease_id:
                # finished, expired or given up meanwhile: its own call answered for it
                return False, self.leases.deadline()
            final_step = live.candidate.recipe.get("max_steps")
            if not job and should_prune(h.study, self.storage, tid, final_step=final_step):
                h.study.tell(live.number, state=TrialState.PRUNED)
                h.index.live.pop(tid, None)
                last = [float(value)] if len(h.spec.objectives) == 1 else []
                # the curve, which a repeat of the candidate carries (``CandidateStore``)
                curve = dict(self.storage.get_trial(tid).intermediate_values)
                h.index.pruned.setdefault(live.candidate.fingerprint(), (live.number, last, curve))
                log.info("pruned trial %d of %s at step %d", live.number, h.spec.name, step)
                self.lifecycle.after_finish(h)
                pruned = True
            else:
                pruned = False
        if pruned:
            self.pool.top_up(h)
            return True, time.time()
        return False, self.leases.deadline()

    def complete(
        self, lease_id: str, metrics: dict[str, float], info: dict[str, str]
    ) -> tuple[list[float], TrialState]:
        metrics = checked_report(metrics, info)

        def again(h: StudyHandle, frozen: FrozenTrial) -> tuple[list[float], TrialState] | None:
            if frozen.state != TrialState.COMPLETE:
                return None
            if frozen.user_attrs.get("metrics") == metrics:
                return list(frozen.values or []), frozen.state  # the same report again
            raise AlreadyExists(
                f"trial {frozen.number} of {h.spec.name} was already completed with other metrics"
            )

        with self.leases.resolve(lease_id, again) as lease:
            h, tid, live = lease.handle, lease.trial_id, lease.live
            idx = h.index
            if live is None:
                assert lease.answer is not None
                return lease.answer
            if live.candidate.kind == "train":
                check_ranks(live.candidate, metrics)  # rank trials only of ranks it has
                values = objective_values(h.spec, metrics)
            else:  # a supernet or rank job scores no candidate of its own
                values = job_values(h.spec, metrics)
            info = table_warning(h.spec, info)  # a worker's --table that is not the study's
            user = dashboard.completion_attrs(metrics, info)  # JSON, and rows for the dashboard
            self.lifecycle.after_trial_hook(h, tid, TrialState.COMPLETE, values)
            # DyLoRA's ranks, AutoDistil's students, a student's proxy scores: stored with
            # this trial's completion (``_derived_trials``).
            extras = completion_extras(
                CompletedJob(
                    h.spec,
                    h.space,
                    live.number,
                    lambda: self.storage.get_trial(tid),
                    live.candidate,
                    metrics,
                    lambda: self.storage.get_all_trials(h.study_id, deepcopy=False),
                )
            )
            user.update(extras.user_attrs)
            # Metrics, values and state in one queued write; the lock is not held while it
            # commits, and a repeated report meanwhile waits for it (``LeaseTable.resolve``).
            finish = _trial_writes.finish_op(tid, TrialState.COMPLETE, values, user)
            if extras.trials:
                finish = finish_with_ranks_op(finish, h.study_id, extras.trials)
            written: Future[Any] = self.writer.submit(finish)
            idx.live.pop(tid, None)
            idx.finishing[tid] = (lease_id, written, live.fp)
        self._committed(h, tid, live, written)
        for stored in written.result() or ():  # rank trials took these numbers
            self.storage.stored(h.study_id, stored.number)
        with h.lock:
            idx.finishing.pop(tid, None)
            idx.done.setdefault(live.candidate.fingerprint(), (live.number, values, metrics))
            self.lifecycle.after_finish(h)
        self.pool.top_up(h)
        return values, TrialState.COMPLETE

    def fail(self, lease_id: str, reason: str, retryable: bool, released: bool = False) -> bool:
        """Fails a leased trial; re-queues it when allowed. Returns whether it was re-queued."""
        reason = (reason or "no reason given")[:MAX_TEXT]

        def again(h: StudyHandle, frozen: FrozenTrial) -> bool | None:
            stored = str(frozen.user_attrs.get("fail_reason", ""))
            if frozen.state == TrialState.FAIL and same_report(stored, reason):
                return self.leases.retry_of(h, frozen.number) is not None  # the same report again
            return None

        reopening: Reopening | None = None
        with self.leases.resolve(lease_id, again) as lease:
            h, tid, live = lease.handle, lease.trial_id, lease.live
            idx = h.index
            if live is None:
                assert lease.answer is not None
                return lease.answer
            if not retryable and not released and self.other_code is not None:
                worker = self.leases.holder(tid, lease_id)

                def leased_code() -> str:  # a worker met before a restart only
                    stored = self.storage.get_trial(tid).user_attrs.get(WORKER_CODE_ATTR, "")
                    return str(stored)

                reopening = self.other_code.second_opinion(h, live.fp, worker, reason, leased_code)
                if reopening is not None:
                    reason, retryable = reopening.reason, True
            self.lifecycle.after_trial_hook(h, tid, TrialState.FAIL, None)
            # State and reason in one queued write, committed without the study lock (it held
            # the lock across three transactions: 15% of the soak's profile at 200 workers).
            # A repeated call waits for ``settled``: the write and the re-queue both done.
            ended: dict[str, Any] = {"fail_reason": reason}
            if h.cancel_running and not retryable:  # the user's stop, not the candidate's
                ended["cancelled"] = True
            if released:  # not the candidate's failure: counted apart (``handed_back``)
                ended[HANDED_BACK_ATTR] = True
            written: Future[Any] = self.writer.submit(
                _trial_writes.finish_op(tid, TrialState.FAIL, None, ended)
            )
            settled: Future[None] = Future()
            idx.live.pop(tid, None)
            idx.finishing[tid] = (lease_id, settled, live.fp)
        try:
            self._committed(h, tid, live, written)
            if reopening is not None and self.other_code is not None:  # stored: remember it
                self.other_code.remember(h, reopening)
            failed = self.storage.get_trial(tid) if released or retryable else None
            with h.lock:
                idx.finishing.pop(tid, None)
                requeued = failed is not None and self.retries.requeue(
                    h, failed, reason, count=not (released or reopening is not None)
                )
                final = not (requeued or released or h.cancel_running or reopening)
                streak = same_failure(idx, reason) if final and h.state == RUNNING else 0
                self.lifecycle.after_finish(h)
        except BaseException as e:
            settled.set_exception(e)
            raise
        settled.set_result(None)
        if streak >= SAME_FAILURES:
            why = stop_reason(h.spec.name, streak, reason)
            log.warning("study %s %s", h.spec.name, why)
            self.lifecycle.stop_failed(h, why)
        self.pool.top_up(h)
        return requeued

    @staticmethod
    def _committed(h: StudyHandle, tid: int, live: LiveTrial, written: Future[Any]) -> None:
        """Waits for a finishing write queued for ``live``; when it was not stored, undoes the
        in-memory finish (the trial leaves ``finishing``; on a failed write the lease stays
        valid, so the worker may report again).

        Raises:
            FailedPrecondition: the trial was no longer RUNNING; nothing changed.
        """
        idx = h.index
        try:
            written.result()
        except _trial_writes.TrialNotRunning as e:
            with h.lock:
                idx.finishing.pop(tid, None)
            raise FailedPrecondition(
                f"trial {live.number} of {h.spec.name} is already {e.state}; stop working on it"
            ) from e
        except Exception:
            with h.lock:
                idx.finishing.pop(tid, None)
                idx.live[tid] = live
            raise
