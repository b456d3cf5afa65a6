"""The workers this server has seen, which trainers the connected ones offer, and the leases
of a worker that restarted."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Protocol

from optuna.trial import TrialState

from archsearch.server import _trial_writes
from archsearch.server._deferred_storage import DeferredTrialStorage
from archsearch.server._index import StudyHandle, WorkerInfo
from archsearch.server._leases import LeaseTable
from archsearch.server._lifecycle import StudyLifecycle
from archsearch.server._retries import Retries
from archsearch.server._source import code_label
from archsearch.server._writer import StorageWriter

log = logging.getLogger("archsearch.server")


class WorkerDirectory:
    """Registered workers, and the trainers of those still connected.

    Args:
        lease_duration_s: a worker unseen for this long no longer counts as connected.
        active: worker id -> (last acquire, monotonic; its trainers; the study it asked for,
            "" for any), kept by the acquire path.
        handles: the served studies (a worker holding a lease counts for its study's trainer).
        busy: the ids of the workers holding a lease now (connected, whichever study).
        skipping: worker id -> the studies it cannot train now (it lacks their data): not
            counted among those studies' workers.
    """

    def __init__(
        self,
        lease_duration_s: float,
        active: dict[str, tuple[float, tuple[str, ...], str]],
        handles: Callable[[], list[StudyHandle]],
        busy: Callable[[], set[str]] = set,
        skipping: dict[str, frozenset[str]] | None = None,
    ) -> None:
        self.lease_duration_s = lease_duration_s
        self.active = active
        self.handles = handles
        self.busy = busy
        self.skipping = skipping if skipping is not None else {}
        self._workers: dict[str, WorkerInfo] = {}

    def register(
        self,
        worker_id: str,
        trainers: tuple[str, ...],
        device: str,
        memory_bytes: int,
        hostname: str,
        source: str = "",
    ) -> WorkerInfo:
        """Records (or refreshes) a worker; ``source``: its code label."""
        info = WorkerInfo(worker_id, trainers, device, memory_bytes, hostname, time.time(), source)
        self._workers[worker_id] = info
        return info

    def source_of(self, worker_id: str) -> str | None:
        """The code label worker ``worker_id`` registered with (None: not registered with
        this server)."""
        info = self._workers.get(worker_id)
        return None if info is None else info.source

    def current_serves(self, h: StudyHandle, other_than: str) -> bool:
        """Whether a connected worker other than ``other_than`` runs this server's code and
        would train ``h``'s trials (offers its trainer; asked for it or for any study)."""
        ours = code_label()
        for worker_id, (trainers, asked) in self._seen().items():
            info = self._workers.get(worker_id)
            if (
                worker_id != other_than
                and info is not None
                and info.source == ours
                and h.spec.trainer in trainers
                and asked in ("", h.spec.name)
                and h.spec.name not in self.skipping.get(worker_id, ())
            ):
                return True
        return False

    def leave(self, worker_id: str) -> bool:
        """Forgets that ``worker_id`` is connected (it said it is exiting): it stays in
        :meth:`workers`, seen last now, but no longer counts among the connected ones, unless it
        still holds a lease (``busy``). Returns whether it counted as connected."""
        was = worker_id in self._seen()
        self.active.pop(worker_id, None)
        self.skipping.pop(worker_id, None)
        info = self._workers.get(worker_id)
        if info is not None:  # last_seen past the window: registered, not connected
            gone = time.time() - self.lease_duration_s - 1.0
            self._workers[worker_id] = dataclasses.replace(
                info, last_seen=min(info.last_seen, gone)
            )
        return was

    def workers(self) -> list[WorkerInfo]:
        """Every worker that registered since the server started."""
        return list(self._workers.values())

    def trainers(self, study: str | None = None) -> dict[str, int]:
        """How many connected workers offer each trainer (trainers none offers are absent);
        with ``study``, only the workers that would train its trials (not those that asked
        for another study by name: ``archsearch worker --study``).

        Connected: seen by RegisterWorker or AcquireTrial within one lease duration, or
        holding a lease in any study (a worker training a long trial heartbeats but does not
        acquire: it serves other studies once done). Read-only and approximate: a lower bound.
        """
        seen = self._seen()
        counts: dict[str, int] = {}
        for worker_id, (trainers, asked) in seen.items():
            if study is not None and asked not in ("", study):
                continue
            if study is not None and study in self.skipping.get(worker_id, ()):
                continue  # it lacks this study's data
            for t in set(trainers):
                counts[t] = counts.get(t, 0) + 1
        leased: dict[str, int] = {}
        for h in self.handles():
            if study is not None and h.spec.name != study:
                continue
            n = sum(1 for lt in list(h.index.live.values()) if lt.lease_id)
            leased[h.spec.trainer] = leased.get(h.spec.trainer, 0) + n
        return {
            t: n
            for t in sorted(set(counts) | set(leased))
            if (n := max(counts.get(t, 0), leased.get(t, 0))) > 0
        }

    def lacking_data(self, h: StudyHandle) -> int:
        """Connected workers that would train ``h``'s trials but skip them now: they lack its
        data (``skipping``)."""
        return sum(
            1
            for worker_id, (trainers, asked) in self._seen().items()
            if h.spec.trainer in trainers
            and asked in ("", h.spec.name)
            and h.spec.name in self.skipping.get(worker_id, ())
        )

    def serving_others(self, study: str) -> int:
        """Connected workers that asked for another study by name (``--study``): they never
        take ``study``'s trials (what the no-worker note tells apart from none at all)."""
        return sum(1 for _, asked in self._seen().values() if asked not in ("", study))

    def _seen(self) -> dict[str, tuple[tuple[str, ...], str]]:
        """Each connected worker (see :meth:`trainers`): its trainers and the study it asked
        for by name ("" for any)."""
        now_mono, now = time.monotonic(), time.time()
        seen = {  # a registration says nothing of the study a worker asks for
            w.worker_id: (w.trainers, "")
            for w in list(self._workers.values())
            if now - w.last_seen <= self.lease_duration_s
        }
        for worker_id, (at, trainers, asked) in list(self.active.items()):
            if now_mono - at <= self.lease_duration_s:
                seen[worker_id] = (trainers, asked)
        for worker_id in self.busy():  # training, in whichever study: still connected
            if worker_id not in seen and (entry := self.active.get(worker_id)) is not None:
                seen[worker_id] = (entry[1], entry[2])
            elif worker_id not in seen and (info := self._workers.get(worker_id)) is not None:
                seen[worker_id] = (info.trainers, "")
        return seen


class _Collaborators(Protocol):
    """What :func:`requeue_leases_of` uses of the study manager."""

    @property
    def storage(self) -> DeferredTrialStorage: ...
    @property
    def writer(self) -> StorageWriter: ...
    @property
    def leases(self) -> LeaseTable: ...
    @property
    def lifecycle(self) -> StudyLifecycle: ...
    @property
    def retries(self) -> Retries: ...
    def handles(self) -> list[StudyHandle]: ...


def requeue_leases_of(worker_id: str, m: _Collaborators) -> list[str]:
    """Re-queues at once the trials leased to ``worker_id`` when it registers again.

    A worker registers once, when its process starts (``Worker.register``; it does not
    register again after a server restart or a lost connection: it keeps its trial and calls
    on), so a second RegisterWorker with an id that holds leases comes from a new process with
    the same ``--worker-id`` (a restarted pod, a Ray actor restarted): the old process is gone
    and nobody will heartbeat its leases. Each such trial is failed and its candidate
    re-queued exactly as when its lease expires (the reason in the same write as the state,
    counted against the retry budget, and never re-queued in a stopped study), with the
    reason ``worker W restarted ...``, instead of staying RUNNING for a lease duration.

    Returns:
        ``study#number`` of each trial failed this way.
    """
    reason = f"worker {worker_id} restarted: it registered again while holding this lease"
    ended: list[str] = []
    for h in m.handles():
        with h.lock:
            held = [(tid, lt.lease_id) for tid, lt in h.index.live.items() if lt.lease_id]
        # Outside the lock: a lease of an earlier server is read from the storage once.
        mine = [(tid, lid) for tid, lid in held if m.leases.holder(tid, lid) == worker_id]
        if not mine:
            continue
        with h.lock:
            m.writer.barrier()  # its queued lease and finishing writes first, as the reaper
            for tid, lease_id in mine:
                live = h.index.live.get(tid)
                if live is None or live.lease_id != lease_id:
                    continue  # finished, expired or given up meanwhile
                try:
                    m.lifecycle.finish(h, tid, TrialState.FAIL, None, {"fail_reason": reason})
                except _trial_writes.TrialNotRunning:
                    continue
                h.index.live.pop(tid, None)
                m.leases.forget(lease_id)
                log.warning(
                    "worker %s registered again while holding trial %d of %s: it restarted; "
                    "the trial is failed and its candidate re-queued",
                    worker_id,
                    live.number,
                    h.spec.name,
                )
                m.retries.requeue(h, m.storage.get_trial(tid), reason, count=True)
                ended.append(f"{h.spec.name}#{live.number}")
            m.lifecycle.after_finish(h)
    return ended
