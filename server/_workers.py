"""The workers this server has seen, and which trainers the connected ones offer."""

from __future__ import annotations

import time
from collections.abc import Callable

from archsearch.server._index import StudyHandle, WorkerInfo


class WorkerDirectory:
    """Registered workers, and the trainers of those still connected.

    Args:
        lease_duration_s: a worker unseen for this long no longer counts as connected.
        active: worker id -> (last acquire, monotonic; its trainers), kept by the acquire path.
        handles: the served studies (a worker holding a lease counts for its study's trainer).
    """

    def __init__(
        self,
        lease_duration_s: float,
        active: dict[str, tuple[float, tuple[str, ...]]],
        handles: Callable[[], list[StudyHandle]],
    ) -> None:
        self.lease_duration_s = lease_duration_s
        self.active = active
        self.handles = handles
        self._workers: dict[str, WorkerInfo] = {}

    def register(
        self,
        worker_id: str,
        trainers: tuple[str, ...],
        device: str,
        memory_bytes: int,
        hostname: str,
    ) -> WorkerInfo:
        """Records (or refreshes) a worker."""
        info = WorkerInfo(worker_id, trainers, device, memory_bytes, hostname, time.time())
        self._workers[worker_id] = info
        return info

    def workers(self) -> list[WorkerInfo]:
        """Every worker that registered since the server started."""
        return list(self._workers.values())

    def trainers(self) -> dict[str, int]:
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
        for worker_id, (at, trainers) in list(self.active.items()):
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
