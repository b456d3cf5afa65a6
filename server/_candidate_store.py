"""Storing a just-asked candidate: its spec, repeats of completed ones, candidates in flight."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from optuna.trial import TrialState

from archsearch.server import _dashboard_attrs as dashboard
from archsearch.server import _trial_writes
from archsearch.server._artifacts import GraphArtifacts
from archsearch.server._deferred_storage import DeferredTrialStorage
from archsearch.server._index import LiveTrial, Prepared, StudyHandle
from archsearch.server._stored_defaults import candidate_data, stored_candidate
from archsearch.server._suggest import AskedCandidate
from archsearch.server._writer import StorageWriter
from archsearch.spaces import Candidate
from archsearch.spaces._flexibert_small import MAPPED_FROM_ATTR

log = logging.getLogger("archsearch.server")

#: A study whose loop proposed this many repeats in a row (at least; ``n_trials`` when larger)
#: completes: its loop finds nothing new (a small space is exhausted).
MIN_REPEAT_STREAK = 50
#: ... or this many times that many repeats in all (new candidates rarely coming)
REPEATS_FACTOR = 10


class CandidateStore:
    """Queues the storage of the candidates ``CandidatePool`` asks from a study's loop.

    Args:
        storage: the server's Optuna storage (asked trials are provisional in it).
        writer: the group-commit writer.
        artifacts: architecture pictures for the dashboard, or None.
    """

    def __init__(
        self,
        storage: DeferredTrialStorage,
        writer: StorageWriter,
        artifacts: GraphArtifacts | None,
    ) -> None:
        self.storage = storage
        self.writer = writer
        self.artifacts = artifacts

    def store(self, h: StudyHandle, asked: AskedCandidate) -> Prepared | None:
        """Queues the storage of a just-asked trial's candidate (one transaction).

        The candidate is the spec's, with the suggestion's architecture and kind, and its
        recipe and data keys merged over the spec's.

        A provisional trial (``DeferredTrialStorage``) is inserted whole: row, parameters
        and attributes; when it repeats a completed candidate it is inserted completed, with
        that result (``Prepared.repeat``; a repeat of a pruned candidate with its curve too).
        A real one (a queued retry) gets its attributes.
        A suggestion a table space mapped to a row (``mapped_from``) also gets the row's
        parameters as ``row.<param>`` attributes (``_dashboard_attrs.row_rows``).
        The budget is counted now, so the next ask sees it (``CandidatePool.settle_prepared``
        gives it back if the write fails): just before the insert is queued, in one step with
        a check of the budget as it is then (``_count``). None
        when the candidate is in flight already, or when the budget was spent meanwhile
        (``resume --n-trials`` lowered it while the loop was asked): the provisional trial is
        dropped unstored, and the caller's next look at the budget finds it spent. Caller
        holds ``h.ask_lock``.

        A retry is what the ask popped (a stored trial), not what ``h.index.waiting`` says
        now: a stop that raced the pop has dropped it from there already (its failing write
        found the trial RUNNING), and the retry must keep its stored candidate and not count
        against the budget again."""
        idx = h.index
        tid, arch, suggestion = asked.trial_id, asked.architecture, asked.suggestion
        retry = asked.requeued and not self.storage.is_provisional(tid)
        attempt = 0
        candidate: Candidate | None = None
        if retry:  # a re-queued candidate keeps its spec
            frozen = self.storage.get_trial(tid)
            attempt = len(frozen.system_attrs.get("retry_history", []))
            if "candidate" in frozen.user_attrs:
                candidate = stored_candidate(frozen.user_attrs["candidate"])
            # else: a retry of a trial that died before its candidate was stored: rebuild it
            # from the parameters, which the retry carries.
        earlier = None
        counted_now = False  # counted against the budget by ``_count``
        ended = TrialState.COMPLETE  # how a repeat is recorded: as its earlier trial ended
        curve: dict[int, float] = {}  # a pruned one's intermediate values, which it carries
        fp = ""
        written: Future[Any] | None = None
        if candidate is None:
            # the loop may set keys per candidate (BOSHNAS: a weight-transfer source); a
            # space of training settings (lora) moves its parameters into the recipe
            architecture, recipe = h.space.candidate_parts(
                arch, {**h.spec.recipe, **suggestion.recipe}
            )
            candidate = Candidate(
                space=h.spec.space,
                architecture=architecture,
                recipe=recipe,
                data=candidate_data(
                    h.spec.data,
                    dict(suggestion.data),
                    h.created_at,
                    h.spec.data_space.get("selection", []),
                ),
                kind=suggestion.kind,
            )
            user: dict[str, Any] = {
                "candidate": candidate.to_dict(),
                "arch": _job(candidate.kind) + h.space.describe(arch),
                **dashboard.candidate_rows(candidate.to_dict()),
            }
            fp = candidate.fingerprint()
            earlier = idx.done.get(fp) if attempt == 0 else None
            if earlier is None and attempt == 0 and fp in idx.pruned:
                number, last, curve = idx.pruned[fp]
                earlier, ended = (number, last, {}), TrialState.PRUNED
            if earlier is not None and ended == TrialState.PRUNED:
                user["duplicate_of"] = earlier[0]
            elif earlier is not None:
                user["duplicate_of"], _, user["metrics"] = earlier
                user.update(dashboard.metric_rows(earlier[2]))
            elif self.storage.is_provisional(tid) and self._in_flight(h, fp):
                # Never stored: the loop is asked again. (Library loops never propose a row
                # that is in flight; Optuna's samplers may.) A candidate that completed since
                # ``done`` was read above is caught here too, and repeats on the next ask.
                self.storage.discard_provisional(tid)
                return None
            if self.storage.is_provisional(tid):
                if earlier is None and not retry:
                    if not self._count(h):
                        self.storage.discard_provisional(tid)  # never stored
                        return None
                    counted_now = True
                _, frozen = self.storage.take_provisional(tid)
                frozen.user_attrs.update(user)
                if MAPPED_FROM_ATTR in frozen.user_attrs:  # a table row, not the suggestion
                    frozen.user_attrs.update(dashboard.row_rows(h.space.to_params(arch)))
                if earlier is not None:
                    frozen.state, frozen.values = ended, list(earlier[1]) or None
                    frozen.datetime_complete = datetime.datetime.now()
                    frozen.intermediate_values = dict(curve)
                written = self.writer.submit(_trial_writes.insert_trial_op(h.study_id, frozen))
                written.add_done_callback(self._on_inserted(h.study_id, tid))
            elif earlier is not None:
                written = self.writer.submit(
                    _trial_writes.finish_op(tid, ended, earlier[1] or None, user, curve=curve)
                )
            else:
                written = self.writer.submit(_trial_writes.attrs_op(tid, user=user))
        if self.artifacts is not None and earlier is None and written is not None:
            written.add_done_callback(self._draw_when_stored(h, tid, asked.number, arch))
        live = LiveTrial(tid, asked.number, candidate, attempt, fp=fp)
        with h.lock:
            if retry:
                idx.waiting.discard(tid)
            elif earlier is None:
                if not counted_now:  # a real trial (never, with the server's storage)
                    idx.originals += 1
                idx.repeat_streak = 0
            else:
                idx.repeat_streak += 1
                idx.repeats += 1
                spent = idx.repeat_streak >= self.repeat_limit(h)
                if (spent or idx.repeats >= self.repeats_limit(h)) and not idx.exhausted:
                    idx.exhausted = self.exhausted_reason(
                        h, idx.repeat_streak, idx.originals, idx.repeats
                    )
                    log.info("study %s: %s", h.spec.name, idx.exhausted)
            if earlier is None:
                idx.storing[live.fp] += 1  # in flight from now on
        if earlier is not None:
            # debug, not info: in small spaces repeats come by the hundred per second, and the
            # trial's ``duplicate_of`` attribute already records each one
            log.debug(
                "trial %d of %s repeats trial %d; reused its result",
                asked.number,
                h.spec.name,
                earlier[0],
            )
        return Prepared(
            written, live, repeat=earlier is not None, counted=not retry and earlier is None
        )

    @staticmethod
    def _count(h: StudyHandle) -> bool:
        """Counts one more distinct candidate against ``h``'s budget, unless it is spent.

        Under ``h.lock``, which a resume holds while it checks and sets a new budget: checked
        only before the ask (``CandidatePool.prepare``), a budget lowered during the ask to
        the candidates asked so far let that ask's candidate in on top of it.
        """
        with h.lock:
            if h.index.originals >= h.spec.n_trials:
                return False
            h.index.originals += 1
            return True

    def _in_flight(self, h: StudyHandle, fp: str) -> bool:
        """Whether a candidate with fingerprint ``fp`` is prepared, leased, being stored or
        finishing in ``h``, or done: a completion moves it from ``finishing`` to ``done`` under
        the lock, so checking both here leaves no gap in which it is in neither."""
        idx = h.index
        with h.lock:
            return (
                fp in idx.storing
                or fp in idx.done
                or fp in idx.pruned
                or any(live.fp == fp for live in idx.live.values())
                or any(entry[2] == fp for entry in idx.finishing.values())
            )

    def repeat_limit(self, h: StudyHandle) -> int:
        return max(MIN_REPEAT_STREAK, h.spec.n_trials)

    def repeats_limit(self, h: StudyHandle) -> int:
        """Repeats in all past which a study completes: 8,022 trials of a 620-row table ran
        on for 613 distinct ones, new ones still coming after runs shorter than the streak."""
        return REPEATS_FACTOR * self.repeat_limit(h)

    @staticmethod
    def exhausted_reason(h: StudyHandle, streak: int, originals: int, repeats: int = 0) -> str:
        if streak < max(MIN_REPEAT_STREAK, h.spec.n_trials):
            return (
                f"the {h.spec.loop} loop proposed {repeats} repeated candidates in all for "
                f"{originals} distinct ones: little new left to find (the rest of the space "
                "is reached rarely, or not at all)"
            )
        return (
            f"the {h.spec.loop} loop proposed {streak} repeated candidates in a row after "
            f"{originals} distinct ones: nothing new left to try (the space may be exhausted)"
        )

    def _draw_when_stored(
        self, h: StudyHandle, trial_id: int, number: int, arch: dict[str, Any]
    ) -> Callable[[Future[Any]], None]:
        """Done-callback of a new candidate's write: queues its picture (see GraphArtifacts);
        a provisional trial's real id is the insert's result."""

        def done(fut: Future[Any]) -> None:
            if fut.exception() is None and self.artifacts is not None:
                real_id = getattr(fut.result(), "trial_id", trial_id)
                self.artifacts.submit(h.space, real_id, number, arch)

        return done

    def _on_inserted(self, study_id: int, provisional_id: int) -> Callable[[Future[Any]], None]:
        """Done-callback of a provisional trial's insert (runs on the writer thread, so it
        takes no study lock): the storage stops showing the in-memory copy."""

        def done(fut: Future[Any]) -> None:
            if fut.exception() is None:
                self.storage.stored(study_id, fut.result().number)
            self.storage.forget(provisional_id)

        return done


def _job(kind: str) -> str:
    """The prefix of a job's description: none for a candidate to train ("supernet job: ...")."""
    return "" if kind == "train" else f"{kind} job: "
