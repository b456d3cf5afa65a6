"""A worker that runs other archsearch code than the server, and the candidates it fails.

An old worker beside an upgraded server took a new study's candidates it could not read (a
selection method it did not know, a field it did not have) and failed them for good: each used
up a candidate of the budget, and a study could lose every candidate that way while upgraded
workers stood idle. A failure for good (not retryable) reported by a worker whose code label
(``server/_source.py``) is not the server's is therefore not taken as the candidate's verdict:

- the first such failure of a candidate re-queues it without counting against its retry budget,
  and its reason says which worker ran which code and that it is re-queued for a second opinion;
- every worker running that same other code gets no more of this study's trials while a worker
  running the server's code is connected and could train them (they serve the other studies),
  so the second opinion comes from the server's code; a worker that registers again with
  the server's code (upgraded) is served again;
- a second failure for good of the same candidate counts as any failure does, whoever reports
  it: a candidate that fails on every code is failed, and a fleet that runs nothing but other
  code loses at most one extra attempt per failing candidate, never the study.

Not judged this way: a failure while the study is stopped or cancelled (``stop
--cancel-running``: the user's stop, not the candidate's verdict), and a worker that sends no
label, which is taken at its word: it is a client written against the wire contract (its
failures are its trainers' verdicts), or an archsearch from before labels (2026-12-07), which
the server's log names when it registers.

What is remembered lives in the study's in-memory index (a deleted study's is gone with it,
though the next launch may reuse its storage id): after a restart a candidate may get one more
second opinion, and a worker one more failure before it is set aside again. A worker that
registered with an earlier server and has not asked for work since is judged by the label
stored with its lease.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from archsearch.server._index import RUNNING, StudyHandle
from archsearch.server._source import code_label

#: Joins a worker's reason and what this module adds to it.
SEPARATOR = " | "


@dataclasses.dataclass(frozen=True)
class Reopening:
    """A failure to re-queue for a second opinion: the reason to store, and what to remember
    once the failure is stored (:meth:`OtherCode.remember`)."""

    reason: str
    fp: str
    label: str


class OtherCode:
    """Decides when a worker's failure for good is re-queued for a second opinion, and which
    workers sit out which studies.

    Args:
        source_of: a registered worker's code label (None for a worker this server has not
            seen, "" for one that sent none).
        current_serves: whether a connected worker running this server's code, other than
            the given one, could train the study's trials.
    """

    def __init__(
        self,
        source_of: Callable[[str], str | None],
        current_serves: Callable[[StudyHandle, str], bool],
    ) -> None:
        self._source_of = source_of
        self._current_serves = current_serves

    def second_opinion(
        self,
        h: StudyHandle,
        fp: str,
        worker: str,
        reason: str,
        leased_code: Callable[[], str] = lambda: "",
    ) -> Reopening | None:
        """Whether a failure for good of candidate ``fp`` by ``worker`` is to be re-queued
        without counting (None: it counts as reported). ``leased_code``: the worker's label
        as stored with the lease, for a worker this server has not met (it registered before
        a restart). Changes nothing: call :meth:`remember` once the failure is stored.
        Caller holds ``h.lock``."""
        if h.state != RUNNING or h.cancel_running:
            return None
        label = self._source_of(worker) if worker else None
        if label is None:
            label = leased_code()
        ours = code_label()
        if not label or label == ours or fp in h.index.reopened:
            return None
        said = (
            f"{reason}{SEPARATOR}worker {worker} runs other archsearch code ({label}) than "
            f"this server ({ours}): re-queued without counting, for a worker that runs the "
            "server's code; workers of that code get no more of this study's trials while "
            "such a worker is connected. Run the same archsearch on the server and every worker"
        )
        return Reopening(said, fp, label)

    @staticmethod
    def remember(h: StudyHandle, reopening: Reopening) -> None:
        """Records a re-queued failure of ``h``: its candidate had its second opinion, and
        the workers of its code sit the study out."""
        with h.lock:
            h.index.reopened.add(reopening.fp)
            h.index.set_aside.add(reopening.label)

    def sits_out(self, h: StudyHandle, worker: str) -> bool:
        """Whether ``worker`` gets none of ``h``'s trials now: it runs code of which a worker
        failed one of them for good, and a worker running the server's code could train
        them instead."""
        label = self._source_of(worker)
        if not label or label not in h.index.set_aside:
            return False
        return self._current_serves(h, worker)

    def why_out(self, h: StudyHandle, worker: str) -> str:
        """What a worker bound to ``h`` by ``--study`` is told while it sits it out ("" when
        it does not)."""
        if not self.sits_out(h, worker):
            return ""
        return (
            f"this worker runs other archsearch code ({self._source_of(worker)}) than the "
            f"server ({code_label()}), and a worker of that code failed a candidate of study "
            f"{h.spec.name}: it gets none of its trials while a worker running the server's "
            "code is connected; run the same archsearch here"
        )


def same_report(stored: str, reason: str) -> bool:
    """Whether a stored ``fail_reason`` is what a failure report of ``reason`` stored (a
    repeated report gets the first one's answer), this module's addition included."""
    return stored == reason or stored.startswith(reason + SEPARATOR)
