"""The in-memory model of the study service: what a server keeps about each study.

Everything here is derivable from the Optuna storage (DESIGN.md principle 1): a
:class:`StudyHandle` per archsearch study (its spec, the Optuna study object, the design space,
the loop, its locks and state) and its :class:`StudyIndex` (the counts, queued retries, live
trials and prepared candidates the hot paths need). The collaborators of ``StudyManager``
(``_leases``, ``_pool``, ``_retries``, ``_lifecycle``) share these objects; this module holds
data and the storage's attribute names only, no behaviour, so every collaborator may import it.

Where things are stored:
    * study user attributes: ``archsearch:spec`` (the validated spec), ``archsearch:state``
      (running/stopped/completed), ``archsearch:created_at``, ``archsearch:completed_reason``
      (why a completed study completed); metric names via
      ``set_metric_names`` so optuna-dashboard labels its axes;
    * trial user attributes (visible in the dashboard): ``candidate`` (the full candidate spec),
      ``arch`` (compact description), ``worker``, ``attempt``, ``metrics`` (every raw metric the
      worker reported), ``info`` (provenance), ``fail_reason``; and readable one-value rows
      next to the JSON (``metric.<name>``, ``info.<key>``, ``recipe.<key>``, ``data.<key>``:
      ``_dashboard_attrs``), plus ``mapped_from`` where a table space mapped a suggestion (and
      the row's parameters, ``row.<param>``);
    * trial system attributes: ``archsearch:lease`` (the current lease id),
      ``archsearch:failures`` (failures counted against the retry budget), and Optuna's own
      ``failed_trial``/``retry_history`` so ``RetryHeartbeatStaleTrialCallback``'s helpers work;
    * lease liveness: Optuna's heartbeat table (``record_heartbeat``); a lease expires when its
      trial's heartbeat is older than the lease duration, and the reaper fails it.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from concurrent.futures import Future
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from archsearch.search import SearchLoop, ServerStudy
from archsearch.server import _storage
from archsearch.server._errors import STOPPED_REASON as STOPPED_REASON  # its old home
from archsearch.server._spec import SearchSpec
from archsearch.spaces import Candidate, DesignSpace

SPEC_ATTR = "archsearch:spec"
STATE_ATTR = "archsearch:state"
CREATED_ATTR = "archsearch:created_at"
LEASE_ATTR = "archsearch:lease"
FAILURES_ATTR = "archsearch:failures"
COMPLETED_REASON_ATTR = "archsearch:completed_reason"
#: User attribute of a trial a worker handed back (ReleaseTrial): not the candidate's failure.
HANDED_BACK_ATTR = "handed_back"
#: Set by ``stop --cancel-running``: the workers of its leased trials are told to stop.
CANCEL_ATTR = "archsearch:cancel_running"
#: a retryable failure while its study was stopped (handed back, lease expired): not re-queued
#: then, re-queued by ``resume``
RETRY_ON_RESUME_ATTR = "archsearch:retry_on_resume"
#: The names of the attributes the loop set on a trial (``Suggestion.attrs``): a retry of
#: the trial carries them too, so the loop reads its copy as the candidate it proposed.
LOOP_ATTRS_ATTR = "archsearch:loop_attrs"

RUNNING, STOPPED, COMPLETED = "running", "stopped", "completed"


@dataclasses.dataclass
class LiveTrial:
    """A RUNNING trial of this server: prepared (no lease yet) or leased to a worker."""

    trial_id: int
    number: int
    candidate: Candidate
    attempt: int
    lease_id: str = ""
    #: ``candidate.fingerprint()``, kept to find a candidate already in flight
    fp: str = ""

    def __post_init__(self) -> None:
        if not self.fp:
            self.fp = self.candidate.fingerprint()


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

    #: distinct candidates asked (the budget): not retries, not repeats
    originals: int = 0
    #: repeats proposed in a row since the last new candidate
    repeat_streak: int = 0
    #: repeats proposed in all (a table's rows that its loop rarely maps to: new ones keep
    #: coming, each after a long run of repeats that never reaches the streak's limit)
    repeats: int = 0
    #: why the loop has nothing new to propose (the study completes); "" while it has
    exhausted: str = ""
    waiting: set[int] = dataclasses.field(default_factory=set)
    live: dict[int, LiveTrial] = dataclasses.field(default_factory=dict)
    pool: collections.deque[int] = dataclasses.field(default_factory=collections.deque)
    #: Trials whose finishing write is queued: lease id, the write's future and fingerprint.
    finishing: dict[int, tuple[str, Future[None], str]] = dataclasses.field(default_factory=dict)
    #: Candidates being asked and stored right now (the study is not complete meanwhile).
    preparing: int = 0
    #: Fingerprints of candidates stored but not yet registered as live.
    storing: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    done: dict[str, tuple[int, list[float], dict[str, Any]]] = dataclasses.field(
        default_factory=dict
    )
    #: Pruned candidates by fingerprint: trial number, values (the last intermediate value of
    #: a single-objective study) and intermediate values. Proposed again, one is a recorded
    #: PRUNED repeat with that curve: the same training would give the same curve, so it is
    #: not trained twice.
    pruned: dict[str, tuple[int, list[float], dict[int, float]]] = dataclasses.field(
        default_factory=dict
    )
    #: Trial numbers of retryable failures while the study was stopped (``resume`` re-queues
    #: them; ``RETRY_ON_RESUME_ATTR`` keeps them across a restart).
    unretried: set[int] = dataclasses.field(default_factory=set)
    #: Fingerprints of candidates a worker of other code failed, re-queued for a second
    #: opinion (``_other_code``), and the code labels whose workers sit the study out.
    reopened: set[str] = dataclasses.field(default_factory=set)
    set_aside: set[str] = dataclasses.field(default_factory=set)
    #: the reason of the last final failures and how many distinct candidates in a row failed
    #: with it before any trained (``_failure_streak``; not kept across a restart)
    fail_streak: tuple[str, int] = ("", 0)


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
    #: why the study completed (``COMPLETED_REASON_ATTR``; "" while it runs)
    completed_reason: str = ""
    #: ``stop --cancel-running``: its leased trials are told to stop (``CANCEL_ATTR``)
    cancel_running: bool = False
    #: Serialises the loop's ``ask`` (the loop contract) apart from ``lock``, which guards
    #: only the in-memory index and is never held while a sampler runs.
    ask_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @property
    def study_id(self) -> int:
        return _storage.study_id_of(self.study)

    @property
    def directions(self) -> tuple[str, ...]:
        """The objectives' directions, from the spec (reading the study's asks the database)."""
        return tuple(o.direction for o in self.spec.objectives)


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
    #: its archsearch code label (``server/_source.py``); "" when it sent none
    source: str = ""


@dataclasses.dataclass(frozen=True)
class StudySnapshot:
    """What a reader sees of a study at one moment, for the converters (never the manager).

    Built by ``StudyManager.snapshot``, which reads the state before the trials: a study is
    marked completed only after its last trial's result is committed, so a snapshot whose
    state is "completed" counts every trial finished.
    """

    spec: SearchSpec
    state: str
    created_at: str
    #: trials per state (every state present, zero when none)
    counts: dict[TrialState, int]
    #: the best trials (Pareto front for several objectives); empty when not asked for
    best_trials: tuple[FrozenTrial, ...]
    #: trainer -> connected workers offering it (trainers none offers are absent)
    connected_trainers: dict[str, int]
    #: COMPLETE trials a job's completion added (DyLoRA ranks, AutoDistil students)
    derived: int = 0
    #: FAIL trials a stop ended before they ran (:data:`STOPPED_REASON`)
    unrun: int = 0
    #: FAIL trials a worker handed back (:data:`HANDED_BACK_ATTR`)
    handed_back: int = 0
    #: why a completed study ended ("" while it runs)
    completed_reason: str = ""
    #: connected workers that serve other studies only (``--study``)
    workers_elsewhere: int = 0
    #: connected workers that skip the study's trials: they lack its data
    workers_lacking_data: int = 0
