"""How a worker calls its server: retries with backoff, stop requests and signals.

A call the server may answer later (``ClientError.transient``) is retried with exponential
backoff (capped); the worker says once that the server does not answer, and why (``Outage``).
After a stop request (SIGTERM, SIGINT) the worker keeps trying to hand back or report its
trial for at most ``stop_grace_s`` seconds, then gives up.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from archsearch.server.client import ClientError, WorkerClient
from archsearch.worker._backoff import Backoff
from archsearch.worker._reach import Outage

log = logging.getLogger("archsearch.worker")
T = TypeVar("T")


class ServerCalls:
    """The worker's calls to its server, and how it stops.

    Args:
        client: a connected WorkerClient.
        stop_grace_s: after SIGTERM/SIGINT, how long to keep trying to hand back or report
            the current trial while the server does not answer.
    """

    def __init__(self, client: WorkerClient, stop_grace_s: float = 10.0) -> None:
        if not stop_grace_s >= 0:
            raise ValueError(f"stop_grace_s must be >= 0, got {stop_grace_s}")
        self.client = client
        self.stopping = threading.Event()
        self.stop_grace_s = stop_grace_s
        #: monotonic time after which a stopping worker stops retrying (set by ``stop``)
        self._stop_deadline = float("inf")
        #: "worker stopped (SIGINT)": the reason stored with a trial handed back on a stop
        self.stop_reason = "worker stopped"
        self.lease_duration_s = 60.0
        self.outage = Outage(client.target, bool(getattr(client, "tls", False)))

    # -------------------------------------------------------------- signals and retries

    def stop(self, why: str = "") -> None:
        """Asks the worker to hand back its trial and exit, within ``stop_grace_s``.

        Args:
            why: what asked (a signal's name), stored with a trial handed back.
        """
        if not self.stopping.is_set():
            self.stop_reason = f"worker stopped ({why})" if why else "worker stopped"
            self._stop_deadline = time.monotonic() + self.stop_grace_s
            self.stopping.set()

    def install_signal_handlers(self) -> None:
        def _handler(signum: int, _frame: object) -> None:
            name = signal.Signals(signum).name
            log.info("%s: handing back the current trial and exiting", name)
            self.stop(name)

        signal.signal(signal.SIGTERM, _handler)
        signal.signal(signal.SIGINT, _handler)

    def _retry(
        self,
        what: str,
        fn: Callable[[], T],
        give_up_after_s: float | None = None,
        while_stopping: bool = True,
    ) -> T:
        """Calls ``fn`` until it succeeds or fails for good; transient errors back off.

        Args:
            give_up_after_s: re-raise a transient error after this long (None: never).
            while_stopping: keep trying after a stop request, until the stop grace ends (to
                hand back or report a trial); False re-raises at once once stopping.

        Every retry sleeps its backoff delay (cut to the time left), stop or no stop: a stop
        request shortens how long the worker keeps trying, never how long it waits between
        attempts. A server that does not answer is said once (``Outage``), not per attempt.
        """
        backoff = Backoff()
        give_up = math.inf if give_up_after_s is None else time.monotonic() + give_up_after_s
        while True:
            try:
                result = fn()
            except ClientError as e:
                if not e.transient:
                    raise
                limit = give_up
                if self.stopping.is_set():
                    limit = min(limit, self._stop_deadline if while_stopping else 0.0)
                left = limit - time.monotonic()
                if left <= 0:
                    raise
                delay = min(backoff.next(), left)
                self.outage.failed(what, e, delay)
                time.sleep(delay)
            else:
                self.outage.answered()
                return result

    def leave(self, worker_id: str) -> None:
        """Tells the server this worker is exiting, so that it stops counting it as connected
        at once (not a lease duration later). A courtesy: one short try; a server that is
        gone, or older and without LeaveWorker, changes nothing."""
        try:
            self.client.leave(worker_id, timeout_s=2.0)
        except ClientError as e:
            log.debug("leave: %s", e)

    def _safe(self, what: str, fn: Callable[[], Any]) -> bool:
        """Tells the server ``what`` (fail or hand back a trial), retrying for one lease
        duration; whether the server took it (a refusal or silence is logged, not raised)."""
        try:
            self._retry(what, fn, give_up_after_s=self.lease_duration_s)
        except ClientError as e:
            if e.transient:
                log.warning("could not %s: %s", what, self._unreachable(e))
            else:
                log.warning("could not %s: the server refused: %s", what, e)
            return False
        return True

    def _unreachable(self, e: ClientError) -> str:
        return (
            f"the server at {self.client.target} is unreachable ({e.code.name}); it fails the "
            f"trial when its lease expires (within {self.lease_duration_s:.0f}s) and re-queues it"
        )
