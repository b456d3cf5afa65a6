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

Leases (DESIGN.md principle 3): acquiring a trial gives it a fresh lease id (trial id + random
token) and a heartbeat. Heartbeats and intermediate reports extend it. A reaper thread runs
``optuna.storages.fail_stale_trials`` on every study; its callback re-queues the candidate as a
WAITING trial with the same parameters and candidate, up to ``max_retries`` failures. A report
about a lease that is not the trial's current one, or whose trial is no longer RUNNING, changes
nothing and is refused.
"""

from __future__ import annotations

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
from archsearch.server._storage import open_storage
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
class StudyHandle:
    """What the manager keeps in memory about one archsearch study (all derivable)."""

    spec: SearchSpec
    study: ServerStudy
    space: DesignSpace
    loop: SearchLoop
    lock: threading.RLock
    state: str
    created_at: str

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
        self._handles_lock = threading.Lock()
        self._work = threading.Condition()
        self._workers: dict[str, WorkerInfo] = {}
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self._load_studies()

    # ------------------------------------------------------------------ start-up and shutdown

    def _load_studies(self) -> None:
        """Rebuilds a handle for every archsearch study and recovers half-started trials."""
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
            self._handles[spec.name] = handle
            self._recover_unleased(handle)

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

    def _recover_unleased(self, h: StudyHandle) -> None:
        """RUNNING trials that never got a lease (the server died inside acquire) are re-queued:
        no worker can hold them, and Optuna's heartbeat check never sees a trial that has no
        heartbeat."""
        with h.lock:
            for t in self.storage.get_all_trials(
                h.study_id, deepcopy=False, states=(TrialState.RUNNING,)
            ):
                if LEASE_ATTR not in t.system_attrs:
                    self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                    self._requeue(
                        h,
                        self.storage.get_trial(t._trial_id),
                        "server restarted during acquire",
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
            self._handles[spec.name] = handle
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
        h = self.get(name)
        with h.lock:
            if h.state == RUNNING:
                self._set_state(h, STOPPED)
        return h

    def trials(
        self, h: StudyHandle, states: Iterable[TrialState] | None = None
    ) -> list[FrozenTrial]:
        st = tuple(states) if states else None
        return self.storage.get_all_trials(h.study_id, deepcopy=False, states=st)

    def best_trials(self, h: StudyHandle) -> list[FrozenTrial]:
        complete = self.trials(h, (TrialState.COMPLETE,))
        if not complete:
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
            trials = self.trials(h)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            originals = sum(1 for t in trials if "failed_trial" not in t.system_attrs)
            if not waiting and originals >= h.spec.n_trials:
                self._maybe_complete(h, trials)
                return None
            for _ in range(MAX_DUPLICATE_ASKS):
                trial, arch = h.loop.ask(h.study, h.space)
                tid = trial._trial_id
                frozen = self.storage.get_trial(tid)
                if "candidate" in frozen.user_attrs:  # a re-queued candidate keeps its spec
                    candidate = Candidate.from_dict(frozen.user_attrs["candidate"])
                    break
                candidate = Candidate(
                    space=h.spec.space,
                    architecture=arch,
                    recipe=dict(h.spec.recipe),
                    data=dict(h.spec.data),
                )
                self.storage.set_trial_user_attr(tid, "candidate", candidate.to_dict())
                self.storage.set_trial_user_attr(tid, "arch", h.space.describe(arch))
                if not self._reuse_duplicate(h, trials, trial, candidate):
                    break
                trials = self.trials(h)
                if (
                    sum(1 for t in trials if "failed_trial" not in t.system_attrs)
                    >= h.spec.n_trials
                ):
                    self._maybe_complete(h, trials)
                    return None
            else:
                return None  # the loop keeps proposing evaluated candidates; ask again later
            lease_id = f"{h.study_id}.{tid}.{secrets.token_hex(12)}"
            self.storage.set_trial_user_attr(tid, "worker", worker_id)
            self.storage.set_trial_user_attr(
                tid, "attempt", len(frozen.system_attrs.get("retry_history", []))
            )
            self.storage.set_trial_system_attr(tid, LEASE_ATTR, lease_id)
            self.rdb.record_heartbeat(tid)
            return Grant(
                lease_id=lease_id,
                study_name=h.spec.name,
                trial_number=trial.number,
                deadline_unix=time.time() + self.lease_duration_s,
                candidate=candidate,
                trainer=h.spec.trainer,
                objective_metrics=h.spec.raw_objective_metrics,
                intermediate_metric=h.spec.intermediate_metric,
            )

    def _reuse_duplicate(
        self, h: StudyHandle, trials: list[FrozenTrial], trial: optuna.Trial, candidate: Candidate
    ) -> bool:
        """Completes ``trial`` at once when an identical candidate is already COMPLETE.

        Samplers re-propose evaluated points in small discrete spaces (TPE does); training the
        same candidate with the same recipe and seed again would only cost a worker's time. The
        trial records the result it reused (``duplicate_of``) so the budget and the sampler's
        history stay honest.
        """
        fingerprint = candidate.fingerprint()
        for t in trials:
            if t.state != TrialState.COMPLETE or "candidate" not in t.user_attrs:
                continue
            if Candidate.from_dict(t.user_attrs["candidate"]).fingerprint() != fingerprint:
                continue
            self.storage.set_trial_user_attr(trial._trial_id, "duplicate_of", t.number)
            self.storage.set_trial_user_attr(
                trial._trial_id, "metrics", t.user_attrs.get("metrics", {})
            )
            h.study.tell(trial.number, list(t.values or []))
            log.info(
                "trial %d of %s repeats trial %d; reused its result",
                trial.number,
                h.spec.name,
                t.number,
            )
            return True
        return False

    def _leased(self, lease_id: str) -> tuple[StudyHandle, FrozenTrial]:
        """The handle and current trial of a lease; NotFound for leases never issued."""
        study_id, trial_id = parse_lease_id(lease_id)
        h = next((h for h in self.handles() if h.study_id == study_id), None)
        if h is None:
            raise NotFound(f"unknown lease {lease_id!r}: its study does not exist")
        try:
            frozen = self.storage.get_trial(trial_id)
        except KeyError:
            raise NotFound(f"unknown lease {lease_id!r}: its trial does not exist") from None
        if frozen.system_attrs.get(LEASE_ATTR) != lease_id:
            raise NotFound(f"unknown lease {lease_id!r}: not the lease of trial {frozen.number}")
        return h, frozen

    def _require_running(self, h: StudyHandle, frozen: FrozenTrial) -> None:
        if frozen.state == TrialState.RUNNING:
            return
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
        h, frozen = self._leased(lease_id)
        self._require_running(h, frozen)
        self.rdb.record_heartbeat(frozen._trial_id)
        return time.time() + self.lease_duration_s, False

    def report(self, lease_id: str, step: int, value: float) -> tuple[bool, float]:
        """Stores an intermediate value; returns (should_prune, new deadline)."""
        _check_finite("value", value)
        if not 0 <= step < 2**62:
            raise InvalidArgument(f"step must be >= 0, got {step}")
        h, frozen = self._leased(lease_id)
        with h.lock:
            frozen = self.storage.get_trial(frozen._trial_id)
            if frozen.state == TrialState.PRUNED:
                return True, time.time()  # repeated report after the prune decision
            self._require_running(h, frozen)
            tid = frozen._trial_id
            self.storage.set_trial_intermediate_value(tid, step, float(value))
            self.rdb.record_heartbeat(tid)
            if should_prune(h.study, tid):
                h.study.tell(frozen.number, state=TrialState.PRUNED)
                log.info("pruned trial %d of %s at step %d", frozen.number, h.spec.name, step)
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
        h, frozen = self._leased(lease_id)
        metrics = {k: float(v) for k, v in metrics.items()}
        values = objective_values(h.spec, metrics)
        with h.lock:
            frozen = self.storage.get_trial(frozen._trial_id)
            if frozen.state == TrialState.COMPLETE:
                if frozen.user_attrs.get("metrics") == metrics:
                    return list(frozen.values or []), frozen.state  # the same report again
                raise AlreadyExists(
                    f"trial {frozen.number} of {h.spec.name} was already completed "
                    "with other metrics"
                )
            self._require_running(h, frozen)
            tid = frozen._trial_id
            self.storage.set_trial_user_attr(tid, "metrics", metrics)
            if info:
                self.storage.set_trial_user_attr(tid, "info", dict(info))
            h.study.tell(frozen.number, values)
            self._after_finish(h)
        return values, TrialState.COMPLETE

    def fail(self, lease_id: str, reason: str, retryable: bool, released: bool = False) -> bool:
        """Fails a leased trial; re-queues it when allowed. Returns whether it was re-queued."""
        reason = reason[:MAX_TEXT]
        h, frozen = self._leased(lease_id)
        with h.lock:
            frozen = self.storage.get_trial(frozen._trial_id)
            if frozen.state == TrialState.FAIL and frozen.user_attrs.get("fail_reason") == reason:
                return self._retry_of(h, frozen.number) is not None  # the same report again
            self._require_running(h, frozen)
            tid = frozen._trial_id
            self.storage.set_trial_user_attr(tid, "fail_reason", reason or "no reason given")
            h.study.tell(frozen.number, state=TrialState.FAIL)
            requeued = False
            if released or retryable:
                requeued = self._requeue(h, self.storage.get_trial(tid), reason, count=not released)
            self._after_finish(h)
        return requeued

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
        user_attrs = {
            k: v
            for k, v in failed.user_attrs.items()
            if k in ("candidate", "arch") or k.startswith("param:")
        }
        user_attrs["requeued_because"] = reason or "no reason given"
        h.study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=failed.params,
                distributions=failed.distributions,
                user_attrs=user_attrs,
                system_attrs={
                    "failed_trial": history[0],
                    "retry_history": history,
                    FAILURES_ATTR: failures,
                },
            )
        )
        log.info("re-queued trial %d of %s (%s)", failed.number, h.spec.name, reason)
        self._notify()
        return True

    def _on_stale_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna's heartbeat-stale callback: the lease expired; re-queue the candidate."""
        h = self._handles.get(study.study_name)
        if h is None:
            return
        with h.lock:  # a finished trial takes no attributes: the reason goes on the retry
            self._requeue(h, self.storage.get_trial(trial._trial_id), "lease expired", count=True)

    def reap_once(self) -> None:
        """Fails expired leases (re-queueing their candidates) and completes finished studies."""
        for h in self.handles():
            with h.lock:
                trials = self.trials(h)
                if any(t.state == TrialState.RUNNING for t in trials):
                    optuna.storages.fail_stale_trials(h.study)
                    trials = self.trials(h)
                self._maybe_complete(h, trials)

    def _reap_loop(self) -> None:
        while not self._stop.wait(self.reap_interval_s):
            try:
                self.reap_once()
            except Exception:  # keep reaping whatever one study did
                log.exception("lease reaper failed; retrying")

    # ------------------------------------------------------------------ study state

    def _after_finish(self, h: StudyHandle) -> None:
        self._maybe_complete(h, self.trials(h))
        self._notify()

    def _maybe_complete(self, h: StudyHandle, trials: list[FrozenTrial]) -> None:
        if h.state != RUNNING:
            return
        originals = sum(1 for t in trials if "failed_trial" not in t.system_attrs)
        busy = any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
        if originals >= h.spec.n_trials and not busy:
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
