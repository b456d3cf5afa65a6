"""The watch over one trial while its trainer runs: its state as the heartbeat thread learns
it (lease lost, cancelled, pruned), the heartbeat loop, and one warning when a trainer trains
on long after it was asked to stop.

A trainer stops by calling ``context.check()`` or ``context.report()``, which raise
``TrialStopped`` once the trial must end. One that calls neither cannot be cancelled (``stop
--cancel-running``) or handed back (SIGTERM): it runs to its end, and under Kubernetes or
SLURM the process is killed first. The worker's heartbeat thread calls :meth:`IgnoredStop.tick`;
past the stop grace it logs one warning that names the fix.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from archsearch.server.client import ClientError

if TYPE_CHECKING:
    from archsearch.worker._runner import Worker

log = logging.getLogger("archsearch.worker")


class IgnoredStop:
    """Args:
    grace_s: how long a trainer may take to stop before the warning.
    clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, grace_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s = grace_s
        self.clock = clock
        self.since: float | None = None
        self.said = False

    def tick(self, tag: str, why: str) -> bool:
        """Called while trial ``tag`` still trains; ``why`` the stop asked ("" for none).
        Whether the warning was said now."""
        if not why or self.said:
            return False
        now = self.clock()
        if self.since is None:
            self.since = now
        if now - self.since < self.grace_s:
            return False
        self.said = True
        log.warning(
            "trial %s: the trainer trains on %.0fs after the worker asked it to stop (%s); "
            "a trainer must call "
            "context.check() or context.report() regularly to stop (this trial runs to its end)",
            tag,
            now - self.since,
            why,
        )
        return True


class TrialState:
    """What the heartbeat thread and the report calls learn about the trial."""

    def __init__(self) -> None:
        self.lost = threading.Event()  # lease expired or unknown: stop, report nothing
        self.cancelled = threading.Event()  # the server said stop: the trial ends failed
        self.pruned = False
        self.reason = ""
        #: the trainer is inside ``context.report()``, which retries while the server does not
        #: answer: it is not ignoring a stop
        self.reporting = False


def heartbeats(
    worker: Worker, lease_id: str, state: TrialState, done: threading.Event, tag: str
) -> None:
    """Extends the lease every heartbeat interval until ``done``; learns a cancel or a lost
    lease; says once when the trainer ignores a stop (:class:`IgnoredStop`)."""
    ignored = IgnoredStop(worker.stop_grace_s)
    while not done.wait(worker.heartbeat_interval_s):
        asked = worker.stop_reason if worker.stopping.is_set() else ""
        if not state.reporting:
            ignored.tick(tag, asked or ("the cancel" if state.cancelled.is_set() else ""))
        try:
            if worker.client.heartbeat(lease_id).should_stop and not state.cancelled.is_set():
                log.info("the server cancelled this trial (study stopped, --cancel-running)")
                state.cancelled.set()
        except ClientError as e:
            if e.transient:
                continue  # server restarting: keep trying until the lease would expire
            state.reason = e.details
            state.lost.set()
            return
