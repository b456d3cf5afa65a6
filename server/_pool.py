"""The candidate pool: candidates asked from the loop and stored ahead of the workers.

When a trial finishes, the RPC that finished it asks the loop for up to ``TOP_UP_PER_FINISH``
more candidates while the study's pool of ready candidates is smaller than its target, and
stores each at once (a RUNNING trial with its ``candidate`` but no lease yet), so an acquire is
an in-memory pop plus one lease write. A candidate identical to one in flight is never prepared
twice; repeats of completed ones are recorded with the earlier result but do not count against
``n_trials``; a loop that proposes only repeats for long exhausts the study.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import optuna
from optuna.trial import TrialState

from archsearch.search import NoSuggestion
from archsearch.server import _dashboard_attrs as dashboard
from archsearch.server import _storage
from archsearch.server._artifacts import GraphArtifacts
from archsearch.server._deferred_storage import DeferredTrialStorage
from archsearch.server._index import RUNNING, STOPPED_REASON, LiveTrial, Prepared, StudyHandle
from archsearch.server._lifecycle import StudyLifecycle
from archsearch.server._suggest import AskedCandidate, ask_candidate
from archsearch.server._writer import StorageWriter
from archsearch.spaces import Candidate

log = logging.getLogger("archsearch.server")

MAX_DUPLICATE_ASKS = 20
#: A study whose loop proposed this many repeats in a row (at least; ``n_trials`` when larger)
#: completes: its loop finds nothing new (a small space is exhausted).
MIN_REPEAT_STREAK = 50
MAX_PREPARED = 64
NON_ADAPTIVE_SAMPLERS = (
    optuna.samplers.RandomSampler,
    optuna.samplers.QMCSampler,
    optuna.samplers.GridSampler,
    optuna.samplers.BruteForceSampler,
)
TOP_UP_PER_FINISH = 2


class CandidatePool:
    """Prepares, stores and settles candidates; keeps each study's pool at its target.

    Args:
        storage: the server's Optuna storage (the loop asks on it, deferring new trials).
        writer: the group-commit writer.
        lifecycle: finishes trials and completes studies.
        artifacts: architecture pictures for the dashboard, or None.
        active: worker id -> (last acquire, monotonic; its trainers), shared with the manager.
        lease_duration_s: how long a worker counts as active after its last acquire.
        notify: wakes acquires waiting for work.
    """

    def __init__(
        self,
        storage: DeferredTrialStorage,
        writer: StorageWriter,
        lifecycle: StudyLifecycle,
        artifacts: GraphArtifacts | None,
        active: dict[str, tuple[float, tuple[str, ...]]],
        lease_duration_s: int,
        notify: Callable[[], None],
    ) -> None:
        self.storage = storage
        self.writer = writer
        self.lifecycle = lifecycle
        self.artifacts = artifacts
        self.active = active
        self.lease_duration_s = lease_duration_s
        self.notify = notify

    def prepare(self, h: StudyHandle) -> Prepared | None:
        """Asks the loop for the next candidate and queues its storage; None when there is
        nothing to prepare now (budget spent, loop exhausted or still building, or only
        candidates already in flight proposed). The caller finishes with
        :meth:`settle_prepared` after releasing ``h.ask_lock``, so the next ask overlaps this
        one's commit.

        Samplers re-propose evaluated points in small discrete spaces (TPE does); training the
        same candidate with the same recipe and seed again would only cost a worker's time, so
        a repeat is stored completed at once with the earlier result (``duplicate_of``), which
        keeps the sampler's history honest; it does not count against ``n_trials`` (distinct
        candidates). A loop that proposes ``max(MIN_REPEAT_STREAK, n_trials)`` repeats in a
        row has nothing new left: the study completes (``archsearch:completed_reason``). A
        candidate identical to one in flight (prepared, leased or finishing) is dropped
        unstored and the loop asked again; after ``MAX_DUPLICATE_ASKS`` proposals without a
        new candidate the caller gets None ("no work yet"), and once the one in flight has
        finished, the same proposal is a recorded repeat.

        Caller holds ``h.ask_lock`` (loops are asked one at a time) but not ``h.lock``: a slow
        sampler never blocks leases, heartbeats or reports of the study.
        """
        idx = h.index
        with h.lock:
            idx.preparing += 1  # the study is not complete while a candidate is on its way
        repeats: list[Future[Any] | None] = []
        in_flight = 0
        try:
            # Bounded: at most MAX_DUPLICATE_ASKS proposals of candidates in flight and
            # MIN_REPEAT_STREAK repeats per call (enough to end a small study in one call).
            while in_flight < MAX_DUPLICATE_ASKS and len(repeats) < MIN_REPEAT_STREAK:
                with h.lock:
                    if h.state != RUNNING:
                        break
                    if not idx.waiting and (idx.originals >= h.spec.n_trials or idx.exhausted):
                        break
                    waiting = bool(idx.waiting)
                if not waiting and not h.loop.ready(h.space):
                    break  # still building (``warm_up``): no work yet
                try:
                    with self.storage.deferring():
                        asked = ask_candidate(
                            h.loop,
                            h.study,
                            h.space,
                            self.storage,
                            waiting,
                            h.directions,
                            h.spec.data_choices,
                        )
                except NoSuggestion as e:  # a staged loop waits, or has finished
                    if e.finished:
                        with h.lock:
                            if not idx.exhausted:
                                idx.exhausted = e.reason
                                log.info("study %s: %s", h.spec.name, e.reason)
                    break
                try:
                    prepared = self._store_candidate(h, asked)
                except Exception:
                    self._abandon(h, asked.trial_id)
                    raise
                if prepared is None:  # the same candidate is in flight: ask again
                    in_flight += 1
                    continue
                if prepared.repeat:
                    repeats.append(prepared.stored)  # finished with the earlier result
                    continue
                prepared.repeats = repeats
                return prepared
        except BaseException:
            with h.lock:
                idx.preparing -= 1
            raise
        # The budget is spent, or the loop keeps proposing evaluated candidates or ones in
        # flight (no work yet), or it is still being built.
        self.settle_prepared(h, Prepared(None, None, repeats=repeats))
        return None

    def settle_prepared(self, h: StudyHandle, prepared: Prepared) -> int | None:
        """Waits for a prepared candidate's write and registers it as live; returns its trial
        id (None for repeats only). Call without ``h.ask_lock`` and ``h.lock``.

        Raises:
            Exception: the write failed; the budget it took is given back.
        """
        idx = h.index
        given_back = 0
        for fut in prepared.repeats:  # repeats are not counted against the budget
            if fut is not None and fut.exception() is not None:
                log.error("storing a repeat of %s failed: %s", h.spec.name, fut.exception())
        live = prepared.live
        storing = prepared.live.fp if prepared.live is not None and not prepared.repeat else ""
        error = prepared.stored.exception() if prepared.stored is not None else None
        if error is not None:
            given_back += prepared.counted
            if live is not None and not self.storage.is_provisional(live.trial_id):
                self._abandon(h, live.trial_id)  # asked and RUNNING, but without its candidate
            live = None
        elif live is not None and prepared.stored is not None:
            stored = prepared.stored.result()
            if isinstance(stored, _storage.StoredTrial):  # an inserted provisional trial
                live = dataclasses.replace(live, trial_id=stored.trial_id, number=stored.number)
        with h.lock:
            idx.preparing -= 1
            idx.originals -= given_back
            if storing:
                idx.storing[storing] -= 1
                if idx.storing[storing] <= 0:
                    del idx.storing[storing]
            if live is not None:
                idx.live[live.trial_id] = live
        if error is not None:
            raise error
        return None if live is None else live.trial_id

    def _abandon(self, h: StudyHandle, tid: int) -> None:
        """Cleans up after a failed preparation: never leave a trial RUNNING that the index
        does not know (it would hold nothing up, and nothing would ever finish it)."""
        if self.storage.is_provisional(tid):
            with contextlib.suppress(KeyError):
                self.storage.take_provisional(tid)  # never stored: nothing to undo
            self.storage.forget(tid)
            return
        with contextlib.suppress(Exception):
            with h.lock:
                h.index.waiting.discard(tid)
            why = "the server could not store this candidate; it was not run"
            self.lifecycle.finish(h, tid, TrialState.FAIL, None, {"fail_reason": why})

    def _store_candidate(self, h: StudyHandle, asked: AskedCandidate) -> Prepared | None:
        """Queues the storage of a just-asked trial's candidate (one transaction).

        The candidate is the spec's, with the suggestion's architecture and kind, and its
        recipe and data keys merged over the spec's.

        A provisional trial (``DeferredTrialStorage``) is inserted whole: row, parameters
        and attributes; when it repeats a completed candidate it is inserted completed, with
        that result (``Prepared.repeat``). A real one (a queued retry) gets its attributes.
        The budget is counted now, so the next ask sees it; ``settle_prepared`` gives it back
        if the write fails. None when the candidate is in flight already (the provisional
        trial is dropped). Caller holds ``h.ask_lock``."""
        idx = h.index
        tid, arch, suggestion = asked.trial_id, asked.architecture, asked.suggestion
        with h.lock:
            retry = tid in idx.waiting
        attempt = 0
        candidate: Candidate | None = None
        if retry:  # a re-queued candidate keeps its spec
            frozen = self.storage.get_trial(tid)
            attempt = len(frozen.system_attrs.get("retry_history", []))
            if "candidate" in frozen.user_attrs:
                candidate = Candidate.from_dict(frozen.user_attrs["candidate"])
            # else: a retry of a trial that died before its candidate was stored: rebuild it
            # from the parameters, which the retry carries.
        earlier = None
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
                data={**h.spec.data, **suggestion.data},
                kind=suggestion.kind,
            )
            user: dict[str, Any] = {
                "candidate": candidate.to_dict(),
                "arch": h.space.describe(arch),
                **dashboard.candidate_rows(candidate.to_dict()),
            }
            fp = candidate.fingerprint()
            earlier = idx.done.get(fp) if attempt == 0 else None
            if earlier is not None:
                user["duplicate_of"], _, user["metrics"] = earlier
                user.update(dashboard.metric_rows(earlier[2]))
            elif self.storage.is_provisional(tid) and self._in_flight(h, fp):
                # Never stored: the loop is asked again. (Library loops never propose a row
                # that is in flight; Optuna's samplers may.)
                self.storage.discard_provisional(tid)
                return None
            if self.storage.is_provisional(tid):
                _, frozen = self.storage.take_provisional(tid)
                frozen.user_attrs.update(user)
                if earlier is not None:
                    frozen.state, frozen.values = TrialState.COMPLETE, list(earlier[1])
                    frozen.datetime_complete = datetime.datetime.now()
                written = self.writer.submit(_storage.insert_trial_op(h.study_id, frozen))
                written.add_done_callback(self._on_inserted(h.study_id, tid))
            elif earlier is not None:
                written = self.writer.submit(
                    _storage.finish_op(tid, TrialState.COMPLETE, earlier[1], user)
                )
            else:
                written = self.writer.submit(_storage.attrs_op(tid, user=user))
        if self.artifacts is not None and earlier is None and written is not None:
            written.add_done_callback(self._draw_when_stored(h, tid, asked.number, arch))
        live = LiveTrial(tid, asked.number, candidate, attempt, fp=fp)
        with h.lock:
            if retry:
                idx.waiting.discard(tid)
            elif earlier is None:
                idx.originals += 1
                idx.repeat_streak = 0
            else:
                idx.repeat_streak += 1
                if idx.repeat_streak >= self.repeat_limit(h) and not idx.exhausted:
                    idx.exhausted = self.exhausted_reason(h, idx.repeat_streak, idx.originals)
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

    def _in_flight(self, h: StudyHandle, fp: str) -> bool:
        """Whether a candidate with fingerprint ``fp`` is prepared, leased, being stored or
        finishing in ``h``."""
        idx = h.index
        with h.lock:
            return (
                fp in idx.storing
                or any(live.fp == fp for live in idx.live.values())
                or any(entry[2] == fp for entry in idx.finishing.values())
            )

    def repeat_limit(self, h: StudyHandle) -> int:
        return max(MIN_REPEAT_STREAK, h.spec.n_trials)

    @staticmethod
    def exhausted_reason(h: StudyHandle, streak: int, originals: int) -> str:
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

    def _pool_target(self, h: StudyHandle) -> int:
        """How many candidates to keep ready.

        For a loop whose proposals ignore results (random, quasi-random, grid), one per
        worker that asked for this study's trainer within a lease duration (at least 1, at
        most ``MAX_PREPARED``): every active worker's next acquire is then an in-memory pop,
        and preparing early loses nothing. For an adaptive loop (TPE, GP, NSGA-II, BOSHNAS),
        one: each candidate is asked as late as possible, with every result stored so far.
        """
        if not isinstance(h.loop.sampler, NON_ADAPTIVE_SAMPLERS):
            return 1
        horizon = time.monotonic() - self.lease_duration_s
        active = sum(
            1
            for seen, trainers in list(self.active.values())
            if seen >= horizon and h.spec.trainer in trainers
        )
        return max(1, min(MAX_PREPARED, active))

    def top_up(self, h: StudyHandle, limit: int = TOP_UP_PER_FINISH) -> None:
        """Prepares up to ``limit`` candidates while ``h``'s pool is below its target.

        Called by the RPC that finished a trial, after its own write committed and without
        ``h.lock``, so the database changes an RPC causes are all made before it answers (a
        client that sees its answer sees the storage settled) and the next acquire of any
        worker is an in-memory pop. ``limit`` spreads the filling of a large pool over several
        finishes. A failure here is logged, not raised: the caller's own write is stored, and
        acquire prepares inline when the pool is empty.
        """
        idx = h.index
        try:
            for _ in range(limit):
                with h.ask_lock:
                    with h.lock:
                        if (
                            h.state != RUNNING
                            or idx.waiting
                            or len(idx.pool) + idx.preparing >= self._pool_target(h)
                        ):
                            return
                    prepared = self.prepare(h)
                if prepared is None:
                    with h.lock:
                        self.lifecycle.maybe_complete(h)
                    return
                tid = self.settle_prepared(h, prepared)
                if tid is None:
                    continue
                with h.lock:
                    if h.state == RUNNING:
                        idx.pool.append(tid)
                    else:  # stopped while it was prepared: end it, as stop() does
                        idx.live.pop(tid, None)
                        self.lifecycle.fail_unrun(h, tid, STOPPED_REASON)
                self.notify()
        except Exception:
            log.exception("preparing the next candidate of %s failed", h.spec.name)
