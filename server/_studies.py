"""The study manager: the facade the servicers call, over collaborators with their own state.

Collaborators (imports go one way, down this list; each imports ``_index``, the in-memory model,
and ``_storage``, the only module that touches Optuna's private attributes and tables):
    * ``_registry.StudyRegistry``: the served studies by name and id; launch; start-up rebuild;
    * ``_leases.LeaseTable``: grant, heartbeat, expiry (the restart grace), and the one place
      that resolves a lease for report, complete, fail and release;
    * ``_pool.CandidatePool``: prepare, settle and store candidates, repeats, the pool target;
    * ``_retries.Retries``: re-queue failed candidates, and the lease reaper;
    * ``_lifecycle.StudyLifecycle``: study states, completion, the writes that end a trial;
    * ``_objectives``: objective values from raw metrics, and the checks of a report.
Converters (``_convert``) are pure functions of frozen snapshots (:meth:`StudyManager.snapshot`).

Everything lives in the Optuna storage (DESIGN.md principle 1). In memory the manager keeps
only what it can rebuild from the storage at start-up: one handle per archsearch study (its
parsed spec, the Optuna study object, the design space and the search loop) and a lock per
study that serialises the study's state transitions inside this process.

Where things are stored:
    * study user attributes: ``archsearch:spec`` (the validated spec), ``archsearch:state``
      (running/stopped/completed), ``archsearch:created_at``, ``archsearch:completed_reason``
      (why a completed study completed); metric names via
      ``set_metric_names`` so optuna-dashboard labels its axes;
    * trial user attributes (visible in the dashboard): ``candidate`` (the full candidate spec),
      ``arch`` (compact description), ``worker``, ``attempt``, ``metrics`` (every raw metric the
      worker reported), ``info`` (provenance), ``fail_reason``; and readable one-value rows
      next to the JSON (``metric.<name>``, ``info.<key>``, ``recipe.<key>``, ``data.<key>``:
      ``_dashboard_attrs``), plus ``mapped_from`` where a table space mapped a suggestion;
    * trial system attributes: ``archsearch:lease`` (the current lease id),
      ``archsearch:failures`` (failures counted against the retry budget), and Optuna's own
      ``failed_trial``/``retry_history`` so ``RetryHeartbeatStaleTrialCallback``'s helpers work;
    * lease liveness: Optuna's heartbeat table (``record_heartbeat``); a lease expires when its
      trial's heartbeat is older than the lease duration, and the reaper fails it.

Leases (DESIGN.md principle 3): acquiring a trial gives it a fresh lease id (study id, trial
id and a random token) and a heartbeat. Heartbeats and intermediate reports extend it. A reaper
thread fails the trials whose heartbeat is older than the lease (Optuna's stale-trial query;
``optuna.storages.fail_stale_trials`` where that is missing) and re-queues the candidate as a
WAITING trial with the same parameters and candidate, up to ``max_retries`` failures. A
report about a lease that is not the trial's current one, or whose trial is no longer RUNNING,
changes nothing and is refused. Every FAIL is stored with its ``fail_reason``
in the same write as its state. A restarted server expires nothing during its first lease
duration (a worker that finished while it was down reaches it again), and no lease is granted
to an AcquireTrial call that can no longer be answered (one that ended meanwhile gives its
lease back: the trial is prepared again).

Prepared candidates: when a trial finishes, the RPC that finished it asks the loop for up to
two more candidates while the study's pool of ready candidates is smaller than the number of
workers active on it, and stores each at once (a RUNNING trial with its ``candidate`` but no
lease yet), so an acquire is an in-memory pop plus one lease write. A server that stops keeps
them: at start-up RUNNING trials without a lease return to the pool; stopping a study fails
them and its queued retries ("study stopped before this candidate ran"). A candidate identical
to one in flight is never prepared twice; repeats of completed ones are recorded but do not
count against ``n_trials`` (see ``CandidatePool.prepare``). A loop that needs a long build (a
library's embeddings) builds it in the background from launch or start-up
(``SearchLoop.warm_up``); acquires answer "no work yet" meanwhile.

Per-trial cost (issue 2's service_overhead benchmark): every hot-path write is a group-commit
operation of ``_writer.StorageWriter`` (one writer thread, one transaction per batch, leases
in an urgent lane), written with SQLAlchemy Core on Optuna's own tables (``_storage``), and a
loop's ask runs on ``_storage.DeferredTrialStorage``, which keeps the new trial in memory until
its row, parameters and candidate are inserted in one transaction. Every RPC answers only
after its writes are committed. Locks: ``StudyHandle.lock`` guards the in-memory index and is
never held while the database or a sampler works (except by the reaper, the rare report and
fail paths, and stop); ``StudyHandle.ask_lock`` serialises the loop's asks.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from archsearch.search import should_prune
from archsearch.server import _dashboard_attrs as dashboard
from archsearch.server import _storage
from archsearch.server._artifacts import GraphArtifacts
from archsearch.server._errors import AlreadyExists, FailedPrecondition, InvalidArgument
from archsearch.server._index import (
    COMPLETED,
    COMPLETED_REASON_ATTR,
    FAILURES_ATTR,
    LEASE_ATTR,
    RUNNING,
    SPEC_ATTR,
    STATE_ATTR,
    STOPPED,
    STOPPED_REASON,
    Grant,
    LiveTrial,
    StudyHandle,
    StudySnapshot,
    WorkerInfo,
)
from archsearch.server._leases import LeaseTable, parse_lease_id
from archsearch.server._lifecycle import StudyLifecycle
from archsearch.server._objectives import MAX_TEXT, check_finite, checked_report, objective_values
from archsearch.server._pool import MIN_REPEAT_STREAK, CandidatePool
from archsearch.server._registry import StudyRegistry, rebuild_index
from archsearch.server._retries import Retries
from archsearch.server._spec import SearchSpec
from archsearch.server._writer import StorageWriter

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# The server drives heartbeats itself (record_heartbeat/fail_stale_trials), not Study.optimize.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
log = logging.getLogger("archsearch.server")

# What tests, the CLI and the servicers import from here (the model lives in ``_index``).
__all__ = [
    "COMPLETED",
    "COMPLETED_REASON_ATTR",
    "FAILURES_ATTR",
    "LEASE_ATTR",
    "MIN_REPEAT_STREAK",
    "RUNNING",
    "SPEC_ATTR",
    "STATE_ATTR",
    "STOPPED",
    "STOPPED_REASON",
    "Grant",
    "StudyHandle",
    "StudyManager",
    "StudySnapshot",
    "WorkerInfo",
    "parse_lease_id",
]


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _always() -> bool:
    return True


class StudyManager:
    """Owns the storage and every archsearch study in it.

    Hot paths touch the database only to write, through the group-commit writer: acquiring a
    prepared candidate is one queued operation (lease, worker, attempt and heartbeat),
    completing one is one (metrics, values and state) plus the storage of the candidates it
    prepares (one operation each: trial row, parameters and candidate). When a trial
    finishes, candidates are prepared at once (asked from the loop and stored with their
    spec), so the workers' next acquires find them ready.

    Args:
        storage_url: SQLAlchemy URL of the Optuna storage.
        lease_duration_s: a lease not extended for this long expires (Optuna's grace period).
        heartbeat_interval_s: how often workers are told to heartbeat.
        reap_interval_s: how often the reaper looks for expired leases.
    """

    def __init__(
        self,
        storage_url: str,
        lease_duration_s: int = 60,
        heartbeat_interval_s: int = 10,
        reap_interval_s: float | None = None,
        artifact_dir: str | None = None,
    ) -> None:
        if heartbeat_interval_s <= 0 or lease_duration_s <= heartbeat_interval_s:
            raise InvalidArgument(
                "lease duration must exceed the heartbeat interval "
                f"(got lease {lease_duration_s}s, heartbeat {heartbeat_interval_s}s)"
            )
        self.storage_url = storage_url
        self.lease_duration_s = lease_duration_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.reap_interval_s = reap_interval_s or max(0.5, heartbeat_interval_s / 2)
        self.rdb = _storage.open_storage(
            storage_url,
            lease_duration_s,
            heartbeat_interval_s,
            self._on_stale_trial,
        )
        # One cache for every study object: this server is the storage's only writer.
        self.storage = _storage.DeferredTrialStorage(self.rdb)
        self.writer = StorageWriter(self.rdb.engine)
        # Architecture pictures for optuna-dashboard (``serve --artifact-dir``).
        self.artifacts = GraphArtifacts(artifact_dir, self.rdb) if artifact_dir else None
        self._active: dict[str, tuple[float, tuple[str, ...]]] = {}
        self.registry = StudyRegistry(self.storage, self._notify)
        self._work = threading.Condition()
        self._workers: dict[str, WorkerInfo] = {}
        self._stop = threading.Event()
        self.leases = LeaseTable(
            self.storage, self.writer, lease_duration_s, self.registry.by_id, self.trials
        )
        self.lifecycle = StudyLifecycle(self.storage, self.writer, self._notify)
        self.retries = Retries(
            self.rdb,
            self.storage,
            self.writer,
            self.leases,
            self.lifecycle,
            self.registry.handles,
            self.registry.named,
            self._notify,
            self.reap_interval_s,
        )
        self.pool = CandidatePool(
            self.storage,
            self.writer,
            self.lifecycle,
            self.artifacts,
            self._active,
            lease_duration_s,
            self._notify,
        )
        self.registry.load(self._rebuild_index)

    def _on_stale_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna's heartbeat-stale callback (bound before the collaborators exist)."""
        self.retries.on_stale_trial(study, trial)

    # ------------------------------------------------------------------ start-up and shutdown

    def _rebuild_index(self, h: StudyHandle) -> None:
        rebuild_index(h, self.trials(h), self.storage, self.pool, self.lifecycle, self.retries)

    def start(self) -> None:
        """Starts the reaper thread."""
        self.retries.start()

    def close(self) -> None:
        self._stop.set()
        with self._work:
            self._work.notify_all()
        self.retries.close()
        if self.artifacts is not None:
            self.artifacts.close(wait=False)
        self.writer.close()
        self.rdb.remove_session()
        self.rdb.engine.dispose()

    # ------------------------------------------------------------------ people's side

    def launch(self, spec: SearchSpec) -> StudyHandle:
        """Creates and serves a new study (see :meth:`StudyRegistry.create`).

        Returns:
            The new study's handle.

        Raises:
            AlreadyExists: a study of that name exists in the storage.
        """
        handle = self.registry.create(spec)
        log.info(
            "launched study %s (%s/%s, %d trials)", spec.name, spec.space, spec.loop, spec.n_trials
        )
        self._notify()
        return handle

    def get(self, name: str) -> StudyHandle:
        """The study called ``name``.

        Raises:
            NotFound: no archsearch study has that name.
        """
        return self.registry.get(name)

    def handles(self) -> list[StudyHandle]:
        """Every served study, oldest first."""
        return self.registry.handles()

    def stop(self, name: str) -> StudyHandle:
        """Stops handing out trials. Nothing is left waiting: prepared candidates and queued
        retries end FAIL (``fail_reason`` says the study was stopped before they ran); leased
        trials run to their end and are not retried."""
        h = self.get(name)
        with h.lock:
            if h.state == RUNNING:
                self.lifecycle.set_state(h, STOPPED)
                self.lifecycle.end_unrun(h)
        return h

    def trials(
        self, h: StudyHandle, states: Iterable[TrialState] | None = None
    ) -> list[FrozenTrial]:
        st = tuple(states) if states else None
        return self.storage.get_all_trials(h.study_id, deepcopy=False, states=st)

    def best_trials(self, h: StudyHandle) -> list[FrozenTrial]:
        if not h.index.done and not self.trials(h, (TrialState.COMPLETE,)):
            return []
        if len(h.spec.objectives) == 1:
            return [h.study.best_trial]
        return list(h.study.best_trials)

    def snapshot(self, h: StudyHandle, with_best: bool = True) -> StudySnapshot:
        """A frozen view of ``h`` for the converters.

        The state is read before the trials: a study is marked completed only after its last
        trial's result is committed, so a reader that sees "completed" then counts every trial
        finished. Read the other way round, a count taken just before the last commit could be
        sent with the state set just after it (29 of 30 complete, yet "completed").

        Returns:
            The spec, state, per-state counts, best trials (none unless ``with_best``) and the
            trainers of the connected workers.
        """
        state = h.state
        counts = dict.fromkeys(TrialState, 0)
        for t in self.trials(h):
            counts[t.state] += 1
        return StudySnapshot(
            spec=h.spec,
            state=state,
            created_at=h.created_at,
            counts=counts,
            best_trials=tuple(self.best_trials(h)) if with_best else (),
            connected_trainers=self.connected_trainers(),
        )

    # ------------------------------------------------------------------ workers' side

    def register(
        self,
        worker_id: str,
        trainers: tuple[str, ...],
        device: str,
        memory_bytes: int,
        hostname: str,
    ) -> WorkerInfo:
        info = WorkerInfo(worker_id, trainers, device, memory_bytes, hostname, time.time())
        self._workers[worker_id] = info
        return info

    def acquire(
        self,
        worker_id: str,
        trainers: tuple[str, ...],
        study_name: str = "",
        timeout_s: float = 0.0,
        alive: Callable[[], bool] | None = None,
    ) -> Grant | None:
        """Hands out a trial, waiting up to ``timeout_s`` for one; None means no work.

        Args:
            alive: whether the caller can still receive the answer (the RPC is active and
                its deadline not passed). No lease is granted once it says no, and a lease
                granted meanwhile is taken back at once (the trial stays prepared).
        """
        if study_name:
            self.get(study_name)  # NotFound for an unknown study, before any waiting
        alive = alive or _always
        deadline = time.monotonic() + max(0.0, timeout_s)
        self._active[worker_id] = (time.monotonic(), trainers)
        while True:
            grant = self._try_acquire(worker_id, trainers, study_name, alive)
            if grant is not None:
                return grant
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set() or not alive():
                return None
            with self._work:
                self._work.wait(timeout=min(remaining, 1.0))

    def _try_acquire(
        self,
        worker_id: str,
        trainers: tuple[str, ...],
        study_name: str,
        alive: Callable[[], bool] = _always,
    ) -> Grant | None:
        for h in self.handles():
            if study_name and h.spec.name != study_name:
                continue
            if h.state != RUNNING or h.spec.trainer not in trainers:
                continue
            grant = self._acquire_from(h, worker_id, alive)
            if grant is not None:
                return grant
        return None

    def _acquire_from(
        self, h: StudyHandle, worker_id: str, alive: Callable[[], bool] = _always
    ) -> Grant | None:
        """Leases a prepared candidate of ``h`` (preparing one first when none is ready).

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
                    live, written = self.leases.grant(h, tid, worker_id)
                    break
            with h.ask_lock:  # nothing ready: prepare one here, as the worker waits for it
                with h.lock:
                    if h.state != RUNNING:
                        return None
                    if idx.pool and not idx.waiting:
                        continue  # the preparer was faster
                prepared = self.pool.prepare(h)
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
                    self._notify()
                    return None
                live, written = self.leases.grant(h, tid, worker_id)
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
            candidate=live.candidate,
            trainer=h.spec.trainer,
            objective_metrics=h.spec.raw_objective_metrics,
            intermediate_metric=h.spec.intermediate_metric,
        )

    def _take_back(self, h: StudyHandle, live: LiveTrial) -> None:
        """Undoes a stored lease whose caller gave up before it got the answer: the trial is
        prepared again (no lease, no heartbeat), first in the pool, instead of RUNNING under a
        lease nobody holds until it expires."""
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
        except Exception:  # the stored lease stays; the reaper expires and retries it
            log.exception("taking back the lease of trial %d failed", live.number)
            return
        if h.state != RUNNING:
            with h.lock:
                if idx.live.get(live.trial_id) is live and not live.lease_id:
                    idx.live.pop(live.trial_id, None)
                    self.lifecycle.fail_unrun(h, live.trial_id, STOPPED_REASON)
                    self.lifecycle.after_finish(h)
        self._notify()

    # ------------------------------------------------------------------ preparing ahead

    # ------------------------------------------------------------------ leases

    def heartbeat(self, lease_id: str) -> tuple[float, bool]:
        """Extends a lease (see :meth:`LeaseTable.heartbeat`).

        Returns:
            (the new deadline in unix seconds, whether to stop: always False here; a pruned
            trial's worker learns it from its report).

        Raises:
            NotFound: a lease this server never issued.
            FailedPrecondition: the trial is finished, expired or given up.
        """
        return self.leases.heartbeat(lease_id), False

    def report(self, lease_id: str, step: int, value: float) -> tuple[bool, float]:
        """Stores an intermediate value and asks the pruner about the trial.

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
            raise InvalidArgument(f"step must be >= 0, got {step}")

        def again(_h: StudyHandle, frozen: FrozenTrial) -> tuple[bool, float] | None:
            # a repeated report after the prune decision
            return (True, time.time()) if frozen.state == TrialState.PRUNED else None

        with self.leases.resolve(lease_id, again) as lease:
            h, tid, live = lease.handle, lease.trial_id, lease.live
            if live is None:
                assert lease.answer is not None
                return lease.answer
            self.storage.set_trial_intermediate_value(tid, step, float(value))
            self.rdb.record_heartbeat(tid)
            final_step = live.candidate.recipe.get("max_steps")
            if should_prune(h.study, self.storage, tid, final_step=final_step):
                h.study.tell(live.number, state=TrialState.PRUNED)
                h.index.live.pop(tid, None)
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
            values = objective_values(h.spec, metrics)
            user = dashboard.completion_attrs(metrics, info)  # JSON, and rows for the dashboard
            self.lifecycle.after_trial_hook(h, tid, TrialState.COMPLETE, values)
            # Metrics, values and state in one queued write; the lock is not held while it
            # commits, and a repeated report meanwhile waits for it (``LeaseTable.resolve``).
            written = self.writer.submit(_storage.finish_op(tid, TrialState.COMPLETE, values, user))
            idx.live.pop(tid, None)
            idx.finishing[tid] = (lease_id, written, live.fp)
        try:
            written.result()
        except _storage.TrialNotRunning as e:
            with h.lock:
                idx.finishing.pop(tid, None)
            raise FailedPrecondition(
                f"trial {live.number} of {h.spec.name} is already {e.state}; stop working on it"
            ) from e
        except Exception:
            with h.lock:  # not stored: the lease stays valid and the worker may report again
                idx.finishing.pop(tid, None)
                idx.live[tid] = live
            raise
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
            if frozen.state == TrialState.FAIL and frozen.user_attrs.get("fail_reason") == reason:
                return self.leases.retry_of(h, frozen.number) is not None  # the same report again
            return None

        with self.leases.resolve(lease_id, again) as lease:
            h, tid, live = lease.handle, lease.trial_id, lease.live
            if live is None:
                assert lease.answer is not None
                return lease.answer
            _storage.write_trial_attrs(self.rdb, tid, user={"fail_reason": reason})
            self.lifecycle.finish(h, tid, TrialState.FAIL, None)
            h.index.live.pop(tid, None)
            requeued = False
            if released or retryable:
                requeued = self.retries.requeue(
                    h, self.storage.get_trial(tid), reason, count=not released
                )
            self.lifecycle.after_finish(h)
        self.pool.top_up(h)
        return requeued

    # ------------------------------------------------------------------ retries and expiry

    def reap_once(self) -> None:
        """Fails expired leases (re-queueing their candidates) and completes finished studies
        (see :meth:`Retries.reap_once`)."""
        self.retries.reap_once()

    # ------------------------------------------------------------------ study state

    def _notify(self) -> None:
        with self._work:
            self._work.notify_all()

    def workers(self) -> list[WorkerInfo]:
        return list(self._workers.values())

    def connected_trainers(self) -> dict[str, int]:
        """How many connected workers offer each trainer (trainers none offers are absent).

        Connected: seen by RegisterWorker or AcquireTrial within one lease duration, or
        holding a lease (a worker training a long trial heartbeats but does not acquire; its
        study's trainer counts once per lease). Read-only and approximate: a lower bound.
        """
        now_mono, now = time.monotonic(), time.time()
        seen = {
            w.worker_id: w.trainers
            for w in list(self._workers.values())
            if now - w.last_seen <= self.lease_duration_s
        }
        for worker_id, (at, trainers) in list(self._active.items()):
            if now_mono - at <= self.lease_duration_s:
                seen[worker_id] = trainers
        counts: dict[str, int] = {}
        for trainers in seen.values():
            for t in set(trainers):
                counts[t] = counts.get(t, 0) + 1
        leased: dict[str, int] = {}
        for h in self.handles():
            n = sum(1 for lt in list(h.index.live.values()) if lt.lease_id)
            leased[h.spec.trainer] = leased.get(h.spec.trainer, 0) + n
        return {
            t: n
            for t in sorted(set(counts) | set(leased))
            if (n := max(counts.get(t, 0), leased.get(t, 0))) > 0
        }
