"""What a worker says while its server does not answer: once, clearly, then rarely.

A worker retries every call the server may answer later (``ClientError.transient``). The first
failure says where the worker dials, why it gets no answer and the fix (the CLI's own line,
``no archsearch server answers at HOST:PORT (...); start one with `archsearch serve` or pass
--server HOST:PORT``, or the TLS mistake ``connection_cause`` names); later retries log at
debug level only, with a reminder every ``remind_s`` seconds, and one line when it answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import grpc

from archsearch.server._channel import STORAGE_DOWN, no_server
from archsearch.server.client import ClientError, connection_cause

log = logging.getLogger("archsearch.worker")

#: seconds between two reminders that the server still does not answer
REMIND_S = 60.0


def unreachable(e: ClientError, target: str, tls: bool, answered_before: bool = False) -> str:
    """One line on a transient error: why the server at ``target`` gives no answer and the
    fix (UNAVAILABLE), else the server's message (busy, deadline passed; may be empty)."""
    if e.code == grpc.StatusCode.UNAVAILABLE:
        cause = connection_cause(e, target, tls, answered_before)
        return cause or no_server(target, e.details)
    return e.details


class Outage:
    """Logs a stretch of failed calls to one server once, then a reminder now and then.

    Thread-safe: the main thread's calls and the heartbeat thread may both report.

    Args:
        target: HOST:PORT the worker dials.
        tls: whether it dials with TLS (which connection mistakes apply).
        remind_s: seconds between reminders while nothing answers.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        target: str,
        tls: bool = False,
        remind_s: float = REMIND_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.tls = tls
        self.remind_s = remind_s
        self.clock = clock
        self._lock = threading.Lock()
        #: when the current stretch of failures began (None: the server answers)
        self.since: float | None = None
        #: the last line said about it (the worker's exit line when it gives up)
        self.line = ""
        self._key: tuple[grpc.StatusCode, str] | None = None
        self._said_at = 0.0
        #: whether the server ever answered: a closed socket is then a server gone, not TLS
        self.answered_once = False

    def failed(self, what: str, e: ClientError, delay: float) -> None:
        """A call ``what`` failed with transient ``e``; the next try comes in ``delay`` s."""
        line = unreachable(e, self.target, self.tls, self.answered_once)
        cause = connection_cause(e, self.target, self.tls, self.answered_once)
        # One line per kind of failure: grpc's wording of the same refusal varies a little.
        key = (e.code, cause or "")
        with self._lock:
            now = self.clock()
            if self.since is None:
                self.since = now
            elapsed = now - self.since
            if key != self._key:
                self._key, self._said_at, self.line = key, now, line
                say = (
                    f"{what}: {e.code.name}{': ' if line else ''}{line}; retrying until it answers"
                )
                level = logging.ERROR if cause else logging.WARNING
            elif now - self._said_at >= self.remind_s:
                self._said_at = now
                still = (
                    "its storage still cannot be used"  # the server answers, its storage not
                    if STORAGE_DOWN in e.details
                    else "still no answer from the server"
                )
                say = (
                    f"{what}: {still} at {self.target} after {elapsed:.0f}s ({e.code.name}); "
                    "retrying"
                )
                level = logging.WARNING
            else:
                say, level = "", logging.DEBUG
        if say:
            log.log(level, "%s", say)
        log.debug("%s: %s; retrying in %.1fs", what, e.code.name, delay)

    def answered(self) -> None:
        """A call succeeded: the stretch of failures, if any, is over."""
        with self._lock:
            self.answered_once = True
            if self.since is None:
                return
            elapsed = self.clock() - self.since
            self.since, self._key = None, None
        log.info("the server at %s answers again (after %.0fs)", self.target, elapsed)
