"""The study manager: studies, leased trials, retries and pruning on top of Optuna storage.

Everything lives in the Optuna storage (DESIGN.md principle 1). In memory the manager keeps
only what it can rebuild from the storage at start-up: one handle per archsearch study (its
parsed spec, the Optuna study object, the design space and the search loop) and a lock per
study that serialises the study's state transitions inside this process.

Where things are stored:
    * study user attributes: ``archsearch:spec`` (the validated spec), ``archsearch:state``
      (running/stopped/completed), ``archsearch:created_at``; metric names via
      ``set_metric_names`` so optuna-dashboard labels its axes;
    * trial user attributes (visible in the dashboard): ``candidate`` (the full candidate spec),
      ``arch`` (compact description), ``worker``, ``attempt``, ``metrics`` (every raw metric the
      worker reported), ``info`` (provenance), ``fail_reason``;
    * trial system attributes: ``archsearch:lease`` (the current lease id),
      ``archsearch:failures`` (failures counted against the retry budget), and Optuna's own
      ``failed_trial``/``retry_history`` so ``RetryHeartbeatStaleTrialCallback``'s helpers work;
    * lease liveness: Optuna's heartbeat table (``record_heartbeat``); a lease expires when its
      trial's heartbeat is older than the lease duration, and ``fail_stale_trials`` fails it.

Leases (DESIGN.md principle 3): acquiring a trial gives it a fresh lease id (study id, trial
id and a random token) and a heartbeat. Heartbeats and intermediate reports extend it. A reaper
thread runs ``optuna.storages.fail_stale_trials`` on every study; its callback re-queues the
candidate as a WAITING trial with the same parameters and candidate, up to ``max_retries``
failures. A report about a lease that is not the trial's current one, or whose trial is no
longer RUNNING, changes nothing and is refused.

Prepared candidates: when a trial finishes, the RPC that finished it asks the loop for up to
two more candidates while the study's pool of ready candidates is smaller than the number of
workers active on it, and stores each at once (a RUNNING trial with its ``candidate`` but no
lease yet), so an acquire is an in-memory pop plus one lease write. A server that stops keeps
them: at start-up RUNNING trials without a lease return to the pool; stopping a study turns
them back into WAITING trials.

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

import collections
import contextlib
import dataclasses
import datetime
import json
import logging
import math
import secrets
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from archsearch.search import SearchLoop, ServerStudy, make_loop, make_pruner, should_prune
from archsearch.server._artifacts import GraphArtifacts
from archsearch.server._errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from archsearch.server._spec import AGGREGATE_METRICS, METRIC_RE, SearchSpec
from archsearch.server._storage import (
    DeferredTrialStorage,
    StoredTrial,
    TrialNotRunning,
    attrs_op,
    finish_op,
    heartbeat_op,
    insert_trial_op,
    lease_op,
    open_storage,
    write_trial_attrs,
)
from archsearch.server._writer import StorageWriter
from archsearch.spaces import Candidate, DesignSpace, SpecError

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# The server drives heartbeats itself (record_heartbeat/fail_stale_trials), not Study.optimize.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
log = logging.getLogger("archsearch.server")

SPEC_ATTR = "archsearch:spec"
STATE_ATTR = "archsearch:state"
CREATED_ATTR = "archsearch:created_at"
LEASE_ATTR = "archsearch:lease"
FAILURES_ATTR = "archsearch:failures"

RUNNING, STOPPED, COMPLETED = "running", "stopped", "completed"
MAX_METRICS = 256
MAX_INFO = 64
MAX_TEXT = 2000
MAX_DUPLICATE_ASKS = 20
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


@dataclasses.dataclass
class LiveTrial:
    """A RUNNING trial of this server: prepared (no lease yet) or leased to a worker."""

    trial_id: int
    number: int
    candidate: Candidate
    attempt: int
    lease_id: str = ""


@dataclasses.dataclass
class Prepared:
    """A candidate whose storage is queued: the write, the live trial it becomes (its id and
    number are the stored ones once the write is done), and repeats stored on the way."""

    stored: Future[Any] | None
    live: LiveTrial | None
    repeat: bool = False
    repeats: list[Future[Any] | None] = dataclasses.field(default_factory=list)
    #: False for a queued retry: it does not count against the budget.
    counted: bool = True


@dataclasses.dataclass
class StudyIndex:
    """In-memory index of one study, rebuilt from the storage at start-up.

    The server is the storage's only writer, so it can keep what its hot paths need here
    instead of re-reading every trial on each call: the budget count, the queued retries, the
    live trials with their leases, prepared candidates, and completed candidates by
    fingerprint (to reuse results of repeated candidates).
    """

    originals: int = 0
    waiting: set[int] = dataclasses.field(default_factory=set)
    live: dict[int, LiveTrial] = dataclasses.field(default_factory=dict)
    pool: collections.deque[int] = dataclasses.field(default_factory=collections.deque)
    #: Trials whose finishing write is queued: lease id and the write's future.
    finishing: dict[int, tuple[str, Future[None]]] = dataclasses.field(default_factory=dict)
    #: Candidates being asked and stored right now (the study is not complete meanwhile).
    preparing: int = 0
    done: dict[str, tuple[int, list[float], dict[str, Any]]] = dataclasses.field(
        default_factory=dict
    )


@dataclasses.dataclass
class StudyHandle:
    """What the manager keeps in memory about one archsearch study (all derivable)."""

    spec: SearchSpec
    study: ServerStudy
    space: DesignSpace
    loop: SearchLoop
    lock: threading.RLock
    state: str
    created_at: str
    index: StudyIndex = dataclasses.field(default_factory=StudyIndex)
    #: Serialises the loop's ``ask`` (the loop contract) apart from ``lock``, which guards
    #: only the in-memory index and is never held while a sampler runs.
    ask_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @property
    def study_id(self) -> int:
        return self.study._study_id


@dataclasses.dataclass(frozen=True)
class Grant:
    """A trial handed to a worker."""

    lease_id: str
    study_name: str
    trial_number: int
    deadline_unix: float
    candidate: Candidate
    trainer: str
    objective_metrics: tuple[str, ...]
    intermediate_metric: str


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    trainers: tuple[str, ...]
    device: str
    memory_bytes: int
    hostname: str
    last_seen: float


def _check_finite(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number, got {value!r}")


def parse_lease_id(lease_id: str) -> tuple[int, int]:
    """(study id, trial id) of a lease id; NotFound for anything this server did not issue."""
    parts = lease_id.split(".")
    if (
        len(parts) != 3
        or not parts[0].isdigit()
        or not parts[1].isdigit()
        or not parts[2]
        or len(lease_id) > 80
    ):
        raise NotFound(f"unknown lease {lease_id[:80]!r}: not a lease this server issued")
    return int(parts[0]), int(parts[1])


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
        self.rdb = open_storage(
            storage_url, lease_duration_s, heartbeat_interval_s, self._on_stale_trial
        )
        # One cache for every study object: this server is the storage's only writer.
        self.storage = DeferredTrialStorage(self.rdb)
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
                    frozen.study_name,
                    e,
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
        return StudyHandle(
            spec=spec,
            study=study,
            space=spec.build_space(),
            loop=loop,
            lock=threading.RLock(),
            state=state,
            created_at=created_at,
        )

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
                    idx.originals += 1
                if t.state == TrialState.WAITING:
                    idx.waiting.add(t._trial_id)
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
                        t._trial_id,
                        t.number,
                        Candidate.from_dict(t.user_attrs["candidate"]),
                        len(t.system_attrs.get("retry_history", [])),
                        str(t.system_attrs.get(LEASE_ATTR, "")),
                    )
                    idx.live[t._trial_id] = live
                    if not live.lease_id:
                        idx.pool.append(t._trial_id)
            h.index = idx
            for t in orphans:
                self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                self._requeue(
                    h,
                    self.storage.get_trial(t._trial_id),
                    "server stopped while preparing it",
                    count=False,
                )

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
        """Stops handing out trials; prepared candidates go back to the queue (WAITING)."""
        h = self.get(name)
        with h.lock:
            if h.state == RUNNING:
                self._set_state(h, STOPPED)
                idx = h.index
                while idx.pool:
                    tid = idx.pool.popleft()
                    self.storage.set_trial_state_values(tid, TrialState.WAITING)
                    idx.live.pop(tid, None)
                    idx.waiting.add(tid)
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
    ) -> Grant | None:
        """Hands out a trial, waiting up to ``timeout_s`` for one; None means no work."""
        if study_name:
            self.get(study_name)  # NotFound for an unknown study, before any waiting
        deadline = time.monotonic() + max(0.0, timeout_s)
        self._active[worker_id] = (time.monotonic(), trainers)
        while True:
            grant = self._try_acquire(worker_id, trainers, study_name)
            if grant is not None:
                return grant
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                return None
            with self._work:
                self._work.wait(timeout=min(remaining, 1.0))

    def _try_acquire(
        self, worker_id: str, trainers: tuple[str, ...], study_name: str
    ) -> Grant | None:
        for h in self.handles():
            if study_name and h.spec.name != study_name:
                continue
            if h.state != RUNNING or h.spec.trainer not in trainers:
                continue
            grant = self._acquire_from(h, worker_id)
            if grant is not None:
                return grant
        return None

    def _acquire_from(self, h: StudyHandle, worker_id: str) -> Grant | None:
        """Leases a prepared candidate of ``h`` (preparing one first when none is ready).

        The hot path is an in-memory pop and one queued lease write; the study lock is held
        only while the index changes, never while the database works, and the RPC answers
        once the lease is committed.
        """
        idx = h.index
        while True:
            with h.lock:
                if h.state != RUNNING:
                    return None
                # Queued retries first (Optuna's ask pops them), then a prepared candidate.
                tid = None if idx.waiting or not idx.pool else idx.pool.popleft()
                if tid is not None:
                    live, written = self._lease(h, tid, worker_id)
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
                live, written = self._lease(h, tid, worker_id)
            break
        try:
            written.result()
        except Exception:
            with h.lock:  # the lease was never stored: the candidate is still free
                if idx.live.get(tid) is live and live.lease_id:
                    live.lease_id = ""
                    idx.pool.appendleft(tid)
            raise
        return Grant(
            lease_id=live.lease_id,
            study_name=h.spec.name,
            trial_number=live.number,
            deadline_unix=time.time() + self.lease_duration_s,
            candidate=live.candidate,
            trainer=h.spec.trainer,
            objective_metrics=h.spec.raw_objective_metrics,
            intermediate_metric=h.spec.intermediate_metric,
        )

    def _lease(self, h: StudyHandle, tid: int, worker_id: str) -> tuple[LiveTrial, Future[None]]:
        """Gives prepared trial ``tid`` a fresh lease and queues its write (caller holds
        ``h.lock``; the caller waits for the write after releasing it)."""
        live = h.index.live[tid]
        live.lease_id = f"{h.study_id}.{tid}.{secrets.token_hex(12)}"
        written = self.writer.submit(
            lease_op(
                tid,
                user={"worker": worker_id, "attempt": live.attempt},
                system={LEASE_ATTR: live.lease_id},
            ),
            urgent=True,
        )
        return live, written

    def _prepare(self, h: StudyHandle) -> Prepared | None:
        """Asks the loop for the next candidate and queues its storage; None when the budget is
        spent. The caller finishes with :meth:`_settle_prepared` after releasing
        ``h.ask_lock``, so the next ask overlaps this one's commit.

        Samplers re-propose evaluated points in small discrete spaces (TPE does); training the
        same candidate with the same recipe and seed again would only cost a worker's time, so
        a repeat is stored completed at once with the earlier result (``duplicate_of``), which
        keeps the budget and the sampler's history honest.

        Caller holds ``h.ask_lock`` (loops are asked one at a time) but not ``h.lock``: a slow
        sampler never blocks leases, heartbeats or reports of the study.
        """
        idx = h.index
        with h.lock:
            idx.preparing += 1  # the study is not complete while a candidate is on its way
        repeats: list[Future[Any] | None] = []
        try:
            for _ in range(MAX_DUPLICATE_ASKS):
                with h.lock:
                    if h.state != RUNNING:
                        break
                    if not idx.waiting and idx.originals >= h.spec.n_trials:
                        break
                    waiting = bool(idx.waiting)
                with self.storage.deferring():
                    trial, arch = h.loop.ask(h.study, h.space, waiting=waiting)
                try:
                    prepared = self._store_candidate(h, trial, arch)
                except Exception:
                    self._abandon(h, trial._trial_id)
                    raise
                if prepared.repeat:
                    repeats.append(prepared.stored)  # finished with the earlier result
                    continue
                prepared.repeats = repeats
                return prepared
        except BaseException:
            with h.lock:
                idx.preparing -= 1
            raise
        # The budget is spent, or the loop keeps proposing evaluated candidates.
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
        for fut in prepared.repeats:  # repeats are provisional trials: counted, never retries
            if fut is not None and fut.exception() is not None:
                given_back += 1
                log.error("storing a repeat of %s failed: %s", h.spec.name, fut.exception())
        live = prepared.live
        error = prepared.stored.exception() if prepared.stored is not None else None
        if error is not None:
            given_back += prepared.counted
            if live is not None and not self.storage.is_provisional(live.trial_id):
                self._abandon(h, live.trial_id)  # asked and RUNNING, but without its candidate
            live = None
        elif live is not None and prepared.stored is not None:
            stored = prepared.stored.result()
            if isinstance(stored, StoredTrial):  # an inserted provisional trial
                live = dataclasses.replace(live, trial_id=stored.trial_id, number=stored.number)
        with h.lock:
            idx.preparing -= 1
            idx.originals -= given_back
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
            self._finish(h, tid, TrialState.FAIL, None)

    def _store_candidate(
        self, h: StudyHandle, trial: optuna.Trial, arch: dict[str, Any]
    ) -> Prepared:
        """Queues the storage of a just-asked trial's candidate (one transaction).

        A provisional trial (see ``DeferredTrialStorage``) is inserted whole: row, parameters
        and attributes; when it repeats a completed candidate it is inserted completed, with
        that result (``Prepared.repeat``). A real one (a queued retry) gets its attributes.
        The budget is counted now, so the next ask sees it; ``_settle_prepared`` gives it back
        if the write fails. Caller holds ``h.ask_lock``."""
        idx = h.index
        tid = trial._trial_id
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
            }
            earlier = idx.done.get(candidate.fingerprint()) if attempt == 0 else None
            if earlier is not None:
                user["duplicate_of"], _, user["metrics"] = earlier
            if self.storage.is_provisional(tid):
                _, frozen = self.storage.take_provisional(tid)
                frozen.user_attrs.update(user)
                if earlier is not None:
                    frozen.state, frozen.values = TrialState.COMPLETE, list(earlier[1])
                    frozen.datetime_complete = datetime.datetime.now()
                written = self.writer.submit(insert_trial_op(h.study_id, frozen))
                written.add_done_callback(self._on_inserted(h.study_id, tid))
            elif earlier is not None:
                written = self.writer.submit(finish_op(tid, TrialState.COMPLETE, earlier[1], user))
            else:
                written = self.writer.submit(attrs_op(tid, user=user))
        if self.artifacts is not None and earlier is None and written is not None:
            written.add_done_callback(self._draw_when_stored(h, tid, trial.number, arch))
        with h.lock:
            if retry:
                idx.waiting.discard(tid)
            else:
                idx.originals += 1
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
            written,
            LiveTrial(tid, trial.number, candidate, attempt),
            repeat=earlier is not None,
            counted=not retry,
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
                    else:  # stopped while it was prepared: queue it, as stop() does
                        self.storage.set_trial_state_values(tid, TrialState.WAITING)
                        idx.live.pop(tid, None)
                        idx.waiting.add(tid)
                self._notify()
        except Exception:
            log.exception("preparing the next candidate of %s failed", h.spec.name)

    # ------------------------------------------------------------------ leases

    def _lease_handle(self, lease_id: str) -> tuple[StudyHandle, int]:
        study_id, trial_id = parse_lease_id(lease_id)
        h = self._by_id.get(study_id)
        if h is None:
            raise NotFound(f"unknown lease {lease_id!r}: its study does not exist")
        return h, trial_id

    def _live(self, h: StudyHandle, trial_id: int, lease_id: str) -> LiveTrial | None:
        live = h.index.live.get(trial_id)
        return live if live is not None and live.lease_id == lease_id else None

    def _not_live(self, h: StudyHandle, trial_id: int, lease_id: str) -> FrozenTrial:
        """The stored trial of a lease that is not live; NotFound when it was never issued."""
        try:
            frozen = self.storage.get_trial(trial_id)
        except KeyError:
            raise NotFound(f"unknown lease {lease_id!r}: its trial does not exist") from None
        # The lease id names its study and trial, so a match also proves the trial is h's.
        if frozen.system_attrs.get(LEASE_ATTR) != lease_id:
            raise NotFound(f"unknown lease {lease_id!r}: not the lease of trial {frozen.number}")
        return frozen

    def _refuse_finished(self, h: StudyHandle, frozen: FrozenTrial) -> None:
        if frozen.state == TrialState.FAIL:
            retry = self._retry_of(h, frozen.number)
            where = f"; its candidate was re-queued as trial {retry}" if retry is not None else ""
            raise FailedPrecondition(
                f"lease on trial {frozen.number} of {h.spec.name} expired or was given up "
                f"(trial is FAIL{where}); stop working on it"
            )
        raise FailedPrecondition(
            f"trial {frozen.number} of {h.spec.name} is already {frozen.state.name}; "
            "stop working on it"
        )

    def _retry_of(self, h: StudyHandle, number: int) -> int | None:
        """Number of the trial that retries trial ``number``, if any."""
        for t in self.trials(h):
            history = t.system_attrs.get("retry_history", [])
            if history and history[-1] == number:
                return t.number
        return None

    def heartbeat(self, lease_id: str) -> tuple[float, bool]:
        h, tid = self._lease_handle(lease_id)
        if self._live(h, tid, lease_id) is None:
            self._settle(h, tid, lease_id)
            with h.lock:
                if self._live(h, tid, lease_id) is None:
                    self._refuse_finished(h, self._not_live(h, tid, lease_id))
        self.writer.run(heartbeat_op(tid))
        return time.time() + self.lease_duration_s, False

    def report(self, lease_id: str, step: int, value: float) -> tuple[bool, float]:
        """Stores an intermediate value; returns (should_prune, new deadline)."""
        _check_finite("value", value)
        if not 0 <= step < 2**62:
            raise InvalidArgument(f"step must be >= 0, got {step}")
        h, tid = self._lease_handle(lease_id)
        self._settle(h, tid, lease_id)
        with h.lock:
            live = self._live(h, tid, lease_id)
            if live is None:
                frozen = self._not_live(h, tid, lease_id)
                if frozen.state == TrialState.PRUNED:
                    return True, time.time()  # repeated report after the prune decision
                self._refuse_finished(h, frozen)
                raise AssertionError("unreachable")
            self.storage.set_trial_intermediate_value(tid, step, float(value))
            self.rdb.record_heartbeat(tid)
            if should_prune(h.study, tid):
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
        return False, time.time() + self.lease_duration_s

    def complete(
        self, lease_id: str, metrics: dict[str, float], info: dict[str, str]
    ) -> tuple[list[float], TrialState]:
        if len(metrics) > MAX_METRICS:
            raise InvalidArgument(f"at most {MAX_METRICS} metrics per trial, got {len(metrics)}")
        for k, v in metrics.items():
            if not METRIC_RE.match(k):
                raise InvalidArgument(f"invalid metric name {k!r}: letters, digits, '_' and '.'")
            _check_finite(f"metric {k!r}", v)
        if len(info) > MAX_INFO or any(len(k) > 128 or len(v) > MAX_TEXT for k, v in info.items()):
            raise InvalidArgument(
                f"info: at most {MAX_INFO} entries, keys <= 128 and values <= {MAX_TEXT} characters"
            )
        h, tid = self._lease_handle(lease_id)
        metrics = {k: float(v) for k, v in metrics.items()}
        self._settle(h, tid, lease_id)
        idx = h.index
        with h.lock:
            live = self._live(h, tid, lease_id)
            if live is None:
                frozen = self._not_live(h, tid, lease_id)
                if frozen.state == TrialState.COMPLETE:
                    if frozen.user_attrs.get("metrics") == metrics:
                        return list(frozen.values or []), frozen.state  # the same report again
                    raise AlreadyExists(
                        f"trial {frozen.number} of {h.spec.name} was already completed "
                        "with other metrics"
                    )
                self._refuse_finished(h, frozen)
                raise AssertionError("unreachable")
            values = objective_values(h.spec, metrics)
            user: dict[str, Any] = {"metrics": metrics}
            if info:
                user["info"] = dict(info)
            self._after_trial_hook(h, tid, TrialState.COMPLETE, values)
            # Metrics, values and state in one queued write; the lock is not held while it
            # commits, and a repeated report meanwhile waits for it (``_settle``).
            written = self.writer.submit(finish_op(tid, TrialState.COMPLETE, values, user))
            idx.live.pop(tid, None)
            idx.finishing[tid] = (lease_id, written)
        try:
            written.result()
        except TrialNotRunning as e:
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

    def _settle(self, h: StudyHandle, tid: int, lease_id: str) -> None:
        """Waits until a queued finishing write of this lease is committed (or failed), so a
        repeated or concurrent call sees the trial's stored state."""
        with h.lock:
            pending = h.index.finishing.get(tid)
        if pending is not None and pending[0] == lease_id:
            with contextlib.suppress(Exception):  # its own caller reports the failure
                pending[1].result()

    def fail(self, lease_id: str, reason: str, retryable: bool, released: bool = False) -> bool:
        """Fails a leased trial; re-queues it when allowed. Returns whether it was re-queued."""
        reason = (reason or "no reason given")[:MAX_TEXT]
        h, tid = self._lease_handle(lease_id)
        self._settle(h, tid, lease_id)
        with h.lock:
            live = self._live(h, tid, lease_id)
            if live is None:
                frozen = self._not_live(h, tid, lease_id)
                if (
                    frozen.state == TrialState.FAIL
                    and frozen.user_attrs.get("fail_reason") == reason
                ):
                    return self._retry_of(h, frozen.number) is not None  # the same report again
                self._refuse_finished(h, frozen)
                raise AssertionError("unreachable")
            write_trial_attrs(self.rdb, tid, user={"fail_reason": reason})
            self._finish(h, tid, TrialState.FAIL, None)
            h.index.live.pop(tid, None)
            requeued = False
            if released or retryable:
                requeued = self._requeue(h, self.storage.get_trial(tid), reason, count=not released)
            self._after_finish(h)
        self._top_up(h)
        return requeued

    def _finish(
        self, h: StudyHandle, tid: int, state: TrialState, values: list[float] | None
    ) -> None:
        """``Study.tell`` for a trial this server knows is RUNNING, with validated values."""
        self._after_trial_hook(h, tid, state, values)
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
        if failures > h.spec.max_retries:
            log.warning(
                "trial %d of %s failed %d times; not retried (%s)",
                failed.number,
                h.spec.name,
                failures,
                reason,
            )
            return False
        history = [*failed.system_attrs.get("retry_history", []), failed.number]
        user_attrs = {k: v for k, v in failed.user_attrs.items() if k in ("candidate", "arch")}
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
        log.info("re-queued trial %d of %s (%s)", failed.number, h.spec.name, reason)
        self._notify()
        return True

    def _on_stale_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna's heartbeat-stale callback: the lease expired; re-queue the candidate."""
        h = self._handles.get(study.study_name)
        if h is None:
            return
        with h.lock:  # a finished trial takes no attributes: the reason goes on the retry
            h.index.live.pop(trial._trial_id, None)
            self._requeue(h, trial, "lease expired", count=True)

    def reap_once(self) -> None:
        """Fails expired leases (re-queueing their candidates) and completes finished studies."""
        for h in self.handles():
            if any(live.lease_id for live in list(h.index.live.values())) and self._has_stale(h):
                with h.lock:
                    # Queued leases, heartbeats and finishes first: the stale check must see
                    # what this server already decided (the writer never takes ``h.lock``).
                    self.writer.barrier()
                    optuna.storages.fail_stale_trials(h.study)
            with h.lock:
                self._maybe_complete(h)

    def _has_stale(self, h: StudyHandle) -> bool:
        """Whether any lease of ``h`` looks expired, checked without the study lock: the
        common answer is no, and then leases and reports are not held up by the check."""
        stale_ids = getattr(self.rdb, "_get_stale_trial_ids", None)
        if stale_ids is None:  # pragma: no cover - depends on Optuna's internals
            return True
        return bool(stale_ids(h.study_id))

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
            idx.originals >= h.spec.n_trials
            and not idx.live
            and not idx.waiting
            and not idx.finishing
            and not idx.preparing
        ):
            self._set_state(h, COMPLETED)
            log.info("study %s completed", h.spec.name)

    def _set_state(self, h: StudyHandle, state: str) -> None:
        self.storage.set_study_user_attr(h.study_id, STATE_ATTR, state)
        h.state = state

    def _notify(self) -> None:
        with self._work:
            self._work.notify_all()

    def workers(self) -> list[WorkerInfo]:
        return list(self._workers.values())


def objective_values(spec: SearchSpec, metrics: dict[str, float]) -> list[float]:
    """The study's objective values from a trial's raw metrics.

    Raw metrics are stored as reported; aggregates (the GLUE averages) are computed from them
    here, the one place that reads them for the objective (DESIGN.md principle 5).
    """
    from archsearch.spaces import compute_aggregate

    values = []
    for o in spec.objectives:
        if o.metric in AGGREGATE_METRICS:
            try:
                values.append(compute_aggregate(o.metric, metrics))
            except ValueError as e:
                raise InvalidArgument(f"cannot compute objective {o.metric}: {e}") from e
        elif o.metric in metrics:
            values.append(metrics[o.metric])
        else:
            raise InvalidArgument(
                f"metrics lack the objective {o.metric!r} of study {spec.name}; "
                f"got {sorted(metrics)}"
            )
    return values


def trial_summary(t: FrozenTrial) -> dict[str, Any]:
    """A JSON-ready view of a trial for logs and ``--json`` output."""
    return {
        "number": t.number,
        "state": t.state.name,
        "values": t.values,
        "params": t.params,
        "metrics": t.user_attrs.get("metrics", {}),
        "arch": t.user_attrs.get("arch", ""),
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
