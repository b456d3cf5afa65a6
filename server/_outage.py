"""A storage outage, said once: a line when it starts, a reminder now and then, a line when over.

While the database cannot be used (PostgreSQL restarting or unreachable, a full disk), every
write batch, RPC and background pass fails the same way. Each used to log on its own: the
writer a full traceback per failed batch (~94 lines), every RPC a warning, so stopping
PostgreSQL for 35 s wrote ~1,800 lines. ``OutageLog`` says the outage once, in the database's
own words (their first line), reminds at most every ``remind_s`` seconds while it lasts (with
how many failures it kept quiet), and says once how long it lasted when a write commits again.
Tracebacks go to the debug log (``archsearch -v serve``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from archsearch.server._channel import STORAGE_DOWN

log = logging.getLogger("archsearch.server")

#: seconds between two reminders of an outage that lasts
REMIND_S = 60.0


class OutageLog:
    """The log of one storage's outages; thread-safe.

    Args:
        remind_s: least seconds between two lines of one outage.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, remind_s: float = REMIND_S, clock: Callable[[], float] = time.monotonic):
        self.remind_s = remind_s
        self._clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None  # when the outage began; None: no outage
        self._said_at = 0.0
        self._quiet = 0  # failures not logged since the last line

    @property
    def down_since(self) -> float | None:
        """When the current outage began (``clock`` seconds); None when there is none."""
        return self._since

    def down(self, where: str, said: str, exc: BaseException | None = None) -> None:
        """A failure of ``where`` because the storage cannot be used (``said``: the database's
        words, one line): logged when it starts an outage or a reminder is due; ``exc``'s
        traceback at debug level only."""
        with self._lock:
            now = self._clock()
            if self._since is None:
                self._since, self._said_at, self._quiet = now, now, 0
                log.warning(
                    "%s: %s (%s); retrying, clients are answered UNAVAILABLE and retry too",
                    STORAGE_DOWN,
                    said,
                    where,
                )
            elif now - self._said_at >= self.remind_s:
                log.warning(
                    "%s for %.0f s now: %s (%s; %d more failures since the last line)",
                    STORAGE_DOWN,
                    now - self._since,
                    said,
                    where,
                    self._quiet,
                )
                self._said_at, self._quiet = now, 0
            else:
                self._quiet += 1
        if exc is not None and log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s", where, said, exc_info=exc)

    def up(self) -> None:
        """The storage was just used successfully: ends the outage, if any, with one line."""
        if self._since is None:  # the hot path: a racy read is fine, the lock decides
            return
        with self._lock:
            if self._since is None:
                return
            lasted = self._clock() - self._since
            self._since = None
        log.warning("storage reconnected after %.0f s; serving again", lasted)
