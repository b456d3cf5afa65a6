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

Prepared candidates: when a trial finishes, the next candidate is asked from the loop and
stored at once (a RUNNING trial with its ``candidate`` but no lease yet), so the next acquire
only writes a lease. A server that stops keeps them: at start-up RUNNING trials without a
lease return to the pool; stopping a study turns them back into WAITING trials.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import logging
import math
import secrets
import threading
import time
import warnings
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from archsearch.search import SearchLoop, ServerStudy, make_loop, make_pruner, should_prune
from archsearch.server._errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from archsearch.server._spec import AGGREGATE_METRICS, METRIC_RE, SearchSpec
from archsearch.server._storage import open_storage, write_trial_attrs
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

    Hot paths touch the database only to write: acquiring a prepared candidate is one
    transaction (lease, worker, attempt and heartbeat), completing one is two (metrics, then
    Optuna's ``tell``). When a trial finishes, the next candidate is prepared at once (asked
    from the loop and stored with its spec), so the worker's next acquire finds it ready.

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
        self.storage = optuna.storages.get_storage(self.rdb)
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
        with h.lock:
            if h.state != RUNNING:
                return None
            idx = h.index
            # Queued retries first (Optuna's ask pops them), then a prepared candidate.
            tid = None if idx.waiting or not idx.pool else idx.pool.popleft()
            if tid is None:
                tid = self._prepare(h)
            if tid is None:
                self._maybe_complete(h)
                return None
            live = idx.live[tid]
            live.lease_id = f"{h.study_id}.{tid}.{secrets.token_hex(12)}"
            write_trial_attrs(
                self.rdb,
                tid,
                user={"worker": worker_id, "attempt": live.attempt},
                system={LEASE_ATTR: live.lease_id},
                heartbeat=True,
            )
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

    def _prepare(self, h: StudyHandle) -> int | None:
        """Asks the loop for the next candidate and stores it; None when the budget is spent.

        Samplers re-propose evaluated points in small discrete spaces (TPE does); training the
        same candidate with the same recipe and seed again would only cost a worker's time, so
        a repeat is completed at once with the earlier result (``duplicate_of``), which keeps
        the budget and the sampler's history honest. Caller holds ``h.lock``.
        """
        idx = h.index
        for _ in range(MAX_DUPLICATE_ASKS):
            if not idx.waiting and idx.originals >= h.spec.n_trials:
                return None
            trial, arch = h.loop.ask(h.study, h.space, waiting=bool(idx.waiting))
            tid = trial._trial_id
            try:
                prepared = self._store_candidate(h, trial, arch)
            except Exception:
                # Never leave a trial RUNNING that the index does not know: it would hold
                # nothing up, and nothing would ever finish it.
                idx.waiting.discard(tid)
                self._finish(h, tid, TrialState.FAIL, None)
                raise
            if prepared is None:
                continue  # a repeat of a completed candidate, finished with its result
            candidate, attempt = prepared
            idx.live[tid] = LiveTrial(tid, trial.number, candidate, attempt)
            return tid
        return None  # the loop keeps proposing evaluated candidates; ask again later

    def _store_candidate(
        self, h: StudyHandle, trial: optuna.Trial, arch: dict[str, Any]
    ) -> tuple[Candidate, int] | None:
        """Records the candidate of a just-asked trial; None when it repeats a completed one
        (then the trial is completed with that result). Caller holds ``h.lock``."""
        idx = h.index
        tid = trial._trial_id
        attempt = 0
        if tid in idx.waiting:  # a re-queued candidate keeps its spec
            idx.waiting.discard(tid)
            frozen = self.storage.get_trial(tid)
            attempt = len(frozen.system_attrs.get("retry_history", []))
            if "candidate" in frozen.user_attrs:
                return Candidate.from_dict(frozen.user_attrs["candidate"]), attempt
            # A retry of a trial that died before its candidate was stored: rebuild it from
            # the parameters, which the retry carries.
        else:
            idx.originals += 1
        candidate = Candidate(
            space=h.spec.space,
            architecture=arch,
            recipe=dict(h.spec.recipe),
            data=dict(h.spec.data),
        )
        user = {"candidate": candidate.to_dict(), "arch": h.space.describe(arch)}
        earlier = idx.done.get(candidate.fingerprint()) if attempt == 0 else None
        if earlier is not None:
            number, values, metrics = earlier
            write_trial_attrs(
                self.rdb, tid, user={**user, "duplicate_of": number, "metrics": metrics}
            )
            self._finish(h, tid, TrialState.COMPLETE, values)
            log.info(
                "trial %d of %s repeats trial %d; reused its result",
                trial.number,
                h.spec.name,
                number,
            )
            return None
        write_trial_attrs(self.rdb, tid, user=user)
        return candidate, attempt

    def _prepare_next(self, h: StudyHandle) -> None:
        """Keeps one candidate ready for the next acquire (caller holds ``h.lock``).

        Queued retries are left WAITING (acquire pops them); so is an empty budget.
        """
        idx = h.index
        if h.state == RUNNING and not idx.pool and not idx.waiting:
            tid = self._prepare(h)
            if tid is not None:
                idx.pool.append(tid)

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
            with h.lock:
                if self._live(h, tid, lease_id) is None:
                    self._refuse_finished(h, self._not_live(h, tid, lease_id))
        self.rdb.record_heartbeat(tid)
        return time.time() + self.lease_duration_s, False

    def report(self, lease_id: str, step: int, value: float) -> tuple[bool, float]:
        """Stores an intermediate value; returns (should_prune, new deadline)."""
        _check_finite("value", value)
        if not 0 <= step < 2**62:
            raise InvalidArgument(f"step must be >= 0, got {step}")
        h, tid = self._lease_handle(lease_id)
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
            write_trial_attrs(self.rdb, tid, user=user)
            self._finish(h, tid, TrialState.COMPLETE, values)
            h.index.live.pop(tid, None)
            h.index.done.setdefault(live.candidate.fingerprint(), (live.number, values, metrics))
            self._after_finish(h)
        return values, TrialState.COMPLETE

    def fail(self, lease_id: str, reason: str, retryable: bool, released: bool = False) -> bool:
        """Fails a leased trial; re-queues it when allowed. Returns whether it was re-queued."""
        reason = (reason or "no reason given")[:MAX_TEXT]
        h, tid = self._lease_handle(lease_id)
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
        return requeued

    def _finish(
        self, h: StudyHandle, tid: int, state: TrialState, values: list[float] | None
    ) -> None:
        """``Study.tell`` for a trial this server knows is RUNNING, with validated values.

        ``tell`` re-reads the trial twice to validate what the server already checked; here the
        sampler's ``after_trial`` hook gets the stored trial only when it does something (the
        built-in samplers' hooks act only on constraint functions, which archsearch never
        sets; an unknown sampler is always called).
        """
        sampler = h.study.sampler
        hook = type(sampler).after_trial is not optuna.samplers.BaseSampler.after_trial
        if hook and getattr(sampler, "_constraints_func", "unknown") is not None:
            sampler.after_trial(h.study, self.storage.get_trial(tid), state, values)
        self.storage.set_trial_state_values(tid, state, values)

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
            if any(live.lease_id for live in list(h.index.live.values())):
                with h.lock:
                    optuna.storages.fail_stale_trials(h.study)
            with h.lock:
                self._maybe_complete(h)

    def _reap_loop(self) -> None:
        while not self._stop.wait(self.reap_interval_s):
            try:
                self.reap_once()
            except Exception:  # keep reaping whatever one study did
                log.exception("lease reaper failed; retrying")

    # ------------------------------------------------------------------ study state

    def _after_finish(self, h: StudyHandle) -> None:
        self._prepare_next(h)
        self._maybe_complete(h)
        self._notify()

    def _maybe_complete(self, h: StudyHandle) -> None:
        idx = h.index
        if h.state != RUNNING:
            return
        if idx.originals >= h.spec.n_trials and not idx.live and not idx.waiting:
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
    from archsearch.worker._aggregate import compute_aggregate

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
