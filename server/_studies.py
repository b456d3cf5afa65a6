"""The study manager: studies, leased trials, retries and pruning on top of Optuna storage.

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
count against ``n_trials`` (see ``_prepare``). A loop that needs a long build (a library's
embeddings) builds it in the background from launch or start-up (``SearchLoop.warm_up``);
acquires answer "no work yet" meanwhile.

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

import contextlib
import dataclasses
import datetime
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from archsearch.search import ServerStudy, make_loop, make_pruner, should_prune
from archsearch.server import _dashboard_attrs as dashboard
from archsearch.server import _storage
from archsearch.server._artifacts import GraphArtifacts
from archsearch.server._errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from archsearch.server._index import (
    COMPLETED,
    COMPLETED_REASON_ATTR,
    CREATED_ATTR,
    FAILURES_ATTR,
    LEASE_ATTR,
    RUNNING,
    SPEC_ATTR,
    STATE_ATTR,
    STOPPED,
    STOPPED_REASON,
    Grant,
    LiveTrial,
    Prepared,
    StudyHandle,
    StudyIndex,
    StudySnapshot,
    WorkerInfo,
)
from archsearch.server._leases import LeaseTable, parse_lease_id  # noqa: F401 (re-exported)
from archsearch.server._logsafe import loggable
from archsearch.server._objectives import MAX_TEXT, check_finite, checked_report, objective_values
from archsearch.server._spec import SearchSpec
from archsearch.server._writer import StorageWriter
from archsearch.spaces import Candidate, SpecError

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# The server drives heartbeats itself (record_heartbeat/fail_stale_trials), not Study.optimize.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
log = logging.getLogger("archsearch.server")

MAX_DUPLICATE_ASKS = 20
#: A study whose loop proposed this many repeats in a row (at least; ``n_trials`` when larger)
#: completes: its loop finds nothing new (a small space is exhausted).
MIN_REPEAT_STREAK = 50
MAX_PREPARED = 64
NON_ADAPTIVE_SAMPLERS = (
    optuna.samplers.RandomSampler,
    optuna.samplers.QMCSampler,
    optuna.samplers.GridSampler,
    optuna.samplers.BruteForceSampler,
)
TOP_UP_PER_FINISH = 2


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
            storage_url, lease_duration_s, heartbeat_interval_s, self._on_stale_trial
        )
        # One cache for every study object: this server is the storage's only writer.
        self.storage = _storage.DeferredTrialStorage(self.rdb)
        self.writer = StorageWriter(self.rdb.engine)
        # Architecture pictures for optuna-dashboard (``serve --artifact-dir``).
        self.artifacts = GraphArtifacts(artifact_dir, self.rdb) if artifact_dir else None
        self._active: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._handles: dict[str, StudyHandle] = {}
        self._by_id: dict[int, StudyHandle] = {}
        self._handles_lock = threading.Lock()
        self._work = threading.Condition()
        self._workers: dict[str, WorkerInfo] = {}
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self.leases = LeaseTable(
            self.storage, self.writer, lease_duration_s, self._by_id.get, self.trials
        )
        self._load_studies()

    # ------------------------------------------------------------------ start-up and shutdown

    def _load_studies(self) -> None:
        """Rebuilds a handle and index for every archsearch study in the storage."""
        for frozen in self.storage.get_all_studies():
            raw = frozen.user_attrs.get(SPEC_ATTR)
            if raw is None:
                continue  # a plain Optuna study sharing the storage
            try:
                spec = SearchSpec.from_dict(raw)
                handle = self._open(
                    spec,
                    frozen.user_attrs.get(STATE_ATTR, RUNNING),
                    frozen.user_attrs.get(CREATED_ATTR, ""),
                )
            except SpecError as e:
                log.error(
                    "study %s: stored spec no longer valid (%s); not serving it",
                    loggable(frozen.study_name),
                    loggable(e),
                )
                continue
            self._register(handle)
            self._rebuild_index(handle)

    def _register(self, h: StudyHandle) -> None:
        self._handles[h.spec.name] = h
        self._by_id[h.study_id] = h

    def _open(self, spec: SearchSpec, state: str, created_at: str) -> StudyHandle:
        n_existing = 0
        try:
            sid = self.storage.get_study_id_from_name(spec.name)
            n_existing = len(self.storage.get_all_trials(sid, deepcopy=False))
        except KeyError:
            pass
        # Offset the seed by the trials already made so a restarted server does not replay
        # the suggestions of its previous life (a seeded RandomSampler would).
        loop = make_loop(spec.loop, spec.seed + n_existing, len(spec.objectives), spec.loop_options)
        study = ServerStudy(
            study_name=spec.name,
            storage=self.storage,
            sampler=loop.sampler,
            pruner=make_pruner(spec.pruner, len(spec.objectives)),
        )
        handle = StudyHandle(
            spec=spec,
            study=study,
            space=spec.build_space(),
            loop=loop,
            lock=threading.RLock(),
            state=state,
            created_at=created_at,
        )
        if state == RUNNING:  # build what the loop needs now, not in a worker's call
            loop.warm_up(handle.space, self._notify)
        return handle

    def _rebuild_index(self, h: StudyHandle) -> None:
        """Reads the study once: counts, queued retries, live leases, completed candidates.

        A RUNNING trial without a lease was prepared but never handed out when the previous
        server stopped: it goes back to the pool. One without a candidate died inside
        preparation: it is failed and its parameters re-queued (not counted as a failure).
        """
        idx = StudyIndex()
        orphans = []
        with h.lock:
            for t in self.trials(h):
                if "failed_trial" not in t.system_attrs:
                    if "duplicate_of" not in t.user_attrs:
                        idx.originals += 1
                        idx.repeat_streak = 0
                    elif t.state == TrialState.COMPLETE:
                        idx.repeat_streak += 1
                if t.state == TrialState.WAITING:
                    idx.waiting.add(_storage.trial_id_of(t))
                elif t.state == TrialState.COMPLETE and "candidate" in t.user_attrs:
                    fp = Candidate.from_dict(t.user_attrs["candidate"]).fingerprint()
                    idx.done.setdefault(
                        fp, (t.number, list(t.values or []), t.user_attrs.get("metrics", {}))
                    )
                elif t.state == TrialState.RUNNING:
                    if "candidate" not in t.user_attrs:
                        orphans.append(t)
                        continue
                    live = LiveTrial(
                        _storage.trial_id_of(t),
                        t.number,
                        Candidate.from_dict(t.user_attrs["candidate"]),
                        len(t.system_attrs.get("retry_history", [])),
                        str(t.system_attrs.get(LEASE_ATTR, "")),
                    )
                    idx.live[_storage.trial_id_of(t)] = live
                    if not live.lease_id:
                        idx.pool.append(_storage.trial_id_of(t))
            if idx.repeat_streak >= self._repeat_limit(h):
                idx.exhausted = self._exhausted_reason(h, idx.repeat_streak, idx.originals)
            h.index = idx
            for t in orphans:
                why = "server stopped while preparing it"
                self._fail_unrun(h, _storage.trial_id_of(t), why)
                self._requeue(h, self.storage.get_trial(_storage.trial_id_of(t)), why, count=False)
            if h.state == STOPPED:  # a stop of an older server version left some waiting
                self._end_unrun(h)

    def start(self) -> None:
        """Starts the reaper thread."""
        if self._reaper is None:
            self._reaper = threading.Thread(
                target=self._reap_loop, name="lease-reaper", daemon=True
            )
            self._reaper.start()

    def close(self) -> None:
        self._stop.set()
        with self._work:
            self._work.notify_all()
        if self._reaper is not None:
            self._reaper.join(timeout=10)
        if self.artifacts is not None:
            self.artifacts.close(wait=False)
        self.writer.close()
        self.rdb.remove_session()
        self.rdb.engine.dispose()

    # ------------------------------------------------------------------ people's side

    def launch(self, spec: SearchSpec) -> StudyHandle:
        with self._handles_lock:
            if spec.name in self._handles:
                raise AlreadyExists(f"study {spec.name!r} already exists; choose another name")
            try:
                self.storage.get_study_id_from_name(spec.name)
                raise AlreadyExists(
                    f"a study named {spec.name!r} already exists in the storage (not launched "
                    "by archsearch); choose another name"
                )
            except KeyError:
                pass
            directions = [o.direction for o in spec.objectives]
            study = optuna.create_study(
                study_name=spec.name, storage=self.storage, directions=directions
            )
            study.set_metric_names([o.metric for o in spec.objectives])
            created = _now_iso()
            study.set_user_attr(SPEC_ATTR, spec.to_dict())
            study.set_user_attr(STATE_ATTR, RUNNING)
            study.set_user_attr(CREATED_ATTR, created)
            handle = self._open(spec, RUNNING, created)
            self._register(handle)
        log.info(
            "launched study %s (%s/%s, %d trials)", spec.name, spec.space, spec.loop, spec.n_trials
        )
        self._notify()
        return handle

    def get(self, name: str) -> StudyHandle:
        try:
            return self._handles[name]
        except KeyError:
            raise NotFound(
                f"no archsearch study named {name!r}; `archsearch studies` lists them"
            ) from None

    def handles(self) -> list[StudyHandle]:
        return sorted(self._handles.values(), key=lambda h: (h.created_at, h.spec.name))

    def stop(self, name: str) -> StudyHandle:
        """Stops handing out trials. Nothing is left waiting: prepared candidates and queued
        retries end FAIL (``fail_reason`` says the study was stopped before they ran); leased
        trials run to their end and are not retried."""
        h = self.get(name)
        with h.lock:
            if h.state == RUNNING:
                self._set_state(h, STOPPED)
                self._end_unrun(h)
        return h

    def _end_unrun(self, h: StudyHandle) -> None:
        """Fails every candidate of a stopped study that no worker holds: the prepared pool
        and the queued retries. Caller holds ``h.lock``."""
        idx = h.index
        while idx.pool:
            tid = idx.pool.popleft()
            idx.live.pop(tid, None)
            self._fail_unrun(h, tid, STOPPED_REASON)
        for tid in sorted(idx.waiting):
            idx.waiting.discard(tid)
            self._fail_unrun(h, tid, STOPPED_REASON, expected=TrialState.WAITING)

    def _fail_unrun(
        self,
        h: StudyHandle,
        tid: int,
        reason: str,
        expected: TrialState = TrialState.RUNNING,
    ) -> None:
        """Fails a trial no worker holds, with its reason, in one write (nothing when it is no
        longer in the ``expected`` state)."""
        op = _storage.finish_op(
            tid, TrialState.FAIL, None, {"fail_reason": reason}, expected=expected
        )
        with contextlib.suppress(_storage.TrialNotRunning):
            self.writer.run(op)

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
                prepared = self._prepare(h)
            if prepared is None:
                with h.lock:
                    self._maybe_complete(h)
                return None
            tid = self._settle_prepared(h, prepared)
            if tid is None:
                continue
            with h.lock:
                if h.state != RUNNING:  # stopped while it was prepared
                    idx.live.pop(tid, None)
                    self._fail_unrun(h, tid, STOPPED_REASON)
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
                    self._fail_unrun(h, live.trial_id, STOPPED_REASON)
                    self._after_finish(h)
        self._notify()

    def _prepare(self, h: StudyHandle) -> Prepared | None:
        """Asks the loop for the next candidate and queues its storage; None when there is
        nothing to prepare now (budget spent, loop exhausted or still building, or only
        candidates already in flight proposed). The caller finishes with
        :meth:`_settle_prepared` after releasing ``h.ask_lock``, so the next ask overlaps this
        one's commit.

        Samplers re-propose evaluated points in small discrete spaces (TPE does); training the
        same candidate with the same recipe and seed again would only cost a worker's time, so
        a repeat is stored completed at once with the earlier result (``duplicate_of``), which
        keeps the sampler's history honest; it does not count against ``n_trials`` (distinct
        candidates). A loop that proposes ``max(MIN_REPEAT_STREAK, n_trials)`` repeats in a
        row has nothing new left: the study completes (``archsearch:completed_reason``). A
        candidate identical to one in flight (prepared, leased or finishing) is dropped
        unstored and the loop asked again; after ``MAX_DUPLICATE_ASKS`` proposals without a
        new candidate the caller gets None ("no work yet"), and once the one in flight has
        finished, the same proposal is a recorded repeat.

        Caller holds ``h.ask_lock`` (loops are asked one at a time) but not ``h.lock``: a slow
        sampler never blocks leases, heartbeats or reports of the study.
        """
        idx = h.index
        with h.lock:
            idx.preparing += 1  # the study is not complete while a candidate is on its way
        repeats: list[Future[Any] | None] = []
        in_flight = 0
        try:
            # Bounded: at most MAX_DUPLICATE_ASKS proposals of candidates in flight and
            # MIN_REPEAT_STREAK repeats per call (enough to end a small study in one call).
            while in_flight < MAX_DUPLICATE_ASKS and len(repeats) < MIN_REPEAT_STREAK:
                with h.lock:
                    if h.state != RUNNING:
                        break
                    if not idx.waiting and (idx.originals >= h.spec.n_trials or idx.exhausted):
                        break
                    waiting = bool(idx.waiting)
                if not waiting and not h.loop.ready(h.space):
                    break  # still building (``warm_up``): no work yet
                with self.storage.deferring():
                    trial, arch = h.loop.ask(h.study, h.space, waiting=waiting)
                try:
                    prepared = self._store_candidate(h, trial, arch)
                except Exception:
                    self._abandon(h, _storage.trial_id_of(trial))
                    raise
                if prepared is None:  # the same candidate is in flight: ask again
                    in_flight += 1
                    continue
                if prepared.repeat:
                    repeats.append(prepared.stored)  # finished with the earlier result
                    continue
                prepared.repeats = repeats
                return prepared
        except BaseException:
            with h.lock:
                idx.preparing -= 1
            raise
        # The budget is spent, or the loop keeps proposing evaluated candidates or ones in
        # flight (no work yet), or it is still being built.
        self._settle_prepared(h, Prepared(None, None, repeats=repeats))
        return None

    def _settle_prepared(self, h: StudyHandle, prepared: Prepared) -> int | None:
        """Waits for a prepared candidate's write and registers it as live; returns its trial
        id (None for repeats only). Call without ``h.ask_lock`` and ``h.lock``.

        Raises:
            Exception: the write failed; the budget it took is given back.
        """
        idx = h.index
        given_back = 0
        for fut in prepared.repeats:  # repeats are not counted against the budget
            if fut is not None and fut.exception() is not None:
                log.error("storing a repeat of %s failed: %s", h.spec.name, fut.exception())
        live = prepared.live
        storing = prepared.live.fp if prepared.live is not None and not prepared.repeat else ""
        error = prepared.stored.exception() if prepared.stored is not None else None
        if error is not None:
            given_back += prepared.counted
            if live is not None and not self.storage.is_provisional(live.trial_id):
                self._abandon(h, live.trial_id)  # asked and RUNNING, but without its candidate
            live = None
        elif live is not None and prepared.stored is not None:
            stored = prepared.stored.result()
            if isinstance(stored, _storage.StoredTrial):  # an inserted provisional trial
                live = dataclasses.replace(live, trial_id=stored.trial_id, number=stored.number)
        with h.lock:
            idx.preparing -= 1
            idx.originals -= given_back
            if storing:
                idx.storing[storing] -= 1
                if idx.storing[storing] <= 0:
                    del idx.storing[storing]
            if live is not None:
                idx.live[live.trial_id] = live
        if error is not None:
            raise error
        return None if live is None else live.trial_id

    def _abandon(self, h: StudyHandle, tid: int) -> None:
        """Cleans up after a failed preparation: never leave a trial RUNNING that the index
        does not know (it would hold nothing up, and nothing would ever finish it)."""
        if self.storage.is_provisional(tid):
            with contextlib.suppress(KeyError):
                self.storage.take_provisional(tid)  # never stored: nothing to undo
            self.storage.forget(tid)
            return
        with contextlib.suppress(Exception):
            with h.lock:
                h.index.waiting.discard(tid)
            why = "the server could not store this candidate; it was not run"
            self._finish(h, tid, TrialState.FAIL, None, {"fail_reason": why})

    def _store_candidate(
        self, h: StudyHandle, trial: optuna.Trial, arch: dict[str, Any]
    ) -> Prepared | None:
        """Queues the storage of a just-asked trial's candidate (one transaction).

        A provisional trial (``DeferredTrialStorage``) is inserted whole: row, parameters
        and attributes; when it repeats a completed candidate it is inserted completed, with
        that result (``Prepared.repeat``). A real one (a queued retry) gets its attributes.
        The budget is counted now, so the next ask sees it; ``_settle_prepared`` gives it back
        if the write fails. None when the candidate is in flight already (the provisional
        trial is dropped). Caller holds ``h.ask_lock``."""
        idx = h.index
        tid = _storage.trial_id_of(trial)
        with h.lock:
            retry = tid in idx.waiting
        attempt = 0
        candidate: Candidate | None = None
        if retry:  # a re-queued candidate keeps its spec
            frozen = self.storage.get_trial(tid)
            attempt = len(frozen.system_attrs.get("retry_history", []))
            if "candidate" in frozen.user_attrs:
                candidate = Candidate.from_dict(frozen.user_attrs["candidate"])
            # else: a retry of a trial that died before its candidate was stored: rebuild it
            # from the parameters, which the retry carries.
        earlier = None
        fp = ""
        written: Future[Any] | None = None
        if candidate is None:
            candidate = Candidate(
                space=h.spec.space,
                architecture=arch,
                # the loop may set keys per candidate (BOSHNAS: a weight-transfer source)
                recipe={**h.spec.recipe, **h.loop.recipe_overrides(tid)},
                data=dict(h.spec.data),
            )
            user: dict[str, Any] = {
                "candidate": candidate.to_dict(),
                "arch": h.space.describe(arch),
                **dashboard.candidate_rows(candidate.to_dict()),
            }
            fp = candidate.fingerprint()
            earlier = idx.done.get(fp) if attempt == 0 else None
            if earlier is not None:
                user["duplicate_of"], _, user["metrics"] = earlier
                user.update(dashboard.metric_rows(earlier[2]))
            elif self.storage.is_provisional(tid) and self._in_flight(h, fp):
                # Never stored: the loop is asked again. (Library loops create stored trials,
                # but never propose a row that is in flight.)
                self.storage.discard_provisional(tid)
                return None
            if self.storage.is_provisional(tid):
                _, frozen = self.storage.take_provisional(tid)
                frozen.user_attrs.update(user)
                if earlier is not None:
                    frozen.state, frozen.values = TrialState.COMPLETE, list(earlier[1])
                    frozen.datetime_complete = datetime.datetime.now()
                written = self.writer.submit(_storage.insert_trial_op(h.study_id, frozen))
                written.add_done_callback(self._on_inserted(h.study_id, tid))
            elif earlier is not None:
                written = self.writer.submit(
                    _storage.finish_op(tid, TrialState.COMPLETE, earlier[1], user)
                )
            else:
                written = self.writer.submit(_storage.attrs_op(tid, user=user))
        if self.artifacts is not None and earlier is None and written is not None:
            written.add_done_callback(self._draw_when_stored(h, tid, trial.number, arch))
        live = LiveTrial(tid, trial.number, candidate, attempt, fp=fp)
        with h.lock:
            if retry:
                idx.waiting.discard(tid)
            elif earlier is None:
                idx.originals += 1
                idx.repeat_streak = 0
            else:
                idx.repeat_streak += 1
                if idx.repeat_streak >= self._repeat_limit(h) and not idx.exhausted:
                    idx.exhausted = self._exhausted_reason(h, idx.repeat_streak, idx.originals)
                    log.info("study %s: %s", h.spec.name, idx.exhausted)
            if earlier is None:
                idx.storing[live.fp] += 1  # in flight from now on
        if earlier is not None:
            # debug, not info: in small spaces repeats come by the hundred per second, and the
            # trial's ``duplicate_of`` attribute already records each one
            log.debug(
                "trial %d of %s repeats trial %d; reused its result",
                trial.number,
                h.spec.name,
                earlier[0],
            )
        return Prepared(
            written, live, repeat=earlier is not None, counted=not retry and earlier is None
        )

    def _in_flight(self, h: StudyHandle, fp: str) -> bool:
        """Whether a candidate with fingerprint ``fp`` is prepared, leased, being stored or
        finishing in ``h``."""
        idx = h.index
        with h.lock:
            return (
                fp in idx.storing
                or any(live.fp == fp for live in idx.live.values())
                or any(entry[2] == fp for entry in idx.finishing.values())
            )

    def _repeat_limit(self, h: StudyHandle) -> int:
        return max(MIN_REPEAT_STREAK, h.spec.n_trials)

    @staticmethod
    def _exhausted_reason(h: StudyHandle, streak: int, originals: int) -> str:
        return (
            f"the {h.spec.loop} loop proposed {streak} repeated candidates in a row after "
            f"{originals} distinct ones: nothing new left to try (the space may be exhausted)"
        )

    def _draw_when_stored(
        self, h: StudyHandle, trial_id: int, number: int, arch: dict[str, Any]
    ) -> Callable[[Future[Any]], None]:
        """Done-callback of a new candidate's write: queues its picture (see GraphArtifacts);
        a provisional trial's real id is the insert's result."""

        def done(fut: Future[Any]) -> None:
            if fut.exception() is None and self.artifacts is not None:
                real_id = getattr(fut.result(), "trial_id", trial_id)
                self.artifacts.submit(h.space, real_id, number, arch)

        return done

    def _on_inserted(self, study_id: int, provisional_id: int) -> Callable[[Future[Any]], None]:
        """Done-callback of a provisional trial's insert (runs on the writer thread, so it
        takes no study lock): the storage stops showing the in-memory copy."""

        def done(fut: Future[Any]) -> None:
            if fut.exception() is None:
                self.storage.stored(study_id, fut.result().number)
            self.storage.forget(provisional_id)

        return done

    # ------------------------------------------------------------------ preparing ahead

    def _pool_target(self, h: StudyHandle) -> int:
        """How many candidates to keep ready.

        For a loop whose proposals ignore results (random, quasi-random, grid), one per
        worker that asked for this study's trainer within a lease duration (at least 1, at
        most ``MAX_PREPARED``): every active worker's next acquire is then an in-memory pop,
        and preparing early loses nothing. For an adaptive loop (TPE, GP, NSGA-II, BOSHNAS),
        one: each candidate is asked as late as possible, with every result stored so far.
        """
        if not isinstance(h.loop.sampler, NON_ADAPTIVE_SAMPLERS):
            return 1
        horizon = time.monotonic() - self.lease_duration_s
        active = sum(
            1
            for seen, trainers in list(self._active.values())
            if seen >= horizon and h.spec.trainer in trainers
        )
        return max(1, min(MAX_PREPARED, active))

    def _top_up(self, h: StudyHandle, limit: int = TOP_UP_PER_FINISH) -> None:
        """Prepares up to ``limit`` candidates while ``h``'s pool is below its target.

        Called by the RPC that finished a trial, after its own write committed and without
        ``h.lock``, so the database changes an RPC causes are all made before it answers (a
        client that sees its answer sees the storage settled) and the next acquire of any
        worker is an in-memory pop. ``limit`` spreads the filling of a large pool over several
        finishes. A failure here is logged, not raised: the caller's own write is stored, and
        acquire prepares inline when the pool is empty.
        """
        idx = h.index
        try:
            for _ in range(limit):
                with h.ask_lock:
                    with h.lock:
                        if (
                            h.state != RUNNING
                            or idx.waiting
                            or len(idx.pool) + idx.preparing >= self._pool_target(h)
                        ):
                            return
                    prepared = self._prepare(h)
                if prepared is None:
                    with h.lock:
                        self._maybe_complete(h)
                    return
                tid = self._settle_prepared(h, prepared)
                if tid is None:
                    continue
                with h.lock:
                    if h.state == RUNNING:
                        idx.pool.append(tid)
                    else:  # stopped while it was prepared: end it, as stop() does
                        idx.live.pop(tid, None)
                        self._fail_unrun(h, tid, STOPPED_REASON)
                self._notify()
        except Exception:
            log.exception("preparing the next candidate of %s failed", h.spec.name)

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
            if should_prune(h.study, tid, final_step=live.candidate.recipe.get("max_steps")):
                h.study.tell(live.number, state=TrialState.PRUNED)
                h.index.live.pop(tid, None)
                log.info("pruned trial %d of %s at step %d", live.number, h.spec.name, step)
                self._after_finish(h)
                pruned = True
            else:
                pruned = False
        if pruned:
            self._top_up(h)
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
            self._after_trial_hook(h, tid, TrialState.COMPLETE, values)
            # Metrics, values and state in one queued write; the lock is not held while it
            # commits, and a repeated report meanwhile waits for it (``_settle``).
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
            self._after_finish(h)
        self._top_up(h)
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
            self._finish(h, tid, TrialState.FAIL, None)
            h.index.live.pop(tid, None)
            requeued = False
            if released or retryable:
                requeued = self._requeue(h, self.storage.get_trial(tid), reason, count=not released)
            self._after_finish(h)
        self._top_up(h)
        return requeued

    def _finish(
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
            _storage.TrialNotRunning: the trial is finished already; nothing changed.
        """
        self._after_trial_hook(h, tid, state, values)
        if user:
            self.writer.run(_storage.finish_op(tid, state, values, user))
        else:
            self.storage.set_trial_state_values(tid, state, values)

    def _after_trial_hook(
        self, h: StudyHandle, tid: int, state: TrialState, values: list[float] | None
    ) -> None:
        """The sampler's ``after_trial`` hook, as ``Study.tell`` calls it before storing.

        ``tell`` re-reads the trial twice to validate what the server already checked; here the
        hook gets the stored trial only when it does something (the built-in samplers' hooks
        act only on constraint functions, which archsearch never sets; an unknown sampler is
        always called).
        """
        sampler = h.study.sampler
        hook = type(sampler).after_trial is not optuna.samplers.BaseSampler.after_trial
        if hook and getattr(sampler, "_constraints_func", "unknown") is not None:
            sampler.after_trial(h.study, self.storage.get_trial(tid), state, values)

    # ------------------------------------------------------------------ retries and expiry

    def _requeue(self, h: StudyHandle, failed: FrozenTrial, reason: str, count: bool) -> bool:
        """Adds a WAITING copy of ``failed``; False when its retry budget is spent."""
        failures = int(failed.system_attrs.get(FAILURES_ATTR, 0)) + (1 if count else 0)
        if h.state != RUNNING:  # a stopped study leaves nothing waiting
            log.info(
                "trial %d of %s failed after its study stopped; not retried (%s)",
                failed.number,
                h.spec.name,
                loggable(reason),
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
                },
            ),
        )
        h.index.waiting.add(tid)
        log.info("re-queued trial %d of %s (%s)", failed.number, h.spec.name, loggable(reason))
        self._notify()
        return True

    def _on_stale_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna's heartbeat-stale callback, for ``fail_stale_trials`` when this Optuna lacks
        the stale-trial query :meth:`reap_once` uses: re-queue the candidate, and record the
        reason on the failed trial (with SQL: Optuna refuses attributes on finished trials)."""
        h = self._handles.get(study.study_name)
        if h is None:
            return
        reason = self.leases.expiry_reason()
        self.writer.run(
            _storage.attrs_op(_storage.trial_id_of(trial), user={"fail_reason": reason})
        )
        with h.lock:
            h.index.live.pop(_storage.trial_id_of(trial), None)
            self._requeue(h, trial, reason, count=True)

    def reap_once(self) -> None:
        """Fails expired leases (re-queueing their candidates) and completes finished studies.

        Nothing expires during the first lease duration after this server started: a lease
        whose last heartbeat predates the start (its worker finished or heartbeated while no
        server answered) gets that long to be heartbeated, completed or failed again.
        """
        expire = self.leases.expiring()
        for h in self.handles():
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
                self._maybe_complete(h)

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
                self._finish(h, tid, TrialState.FAIL, None, {"fail_reason": reason})
            except _storage.TrialNotRunning:
                continue
            h.index.live.pop(tid, None)
            self._requeue(h, self.storage.get_trial(tid), reason, count=True)
            self._notify()

    def _reap_loop(self) -> None:
        while not self._stop.wait(self.reap_interval_s):
            try:
                self.reap_once()
            except Exception:  # keep reaping whatever one study did
                log.exception("lease reaper failed; retrying")

    # ------------------------------------------------------------------ study state

    def _after_finish(self, h: StudyHandle) -> None:
        """Index bookkeeping after a trial finished (caller holds ``h.lock``); the caller then
        calls ``_top_up`` after releasing it."""
        self._maybe_complete(h)
        self._notify()

    def _maybe_complete(self, h: StudyHandle) -> None:
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
            reason = idx.exhausted or f"n_trials reached: {idx.originals} distinct candidates"
            self.storage.set_study_user_attr(h.study_id, COMPLETED_REASON_ATTR, reason)
            self._set_state(h, COMPLETED)
            log.info("study %s completed: %s", h.spec.name, reason)

    def _set_state(self, h: StudyHandle, state: str) -> None:
        self.storage.set_study_user_attr(h.study_id, STATE_ATTR, state)
        h.state = state

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
