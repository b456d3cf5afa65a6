"""Handing out trials: the acquire path of AcquireTrial, from the long poll to the lease.

:class:`Dispatcher` picks a running study whose trainer the worker has, pops a prepared
candidate from its pool (preparing one when none is ready), grants it a lease, and takes the
lease back when the caller gave up before it got the answer. It owns no state of its own
beyond the worker activity map it shares with the pool (which sizes the pool by it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from archsearch.server._errors import OTHER_TRAINER_FIX, STUDY_ENDED, FailedPrecondition
from archsearch.server._index import (
    COMPLETED,
    RUNNING,
    STOPPED_REASON,
    Grant,
    LiveTrial,
    StudyHandle,
)
from archsearch.server._leases import LeaseTable
from archsearch.server._lifecycle import StudyLifecycle
from archsearch.server._pool import CandidatePool
from archsearch.server._registry import StudyRegistry
from archsearch.server._stored_defaults import lora_as_launched

log = logging.getLogger("archsearch.server")


def _always() -> bool:
    return True


def refuse_unservable(h: StudyHandle, trainers: tuple[str, ...]) -> str:
    """Refuses a worker that asks for study ``h`` by name (``--study``) and can never get a
    trial of it: the study completed (its leased trials still finish, their workers report as
    usual), or another trainer trains it. A stopped study is not refused: ``resume`` goes on,
    and a fleet's workers that exited at a stop meant as a pause were gone when it did (SLURM,
    Kubernetes and Ray take exit 0 as done for good). A worker that names no study is never
    refused: it waits for any study it can serve.

    Returns:
        Why the study has no work for the worker now when it is stopped (the worker says it
        once and polls on); "" when it runs.

    Raises:
        FailedPrecondition: what is wrong, in one line, and the fix.
    """
    name = h.spec.name
    why = f" ({h.completed_reason})" if h.completed_reason else ""
    if h.state == COMPLETED:
        raise FailedPrecondition(f"study {name} is completed{why}; {STUDY_ENDED}")
    if h.spec.trainer not in trainers:
        raise FailedPrecondition(
            f"study {name} is trained by the {h.spec.trainer} trainer; this worker runs "
            f"{', '.join(trainers)} ({OTHER_TRAINER_FIX} {h.spec.trainer})"
        )
    if h.state != RUNNING:
        return (
            f"study {name} is {h.state}{why}; this worker waits for `archsearch resume "
            f"{name}` (--idle-exit ends the wait)"
        )
    return ""


class Dispatcher:
    """Hands prepared candidates to workers under fresh leases.

    Args:
        registry: the served studies.
        leases: grants and revokes leases.
        pool: prepares and settles candidates.
        lifecycle: completes studies and fails unrun trials.
        active: worker id -> (last acquire, monotonic; its trainers), shared with the pool.
        work: notified whenever work may have appeared (a launch, a finished trial).
        stopping: set when the server shuts down; waiting acquires return.
        notify: wakes waiting acquires.
        sits_out: whether a worker gets none of a study's trials now (it runs other code
            than the server and failed one of them for good: ``server/_other_code.py``).
        code_of: a worker's code label ("" when unknown), stored with each lease it gets.
        skipping: worker id -> the studies it said it cannot train now (its last acquire's
            ``skip_studies``), shared with the worker directory.
    """

    def __init__(
        self,
        registry: StudyRegistry,
        leases: LeaseTable,
        pool: CandidatePool,
        lifecycle: StudyLifecycle,
        active: dict[str, tuple[float, tuple[str, ...], str]],
        work: threading.Condition,
        stopping: threading.Event,
        notify: Callable[[], None],
        sits_out: Callable[[StudyHandle, str], bool] = lambda _h, _w: False,
        code_of: Callable[[str], str] = lambda _w: "",
        skipping: dict[str, frozenset[str]] | None = None,
    ) -> None:
        self.registry = registry
        self.leases = leases
        self.pool = pool
        self.lifecycle = lifecycle
        self.active = active
        self.work = work
        self.stopping = stopping
        self.notify = notify
        self.sits_out = sits_out
        self.code_of = code_of
        self.skipping = skipping if skipping is not None else {}

    def acquire(
        self,
        worker_id: str,
        trainers: tuple[str, ...],
        study_name: str = "",
        timeout_s: float = 0.0,
        alive: Callable[[], bool] | None = None,
        skip: frozenset[str] = frozenset(),
    ) -> Grant | None:
        """Hands out a trial, waiting up to ``timeout_s`` for one; None means no work.

        Args:
            alive: whether the caller can still receive the answer (the RPC is active and
                its deadline not passed). No lease is granted once it says no, and a lease
                granted meanwhile is taken back at once (the trial stays prepared).
            skip: studies the worker cannot train now (it lacks their data): none of their
                trials, and it is not counted among their workers (``skipping``).
        """
        if study_name:
            self.registry.get(study_name)  # NotFound for an unknown study, before any waiting
        alive = alive or _always
        deadline = time.monotonic() + max(0.0, timeout_s)
        self.active[worker_id] = (time.monotonic(), trainers, study_name)
        if skip:
            self.skipping[worker_id] = skip
        else:
            self.skipping.pop(worker_id, None)
        while True:
            grant = self._try_acquire(worker_id, trainers, study_name, alive, skip)
            if grant is not None:
                return grant
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.stopping.is_set() or not alive():
                return None
            with self.work:
                self.work.wait(timeout=min(remaining, 1.0))

    def _try_acquire(
        self,
        worker_id: str,
        trainers: tuple[str, ...],
        study_name: str,
        alive: Callable[[], bool] = _always,
        skip: frozenset[str] = frozenset(),
    ) -> Grant | None:
        busy: list[StudyHandle] = []  # another call is asking their loops
        for h in self.registry.handles():
            if (study_name and h.spec.name != study_name) or h.spec.name in skip:
                continue
            if h.state != RUNNING or h.spec.trainer not in trainers:
                continue
            if self.sits_out(h, worker_id):
                continue
            grant = self._acquire_from(h, worker_id, alive, busy)
            if grant is not None:
                return grant
        # No other study had work: wait for the busy ones' asks (their candidates may be
        # this worker's), as a call always did.
        for h in busy:
            grant = self._acquire_from(h, worker_id, alive)
            if grant is not None:
                return grant
        return None

    def _acquire_from(
        self,
        h: StudyHandle,
        worker_id: str,
        alive: Callable[[], bool] = _always,
        busy: list[StudyHandle] | None = None,
    ) -> Grant | None:
        """Leases a prepared candidate of ``h`` (preparing one first when none is ready).

        With ``busy``, a study whose loop another call is asking is added to it and skipped
        (None) instead of waited for: a slow loop held every worker's acquire, and so every
        other study's work. Without, the call waits for that ask.

        The hot path is an in-memory pop and one queued lease write; the study lock is held
        only while the index changes, never while the database works, and the RPC answers
        once the lease is committed. A caller that can no longer take the answer (``alive``)
        gets no lease; one that gave up while its lease was written gives it back.
        """
        idx = h.index
        while True:
            if not alive():
                return None
            with h.lock:
                if h.state != RUNNING:
                    return None
                # Queued retries first (Optuna's ask pops them), then a prepared candidate.
                tid = None if idx.waiting or not idx.pool else idx.pool.popleft()
                if tid is not None:
                    live, written = self.leases.grant(h, tid, worker_id, self.code_of(worker_id))
                    break
            # Nothing ready: prepare one here, as the worker waits for it (see ``busy``).
            if not h.ask_lock.acquire(blocking=busy is None):
                assert busy is not None
                busy.append(h)
                return None
            try:
                with h.lock:
                    if h.state != RUNNING:
                        return None
                    if idx.pool and not idx.waiting:
                        continue  # the preparer was faster
                prepared = self.pool.prepare(h)
            finally:
                h.ask_lock.release()
            if prepared is None:
                with h.lock:
                    self.lifecycle.maybe_complete(h)
                return None
            tid = self.pool.settle_prepared(h, prepared)
            if tid is None:
                continue
            with h.lock:
                if h.state != RUNNING:  # stopped while it was prepared
                    idx.live.pop(tid, None)
                    self.lifecycle.fail_unrun(h, tid, STOPPED_REASON)
                    return None
                if not alive():  # keep it for the next worker
                    idx.pool.appendleft(tid)
                    self.notify()
                    return None
                live, written = self.leases.grant(h, tid, worker_id, self.code_of(worker_id))
            break
        try:
            written.result()
        except Exception:
            with h.lock:  # the lease was never stored: the candidate is still free
                if idx.live.get(tid) is live and live.lease_id:
                    live.lease_id = ""
                    idx.pool.appendleft(tid)
            raise
        if not alive():
            self._take_back(h, live)
            return None
        return Grant(
            lease_id=live.lease_id,
            study_name=h.spec.name,
            trial_number=live.number,
            deadline_unix=self.leases.deadline(),
            candidate=lora_as_launched(live.candidate, h.created_at),
            trainer=h.spec.trainer,
            objective_metrics=h.spec.raw_objective_metrics,
            intermediate_metric=h.spec.intermediate_metric,
        )

    def _take_back(self, h: StudyHandle, live: LiveTrial) -> None:
        """Undoes a stored lease whose caller gave up before it got the answer: the trial is
        prepared again (no lease, no heartbeat), first in the pool, instead of RUNNING under a
        lease nobody holds until it expires; a trial of a study stopped by the time the revoke
        is written fails as unrun (a resume queues it again)."""
        idx = h.index
        with h.lock:
            if idx.live.get(live.trial_id) is not live or not live.lease_id:
                return  # already settled otherwise (expired, stopped)
            log.info(
                "trial %d of %s: the worker's call ended before it got the lease; kept for "
                "the next worker",
                live.number,
                h.spec.name,
            )
            # Queued before the pool sees the trial: a later lease's write comes after it.
            undone = self.leases.revoke(live)
            if h.state == RUNNING:
                idx.pool.appendleft(live.trial_id)
        try:
            undone.result()
        except Exception:
            # The lease attribute and heartbeat stay stored, but no worker holds the lease and
            # the index no longer does (the reaper expires only leases the index holds): the
            # trial is settled below all the same; its next grant's write replaces both.
            log.exception("taking back the lease of trial %d failed", live.number)
        # Decided under the lock, as the study is now: a stop and a resume may both have come
        # while the revoke was written; a trial kept out of the pool while the study was
        # stopped was then neither pooled nor failed, and the study never completed.
        with h.lock:
            if (
                idx.live.get(live.trial_id) is live
                and not live.lease_id
                and live.trial_id not in idx.pool
            ):
                if h.state == RUNNING:
                    idx.pool.appendleft(live.trial_id)
                else:
                    idx.live.pop(live.trial_id, None)
                    self.lifecycle.fail_unrun(h, live.trial_id, STOPPED_REASON)
                    self.lifecycle.after_finish(h)
        self.notify()
