"""The study manager's wiring: its storage and collaborators, built in order; start-up, shutdown."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from archsearch.server._acquire import Dispatcher
from archsearch.server._artifacts import GraphArtifacts
from archsearch.server._database import open_storage
from archsearch.server._deferred_storage import DeferredTrialStorage
from archsearch.server._errors import InvalidArgument
from archsearch.server._index import StudyHandle
from archsearch.server._leases import LeaseTable
from archsearch.server._lifecycle import StudyLifecycle
from archsearch.server._other_code import OtherCode
from archsearch.server._outcomes import TrialOutcomes
from archsearch.server._pool import CandidatePool
from archsearch.server._registry import StudyRegistry, rebuild_index
from archsearch.server._retries import Retries
from archsearch.server._trainers import TrainerCatalogue
from archsearch.server._workers import WorkerDirectory
from archsearch.server._writer import StorageWriter


class ManagerWiring:
    """Opens the storage and builds ``StudyManager``'s collaborators over it, each given what
    it uses (``_studies``' docstring lists them); starts and stops them.

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
            storage_url,
            lease_duration_s,
            heartbeat_interval_s,
            self._on_stale_trial,
        )
        # One cache for every study object: this server is the storage's only writer.
        self.storage = DeferredTrialStorage(self.rdb)
        self.writer = StorageWriter(self.rdb.engine)
        # Architecture pictures for optuna-dashboard (``serve --artifact-dir``).
        self.artifacts = GraphArtifacts(artifact_dir, self.rdb) if artifact_dir else None
        #: whether the server keeps trials' uploads (set by the app once its store is built)
        self.keeps_artifacts = True
        #: removes a trial's uploaded files, returns how many (the app's artifact store)
        #: and how many of its recorded files the store did not hold
        self.remove_files: Callable[[FrozenTrial], tuple[int, int]] = lambda _trial: (0, 0)
        #: the artifact folder (set by the app; "" for none, or a store given in code)
        self.artifact_dir = ""
        self._active: dict[str, tuple[float, tuple[str, ...], str]] = {}
        #: worker id -> the studies it cannot train now (AcquireTrialRequest.skip_studies)
        self._skipping: dict[str, frozenset[str]] = {}
        #: trainers studies may select: installed ones, then what workers describe
        self.trainers = TrainerCatalogue.installed()
        self.registry = StudyRegistry(self.storage, self._notify, self.trainers)
        self._work = threading.Condition()
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
        self.directory = WorkerDirectory(
            lease_duration_s,
            self._active,
            self.registry.handles,
            self._busy_workers,
            self._skipping,
        )
        #: workers running other code than this server, and the failures they report
        self.other_code = OtherCode(self.directory.source_of, self.directory.current_serves)
        self.dispatcher = Dispatcher(
            self.registry,
            self.leases,
            self.pool,
            self.lifecycle,
            self._active,
            self._work,
            self._stop,
            self._notify,
            self.other_code.sits_out,
            lambda worker: self.directory.source_of(worker) or "",
            self._skipping,
        )
        self.outcomes = TrialOutcomes(
            self.rdb,
            self.storage,
            self.writer,
            self.leases,
            self.lifecycle,
            self.pool,
            self.retries,
            self.other_code,
        )
        self.registry.load(self._rebuild_index)

    def _busy_workers(self) -> set[str]:
        """The workers holding a lease now, in any study (training: they heartbeat but do not
        acquire, so the acquire path's record of them ages)."""
        busy = set()
        for h in self.registry.handles():
            for live in list(h.index.live.values()):
                if live.lease_id and (worker := self.leases.holder(live.trial_id, live.lease_id)):
                    busy.add(worker)
        return busy

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

    # ------------------------------------------------------------------ callbacks

    def _notify(self) -> None:
        with self._work:
            self._work.notify_all()

    def trials(
        self, h: StudyHandle, states: Iterable[TrialState] | None = None
    ) -> list[FrozenTrial]:
        """``h``'s trials (of ``states`` only, when given), not copies: the leases' callback,
        and the facade's read."""
        st = tuple(states) if states else None
        return self.storage.get_all_trials(h.study_id, deepcopy=False, states=st)
