"""The candidate pool: candidates asked from the loop and stored ahead of the workers.

When a trial finishes, the RPC that finished it asks the loop for up to ``TOP_UP_PER_FINISH``
more candidates while the study's pool of ready candidates is smaller than its target, and
stores each at once (a RUNNING trial with its ``candidate`` but no lease yet:
``_candidate_store``), so an acquire is an in-memory pop plus one lease write. A candidate
identical to one in flight is never prepared twice; repeats of completed (or pruned) ones are
recorded with the earlier result but do not count against ``n_trials``; a loop that proposes
only repeats for long exhausts the study.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import optuna
from optuna.trial import TrialState

from archsearch.search import NoSuggestion
from archsearch.server import _trial_writes
from archsearch.server._artifacts import GraphArtifacts
from archsearch.server._candidate_store import MIN_REPEAT_STREAK, CandidateStore
from archsearch.server._deferred_storage import DeferredTrialStorage
from archsearch.server._index import RUNNING, STOPPED_REASON, Prepared, StudyHandle
from archsearch.server._lifecycle import StudyLifecycle
from archsearch.server._loop_guard import (
    PLUGIN_ERRORS,
    LoopFailed,
    ready_failed,
    store_failed,
    waits_for_nothing,
)
from archsearch.server._rpc import storage_down
from archsearch.server._suggest import ask_candidate
from archsearch.server._writer import StorageWriter, WriterClosed

log = logging.getLogger("archsearch.server")

MAX_DUPLICATE_ASKS = 20
MAX_PREPARED = 64
NON_ADAPTIVE_SAMPLERS = (
    optuna.samplers.RandomSampler,
    optuna.samplers.QMCSampler,
    optuna.samplers.GridSampler,
    optuna.samplers.BruteForceSampler,
)
TOP_UP_PER_FINISH = 2


class CandidatePool:
    """Prepares, stores (``CandidateStore``) and settles candidates; keeps each study's pool at
    its target.

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
        active: dict[str, tuple[float, tuple[str, ...], str]],
        lease_duration_s: int,
        notify: Callable[[], None],
    ) -> None:
        self.storage = storage
        self.lifecycle = lifecycle
        self.candidates = CandidateStore(storage, writer, artifacts)
        self.outage = writer.outage
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
                try:
                    if not waiting and not h.loop.ready(h.space):
                        break  # still building (``warm_up``): no work yet
                except PLUGIN_ERRORS as e:
                    self._stop_failed(h, ready_failed(h, e), e)
                    break
                # in flight before the ask: a trial that finishes while the loop decides is
                # not "nothing to wait for" (the loop is asked again, and sees it finished)
                had_in_flight = not self._waits_for_nothing(h)
                before = self.storage.provisional_of(h.study_id)
                try:
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
                    except BaseException:
                        # a trial the loop asked itself (``study.ask()``) before it failed or
                        # waited: never stored, it would read RUNNING for ever after a resume
                        for tid in self.storage.provisional_of(h.study_id) - before:
                            self.storage.discard_provisional(tid)
                        raise
                except NoSuggestion as e:  # a staged loop waits, or has finished
                    if e.finished:
                        with h.lock:
                            if not idx.exhausted:
                                idx.exhausted = e.reason
                                log.info("study %s: %s", h.spec.name, e.reason)
                    elif self._waits_for_nothing(h):  # it would wait for ever, said nowhere
                        if had_in_flight:
                            continue
                        self._stop_failed(h, waits_for_nothing(h, e.reason), None)
                    break
                except LoopFailed as e:  # the study stops; its workers serve the others
                    self._stop_failed(h, e, e)
                    break
                if asked.requeued and self.storage.is_provisional(asked.trial_id):
                    # The queued retry was gone when Optuna looked (a stop failed it after
                    # ``waiting`` was read): ``Study.ask`` made a new trial from the study's
                    # sampler instead, a candidate the loop never proposed. Dropped unstored.
                    self.storage.discard_provisional(asked.trial_id)
                    in_flight += 1  # bounds the asks of this call, as a candidate in flight
                    continue
                try:
                    prepared = self.candidates.store(h, asked)
                except WriterClosed:
                    self._abandon(h, asked.trial_id)
                    raise
                except PLUGIN_ERRORS as e:  # the space's (a plugin's) candidate_parts, describe
                    self._abandon(h, asked.trial_id)
                    if asked.requeued:
                        raise
                    self._stop_failed(h, store_failed(h, e), e)
                    break
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

    def _stop_failed(self, h: StudyHandle, e: LoopFailed, cause: BaseException | None) -> None:
        """Stops ``h`` with the loop's failure (logged with the traceback of ``cause``)."""
        log.error("study %s stopped: %s", h.spec.name, e.reason, exc_info=cause)
        self.lifecycle.stop_failed(h, e.reason)

    @staticmethod
    def _waits_for_nothing(h: StudyHandle) -> bool:
        """Nothing of ``h`` is in flight or queued (this ask aside): a loop that says it waits
        would wait for ever."""
        idx = h.index
        with h.lock:
            return not (idx.live or idx.finishing or idx.waiting or idx.pool) and idx.preparing <= 1

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
            if isinstance(stored, _trial_writes.StoredTrial):  # an inserted provisional trial
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

    def repeat_limit(self, h: StudyHandle) -> int:
        """The repeats in a row that exhaust ``h`` (the store's; ``rebuild_index`` applies it
        at start-up)."""
        return self.candidates.repeat_limit(h)

    def repeats_limit(self, h: StudyHandle) -> int:
        """The repeats in all that exhaust ``h`` (the store's)."""
        return self.candidates.repeats_limit(h)

    @staticmethod
    def exhausted_reason(h: StudyHandle, streak: int, originals: int, repeats: int = 0) -> str:
        return CandidateStore.exhausted_reason(h, streak, originals, repeats)

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
            for seen, trainers, study in list(self.active.values())
            if seen >= horizon and h.spec.trainer in trainers and study in ("", h.spec.name)
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
                # another call is asking the loop (and fills the pool): this RPC's worker does
                # not wait for a slow loop to answer it
                if not h.ask_lock.acquire(blocking=False):
                    return
                try:
                    with h.lock:
                        if (
                            h.state != RUNNING
                            or idx.waiting
                            or len(idx.pool) + idx.preparing >= self._pool_target(h)
                        ):
                            return
                    prepared = self.prepare(h)
                finally:
                    h.ask_lock.release()
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
        except WriterClosed:  # the server is shutting down: not an error
            log.info("preparing the next candidate of %s: stopped by the shutdown", h.spec.name)
        except Exception as e:
            down = storage_down(e)
            if down is None:
                log.exception("preparing the next candidate of %s failed", h.spec.name)
            else:  # said once per outage, with the writer's and the RPCs' failures
                self.outage.down(f"preparing the next candidate of {h.spec.name}", down, e)
