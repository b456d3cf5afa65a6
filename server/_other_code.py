"""A worker that runs other archsearch code than the server, and the candidates it fails.

An old worker beside an upgraded server took a new study's candidates it could not read (a
selection method it did not know, a field it did not have) and failed them for good: each used
up a candidate of the budget, and a study could lose every candidate that way while upgraded
workers stood idle. A failure for good (not retryable) reported by a worker whose code label
(``server/_source.py``) is not the server's is therefore not taken as the candidate's verdict:

- the first such failure of a candidate re-queues it without counting against its retry budget,
  and its reason says which worker ran which code and that it is re-queued for a second opinion;
- that worker gets no more of this study's trials while a worker running the server's code is
  connected and could train them (it serves the other studies); after it registers with the
  server's code (upgraded and restarted), it is served again;
- a second failure for good of the same candidate counts as any failure does, whoever reports
  it: a candidate that fails on every code is failed, and a fleet that runs nothing but other
  code loses at most one extra attempt per failing candidate, never the study.

A worker that sends no label is taken at its word: it is a client written against the wire
contract (its failures are its trainers' verdicts), or an archsearch from before labels
(2026-12-07), which the server's log names when it registers.

What is remembered lives in this server's memory: after a restart a candidate may get one more
second opinion, and a worker one more failure before it is set aside again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from archsearch.server._index import StudyHandle
from archsearch.server._source import code_label

#: Joins a worker's reason and what this module adds to it.
SEPARATOR = " | "


class OtherCode:
    """Decides when a worker's failure for good is re-queued for a second opinion, and which
    workers sit out which studies.

    Args:
        source_of: a registered worker's code label (None for a worker this server has not
            seen register, "" for one that sent none).
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
        self._lock = threading.Lock()
        #: (storage study id, fingerprint) of candidates already given their second opinion
        self._reopened: set[tuple[int, str]] = set()
        #: (storage study id, worker id) -> the code label it ran when it failed a candidate
        self._set_aside: dict[tuple[int, str], str] = {}

    def second_opinion(self, h: StudyHandle, fp: str, worker: str, reason: str) -> str | None:
        """The reason to store when a failure for good of candidate ``fp`` by ``worker`` is to
        be re-queued without counting (None: it counts as reported). Records the candidate as
        reopened and the worker as set aside for this study."""
        label = self._source_of(worker) if worker else None
        ours = code_label()
        if not label or label == ours:
            return None
        with self._lock:
            if (h.study_id, fp) in self._reopened:
                return None
            self._reopened.add((h.study_id, fp))
            self._set_aside[(h.study_id, worker)] = label
        return (
            f"{reason}{SEPARATOR}worker {worker} runs other archsearch code ({label}) than "
            f"this server ({ours}): re-queued without counting, for a worker that runs the "
            f"server's code; {worker} gets no more of this study's trials while such a worker "
            "is connected. Run the same archsearch on the server and every worker"
        )

    def sits_out(self, h: StudyHandle, worker: str) -> bool:
        """Whether ``worker`` gets none of ``h``'s trials now: it failed one of them for good
        while running the code it runs now, and a worker running the server's code could
        train them instead."""
        with self._lock:
            label = self._set_aside.get((h.study_id, worker))
        if label is None:
            return False
        if self._source_of(worker) != label:  # registered since with other code: served again
            with self._lock:
                self._set_aside.pop((h.study_id, worker), None)
            return False
        return self._current_serves(h, worker)


def same_report(stored: str, reason: str) -> bool:
    """Whether a stored ``fail_reason`` is what a failure report of ``reason`` stored (a
    repeated report gets the first one's answer), this module's addition included."""
    return stored == reason or stored.startswith(reason + SEPARATOR)
