"""Retries and the lease reaper.

A failed trial's candidate is re-queued as a WAITING trial with the same parameters and
candidate (Optuna's ``failed_trial``/``retry_history`` attributes, so
``RetryHeartbeatStaleTrialCallback``'s helpers work), up to the study's ``max_retries``
failures (``archsearch:failures``). The reaper thread fails the trials whose lease expired
(Optuna's stale-trial query, through the storage boundary; ``fail_stale_trials`` where that is
missing), each with its ``fail_reason`` in the same write as its state, and completes studies
that are done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from archsearch.server import _dashboard_attrs as dashboard
from archsearch.server import _storage, _trial_writes
from archsearch.server._deferred_storage import DeferredTrialStorage
from archsearch.server._index import (
    FAILURES_ATTR,
    LOOP_ATTRS_ATTR,
    RETRY_ON_RESUME_ATTR,
    RUNNING,
    StudyHandle,
)
from archsearch.server._leases import LeaseTable
from archsearch.server._lifecycle import StudyLifecycle
from archsearch.server._logsafe import loggable
from archsearch.server._rpc import storage_down
from archsearch.server._writer import StorageWriter

log = logging.getLogger("archsearch.server")

#: Hand-backs of one candidate that do not count against its retries; the next ones do.
MAX_HANDBACKS = 20


class Retries:
    """Re-queues failed candidates and reaps expired leases.

    Args:
        rdb: the RDB storage (Optuna's stale-trial query).
        storage: the server's Optuna storage.
        writer: the group-commit writer.
        leases: the lease table (restart grace, expiry reason).
        lifecycle: finishes trials and completes studies.
        handles: every served study.
        handle_named: the served study of a name (None when not served).
        notify: wakes acquires waiting for work.
        interval_s: how often the reaper looks for expired leases.
    """

    def __init__(
        self,
        rdb: optuna.storages.RDBStorage,
        storage: DeferredTrialStorage,
        writer: StorageWriter,
        leases: LeaseTable,
        lifecycle: StudyLifecycle,
        handles: Callable[[], list[StudyHandle]],
        handle_named: Callable[[str], StudyHandle | None],
        notify: Callable[[], None],
        interval_s: float,
    ) -> None:
        self.rdb = rdb
        self.storage = storage
        self.writer = writer
        self.leases = leases
        self.lifecycle = lifecycle
        self._handles = handles
        self._handle_named = handle_named
        self.notify = notify
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Starts the reaper thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="lease-reaper", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stops the reaper thread, waiting up to 10 s for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def requeue(self, h: StudyHandle, failed: FrozenTrial, reason: str, count: bool) -> bool:
        """Adds a WAITING copy of ``failed``; False when its retry budget is spent.

        A hand-back (``count`` False) counts all the same once the candidate was handed back
        :data:`MAX_HANDBACKS` times: a worker that takes and gives back the same candidate in
        a loop (a crash loop, a client's bug) grew the study by a trial each time, for ever.
        """
        attempts = len(failed.system_attrs.get("retry_history", [])) + 1
        failures = int(failed.system_attrs.get(FAILURES_ATTR, 0))
        count = count or attempts - failures > MAX_HANDBACKS
        failures += 1 if count else 0
        if h.state != RUNNING:  # a stopped study leaves nothing waiting; resume re-queues it
            log.info(
                "trial %d of %s failed after its study stopped; not retried until it is "
                "resumed (%s)",
                failed.number,
                h.spec.name,
                loggable(reason),
            )
            h.index.unretried.add(failed.number)
            self.writer.submit(
                _trial_writes.attrs_op(
                    _storage.trial_id_of(failed), system={RETRY_ON_RESUME_ATTR: True}
                )
            )
            return False
        if failures > h.spec.max_retries:
            log.warning(
                "trial %d of %s failed %d times; not retried (%s)",
                failed.number,
                h.spec.name,
                failures,
                loggable(reason),
            )
            return False
        history = [*failed.system_attrs.get("retry_history", []), failed.number]
        user_attrs = {
            k: v
            for k, v in failed.user_attrs.items()
            if k in ("candidate", "arch") or dashboard.is_candidate_row(k)
        }
        user_attrs["requeued_because"] = reason or "no reason given"
        loop_keys = failed.system_attrs.get(LOOP_ATTRS_ATTR, [])
        loop_attrs = {k: failed.system_attrs[k] for k in loop_keys if k in failed.system_attrs}
        if loop_attrs:  # what the loop proposed it as (its kind, its row, its pick...)
            loop_attrs[LOOP_ATTRS_ATTR] = sorted(loop_attrs)
        tid = self.storage.create_new_trial(
            h.study_id,
            template_trial=optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=failed.params,
                distributions=failed.distributions,
                user_attrs=user_attrs,
                system_attrs={
                    "failed_trial": history[0],
                    "retry_history": history,
                    FAILURES_ATTR: failures,
                    **loop_attrs,
                },
            ),
        )
        h.index.waiting.add(tid)
        log.info("re-queued trial %d of %s (%s)", failed.number, h.spec.name, loggable(reason))
        self.notify()
        return True

    def on_stale_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna's heartbeat-stale callback, for ``fail_stale_trials`` when this Optuna lacks
        the stale-trial query :meth:`reap_once` uses: re-queue the candidate, and record the
        reason on the failed trial (with SQL: Optuna refuses attributes on finished trials)."""
        h = self._handle_named(study.study_name)
        if h is None:
            return
        reason = self.leases.expiry_reason()
        self.writer.run(
            _trial_writes.attrs_op(_storage.trial_id_of(trial), user={"fail_reason": reason})
        )
        with h.lock:
            h.index.live.pop(_storage.trial_id_of(trial), None)
            self.requeue(h, trial, reason, count=True)

    def _probe_outage(self) -> None:
        """During an outage, asks the database whether it answers again: an outage only reads
        noticed (no write to commit afterwards) was never said to be over, and the next one
        was not said at all."""
        if self.writer.outage.down_since is None:
            return
        try:
            with self.rdb.engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
        except Exception:  # still down: the next pass asks again
            return
        self.writer.outage.up()

    def reap_once(self) -> None:
        """Fails expired leases (re-queueing their candidates) and completes finished studies.

        Nothing expires during the first lease duration after this server started: a lease
        whose last heartbeat predates the start (its worker finished or heartbeated while no
        server answered) gets that long to be heartbeated, completed or failed again.
        """
        expire = self.leases.expiring()
        for h in self._handles():
            if expire and any(live.lease_id for live in list(h.index.live.values())):
                stale = _storage.stale_trial_ids(self.rdb, h.study_id)
            else:
                stale = []
            if stale is None or stale:
                with h.lock:
                    # Queued leases, heartbeats and finishes first: the stale check must see
                    # what this server already decided (the writer never takes ``h.lock``).
                    self.writer.barrier()
                    self._expire(h)
            with h.lock:
                self.lifecycle.maybe_complete(h)

    def _expire(self, h: StudyHandle) -> None:
        """Fails ``h``'s expired leases, each with its reason in the same write as its state,
        and re-queues their candidates (Optuna's ``fail_stale_trials`` where its stale-trial
        query is missing). Caller holds ``h.lock``."""
        stale = _storage.stale_trial_ids(self.rdb, h.study_id)
        if stale is None:  # pragma: no cover - depends on Optuna's internals
            optuna.storages.fail_stale_trials(h.study)
            return
        reason = self.leases.expiry_reason()
        for tid in stale:
            live = h.index.live.get(tid)
            if live is None or not live.lease_id:
                continue  # not a lease of this server's index (finishing, or unknown)
            try:
                self.lifecycle.finish(h, tid, TrialState.FAIL, None, {"fail_reason": reason})
            except _trial_writes.TrialNotRunning:
                continue
            h.index.live.pop(tid, None)
            self.requeue(h, self.storage.get_trial(tid), reason, count=True)
            self.notify()

    def _loop(self) -> None:
        # A pause of the whole server (SIGSTOP, a stalled VM, swapping) longer than this: the
        # workers heartbeated through it unanswered, so their leases get a grace, as after a
        # restart; before, every live lease expired the moment the server ran again.
        paused_s = max(self.leases.lease_duration_s / 2, 2 * self.interval_s)
        last = time.monotonic()
        while not self._stop.wait(self.interval_s):
            late = time.monotonic() - last - self.interval_s
            if late > paused_s:
                log.warning(
                    "the server did not run for %.0f s (paused or starved); no lease expires "
                    "for %d s, for the workers to heartbeat again",
                    late,
                    self.leases.lease_duration_s,
                )
                self.leases.grace_from_now()
            try:
                self.reap_once()
            except Exception as e:  # keep reaping whatever one study did
                down = storage_down(e)
                if down is None:
                    log.exception("lease reaper failed; retrying")
                else:  # heartbeats cannot be stored either: expire nothing until it is back
                    self.writer.outage.down("lease reaper: no lease expires meanwhile", down, e)
                    self.leases.grace_from_now()
            self._probe_outage()
            last = time.monotonic()
