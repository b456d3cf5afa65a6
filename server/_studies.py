"""The study manager: the facade the servicers call, over collaborators with their own state.

Collaborators (imports go one way, down this list; each imports ``_index``, the in-memory model,
and ``_storage``, the only module that touches Optuna's private attributes and tables):
    * ``_registry.StudyRegistry``: the served studies by name and id; launch; start-up rebuild;
    * ``_leases.LeaseTable``: grant, heartbeat, expiry (the restart grace), and the one place
      that resolves a lease for report, complete, fail and release;
    * ``_pool.CandidatePool``: prepare and settle candidates, the pool target; it stores each
      through ``_candidate_store.CandidateStore`` (its spec, repeats, candidates in flight);
    * ``_acquire.Dispatcher``: the acquire path (long poll, study choice, lease, take-back);
    * ``_outcomes.TrialOutcomes``: intermediate reports, completion and failure;
    * ``_retries.Retries``: re-queue failed candidates, and the lease reaper;
    * ``_lifecycle.StudyLifecycle``: study states, completion, the writes that end a trial;
    * ``_objectives``: objective values from raw metrics, and the checks of a report;
    * ``_trainers.TrainerCatalogue``: the trainers studies may select (installed ones, and
      what registered workers describe).
Converters (``_convert``) are pure functions of frozen snapshots (:meth:`StudyManager.snapshot`).
``_manager_wiring.ManagerWiring`` opens the storage and builds the collaborators over it.

Everything lives in the Optuna storage (DESIGN.md principle 1). In memory the manager keeps
only what it can rebuild from the storage at start-up: one handle per archsearch study (its
parsed spec, the Optuna study object, the design space and the search loop) and a lock per
study that serialises the study's state transitions inside this process.

Where things are stored (study and trial attributes, heartbeats): ``_index``'s docstring.

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
loop's ask runs on ``DeferredTrialStorage``, which keeps the new trial in memory until
its row, parameters and candidate are inserted in one transaction. Every RPC answers only
after its writes are committed. Locks: ``StudyHandle.lock`` guards the in-memory index and is
never held while the database or a sampler works (except by the reaper, a report that prunes,
and stop); ``StudyHandle.ask_lock`` serialises the loop's asks.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from archsearch.server._artifact_needs import check_artifact_store
from archsearch.server._best_trials import best_of, one_per_result, rankable
from archsearch.server._candidate_store import MIN_REPEAT_STREAK
from archsearch.server._delete import StudyDeleted, delete, finish_deletions, unless_deleted
from archsearch.server._derived_trials import is_derived_trial
from archsearch.server._index import (
    CANCEL_ATTR,
    COMPLETED,
    COMPLETED_REASON_ATTR,
    FAILURES_ATTR,
    HANDED_BACK_ATTR,
    LEASE_ATTR,
    RUNNING,
    SPEC_ATTR,
    STATE_ATTR,
    STOPPED,
    STOPPED_REASON,
    Grant,
    StudyHandle,
    StudySnapshot,
    WorkerInfo,
)
from archsearch.server._leases import parse_lease_id
from archsearch.server._manager_wiring import ManagerWiring
from archsearch.server._resume import resume
from archsearch.server._spec import SearchSpec
from archsearch.spaces import TrainerInfo

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


class StudyManager(ManagerWiring):
    """Owns the storage and every archsearch study in it.

    Hot paths touch the database only to write, through the group-commit writer: acquiring a
    prepared candidate is one queued operation (lease, worker, attempt and heartbeat),
    completing one is one (metrics, values and state) plus the storage of the candidates it
    prepares (one operation each: trial row, parameters and candidate). When a trial
    finishes, candidates are prepared at once (asked from the loop and stored with their
    spec), so the workers' next acquires find them ready.

    :class:`ManagerWiring` opens the storage, builds the collaborators (its arguments are
    this class's), starts and closes them; this class adds the calls the servicers make.
    """

    # ------------------------------------------------------------------ people's side

    def launch(self, spec: SearchSpec) -> StudyHandle:
        """Creates and serves a new study (see :meth:`StudyRegistry.create`).

        Returns:
            The new study's handle.

        Raises:
            AlreadyExists: a study of that name exists in the storage.
            FailedPrecondition: it needs uploads, and this server keeps none.
        """
        check_artifact_store(spec, self.keeps_artifacts)
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

    def stop(self, name: str, cancel_running: bool = False) -> StudyHandle:
        """Stops handing out trials. Nothing is left waiting: prepared candidates and queued
        retries end FAIL (``fail_reason`` says the study was stopped before they ran); leased
        trials run to their end and are not retried, unless ``cancel_running``: then their
        workers are told to stop at their next heartbeat (a stopped study may be cancelled
        later too), and report the trials failed ("cancelled: ..."), not retried."""
        h = self.get(name)
        with h.lock:
            self._still_served(h)
            if h.state == RUNNING:
                self.lifecycle.set_state(h, STOPPED)
                self.lifecycle.end_unrun(h)
            if cancel_running and h.state == STOPPED and not h.cancel_running:
                self.storage.set_study_user_attr(h.study_id, CANCEL_ATTR, True)
                h.cancel_running = True
        return h

    def resume(self, name: str, n_trials: int = 0) -> tuple[StudyHandle, int]:
        """Runs a stopped or completed study again, or gives a running one a new budget
        (:func:`archsearch.server._resume.resume`); the handle and how many never-run
        candidates of its stop were queued again.

        Raises:
            NotFound: no such study.
            InvalidArgument, FailedPrecondition: see :mod:`archsearch.server._resume`.
        """
        h = self.get(name)
        with h.lock:  # resume takes it too; held from the check on
            self._still_served(h)
            requeued = resume(
                h, n_trials, self.storage, self.lifecycle, self.retries, self.trials, self._notify
            )
        return h, requeued

    def _still_served(self, h: StudyHandle) -> None:
        """Raises StudyDeleted when ``h`` was deleted since the call found it (the caller
        holds ``h.lock``, which the delete holds while it stops serving it)."""
        if not self.registry.serves(h):
            raise StudyDeleted(h.spec.name)

    def delete(self, name: str) -> tuple[int, int, int]:
        """Deletes a stopped or completed study, its trials and their files; also an empty
        Optuna study without a spec (a launch the server did not finish) and a study whose
        deletion a stopped server began (:func:`archsearch.server._delete.delete`);
        (trials, files) removed and the files recorded but not found.

        Raises:
            NotFound: no such study.
            FailedPrecondition: it runs, a worker still holds one of its trials, or it is an
                Optuna study with trials that archsearch did not launch.
        """
        return delete(
            name,
            self.registry,
            self.storage,
            self.writer,
            lambda study_id: self.storage.get_all_trials(study_id, deepcopy=False),
            self.remove_files,
        )

    def start(self) -> None:
        """Finishes the deletions a stopped server began (their files can go now that the
        app's artifact store is wired), then starts the reaper."""
        finish_deletions(sorted(self.registry.half_deleted), self.delete)
        super().start()

    def best_trials(self, h: StudyHandle) -> list[FrozenTrial]:
        """The best trial (the Pareto front for several objectives) among the COMPLETE trials
        with finite values that were measured (:func:`best_of`)."""
        if not h.index.done and not self.trials(h, (TrialState.COMPLETE,)):
            return []
        # Optuna's own pick, unless it holds a trial to leave out
        single = len(h.spec.objectives) == 1
        fast = [h.study.best_trial] if single else list(h.study.best_trials)
        if all(rankable(t) for t in fast):
            return one_per_result(fast)
        return one_per_result(best_of(self.trials(h, (TrialState.COMPLETE,)), h.study.directions))

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
        derived = 0
        unrun: set[int] = set()  # a stop ended them before they ran; not those resumed since
        retried: set[int] = set()
        handed_back = 0
        with unless_deleted(h, self.registry.serves):  # StudyDeleted when deleted under it
            for t in self.trials(h):
                counts[t.state] += 1
                derived += t.state == TrialState.COMPLETE and is_derived_trial(t)
                if t.state == TrialState.FAIL and t.user_attrs.get("fail_reason") == STOPPED_REASON:
                    unrun.add(t.number)
                handed_back += t.state == TrialState.FAIL and HANDED_BACK_ATTR in t.user_attrs
                retried.update(t.system_attrs.get("retry_history", [])[-1:])
            best = tuple(self.best_trials(h)) if with_best else ()
        return StudySnapshot(
            spec=h.spec,
            state=state,
            created_at=h.created_at,
            counts=counts,
            best_trials=best,
            connected_trainers=self.connected_trainers(h.spec.name),
            workers_elsewhere=self.workers_elsewhere(h.spec.name),
            workers_lacking_data=self.workers_lacking_data(h),
            derived=derived,
            unrun=len(unrun - retried),
            handed_back=handed_back,
            completed_reason=h.completed_reason if state in (COMPLETED, STOPPED) else "",
        )

    # ------------------------------------------------------------------ workers' side

    def register(
        self,
        worker_id: str,
        trainers: tuple[str, ...],
        device: str,
        memory_bytes: int,
        hostname: str,
        trainer_info: Iterable[TrainerInfo] = (),
        source: str = "",
    ) -> WorkerInfo:
        """Records a worker (``source``: its code label) and learns what its trainers train
        and report."""
        self.trainers.learn(trainer_info, worker_id)
        return self.directory.register(worker_id, trainers, device, memory_bytes, hostname, source)

    def acquire(
        self,
        worker_id: str,
        trainers: tuple[str, ...],
        study_name: str = "",
        timeout_s: float = 0.0,
        alive: Callable[[], bool] | None = None,
        skip: frozenset[str] = frozenset(),
    ) -> Grant | None:
        """Hands out a trial, waiting up to ``timeout_s`` for one (:meth:`Dispatcher.acquire`;
        none of the studies in ``skip``, which the worker cannot train now).

        Returns:
            The grant; None means no work.

        Raises:
            NotFound: ``study_name`` names no study.
        """
        return self.dispatcher.acquire(worker_id, trainers, study_name, timeout_s, alive, skip)

    # ------------------------------------------------------------------ leases

    def heartbeat(self, lease_id: str) -> tuple[float, bool]:
        """Extends a lease (see :meth:`LeaseTable.heartbeat`).

        Returns:
            (the new deadline in unix seconds, whether to stop: True once the study was
            stopped with ``cancel_running``; a pruned trial's worker learns it from its report).

        Raises:
            NotFound: a lease this server never issued.
            FailedPrecondition: the trial is finished, expired or given up.
        """
        deadline = self.leases.heartbeat(lease_id)
        h = self.registry.by_id(parse_lease_id(lease_id)[0])
        return deadline, h is not None and h.cancel_running

    def report(self, lease_id: str, step: int, value: float) -> tuple[bool, float]:
        """Stores an intermediate value and asks the pruner (:meth:`TrialOutcomes.report`)."""
        return self.outcomes.report(lease_id, step, value)

    def complete(
        self, lease_id: str, metrics: dict[str, float], info: dict[str, str]
    ) -> tuple[list[float], TrialState]:
        """Completes a leased trial (:meth:`TrialOutcomes.complete`)."""
        return self.outcomes.complete(lease_id, metrics, info)

    def fail(self, lease_id: str, reason: str, retryable: bool, released: bool = False) -> bool:
        """Fails a leased trial, re-queueing it when allowed (:meth:`TrialOutcomes.fail`)."""
        return self.outcomes.fail(lease_id, reason, retryable, released)

    # ------------------------------------------------------------------ retries and expiry

    def reap_once(self) -> None:
        """Fails expired leases (re-queueing their candidates) and completes finished studies
        (see :meth:`Retries.reap_once`)."""
        self.retries.reap_once()

    # ------------------------------------------------------------------ study state

    def workers(self) -> list[WorkerInfo]:
        """Every worker that registered since the server started."""
        return self.directory.workers()

    def workers_elsewhere(self, study: str) -> int:
        """Connected workers serving other studies only (:meth:`WorkerDirectory.serving_others`)."""
        return self.directory.serving_others(study)

    def workers_lacking_data(self, h: StudyHandle) -> int:
        """Connected workers that skip ``h``'s trials: they lack its data
        (:meth:`WorkerDirectory.lacking_data`)."""
        return self.directory.lacking_data(h)

    def connected_trainers(self, study: str | None = None) -> dict[str, int]:
        """How many connected workers offer each trainer (to ``study``'s trials, when given:
        :meth:`WorkerDirectory.trainers`)."""
        return self.directory.trainers(study)
