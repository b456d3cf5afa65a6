"""Studies a worker cannot train now because it lacks their data.

A trial that fails for this machine's data (no ``glue_data`` folder and the hub unreachable, a
task's split missing or unreadable: ``GlueDataMissing``, ``GlueDataInvalid``) is the machine's
failure, not the candidate's. Failing it (retryable) sent it straight back to the same worker,
which failed it again within a second: one worker without MRPC spent every retry of an MRPC
study's candidates, and one without any data a whole study's budget. Instead the worker hands
the trial back (``ReleaseTrial``: not counted against its retries), says once, as an error,
what it lacks and how to fix it, and asks the server for none of that study's trials
(``AcquireTrialRequest.skip_studies``) for :data:`SKIP_SECONDS`: another worker takes them,
and ``archsearch show`` no longer counts this one among the study's workers. Then it tries
again (the data may have been put in place, the hub may answer again).

A worker serving one study (``--study``) has nothing else to do: it exits 2, which fleets do
not restart (:class:`~archsearch.worker._exits.BadSetup`).
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("archsearch.worker")

#: How long a worker leaves a study whose data it lacks before it tries again.
SKIP_SECONDS = 600.0
#: The most studies one acquire may skip (``AcquireTrialRequest.skip_studies``).
MAX_SKIPPED = 100


class DataSkips:
    """The studies this worker lacks the data of, each with why, until when."""

    def __init__(self, worker_id: str, skip_s: float = SKIP_SECONDS) -> None:
        self.worker_id = worker_id
        self.skip_s = skip_s
        self._until: dict[str, tuple[float, str]] = {}

    def lacks(self, study: str, why: str) -> str:
        """Records that this worker lacks ``study``'s data (``why``: the error, which names
        the path and the fix); returns the reason the trial is handed back with."""
        if study not in self._until:
            log.error(
                "study %s: this worker lacks its data and takes none of its trials for %.0f "
                "minutes (another worker may have it): %s",
                study,
                self.skip_s / 60,
                why,
            )
        self._until[study] = (time.monotonic() + self.skip_s, why)
        return f"worker {self.worker_id} lacks the data: {why}"

    def why(self, study: str) -> str | None:
        """Why this worker skips ``study`` now; None when it does not."""
        entry = self._until.get(study)
        return None if entry is None or entry[0] <= time.monotonic() else entry[1]

    def studies(self) -> list[str]:
        """The studies skipped now (``skip_studies`` of the next acquire); those whose time
        is up are tried again, which is said."""
        now = time.monotonic()
        for study, (until, _why) in list(self._until.items()):
            if until <= now:
                del self._until[study]
                log.info("study %s: trying its trials again (was skipped: data missing)", study)
        # the server takes 100 names: those skipped last (the others are asked again, and
        # handed back again, as their time comes)
        latest = sorted(self._until, key=lambda s: self._until[s][0], reverse=True)
        return sorted(latest[:MAX_SKIPPED])
