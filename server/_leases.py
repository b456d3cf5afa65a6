"""The lease table: grants, heartbeats, expiry, and the one place that resolves a lease.

A lease id names its study, its trial and a random token (``<study id>.<trial id>.<hex>``);
the current lease of a trial is its ``archsearch:lease`` system attribute and, while the trial
is live in this server, ``LiveTrial.lease_id``. A lease is alive while its trial's heartbeat
(Optuna's heartbeat table) is younger than the lease duration; the reaper (``_retries``) asks
:meth:`LeaseTable.expiring` before it fails any, so a restarted server gives every lease one
lease duration to be heartbeated, completed or failed again (DESIGN.md principle 3).

Every call about a lease (heartbeat, report, complete, fail and release) starts with
:meth:`LeaseTable.resolve`: it finds the study, takes the study lock (waiting outside it for a
queued finishing write of the same lease) and either hands over the live trial or answers a
repeated call (reports are idempotent) or refuses with a precise status.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Generic, NoReturn, TypeVar

from optuna.trial import FrozenTrial, TrialState

from archsearch.server import _trial_writes
from archsearch.server._deferred_storage import DeferredTrialStorage
from archsearch.server._errors import FailedPrecondition, NotFound
from archsearch.server._index import LEASE_ATTR, LiveTrial, StudyHandle
from archsearch.server._writer import StorageWriter

R = TypeVar("R")
#: holders remembered before the first pruning of leases no longer live
_PRUNE_AT = 1024


def _ascii_digits(text: str) -> bool:
    """True for 0-9 only: ``str.isdigit`` also accepts '²' and other digits ``int`` refuses."""
    return text.isascii() and text.isdigit()


#: the largest row id SQLite and PostgreSQL store (a signed 64-bit integer)
_MAX_ROW_ID = 2**63 - 1


def parse_lease_id(lease_id: str) -> tuple[int, int]:
    """(study id, trial id) of a lease id.

    Raises:
        NotFound: anything this server did not issue (malformed, or too long).
    """
    parts = lease_id.split(".")
    if (
        len(parts) != 3
        or not _ascii_digits(parts[0])
        or not _ascii_digits(parts[1])
        or not parts[2]
        or len(lease_id) > 80
    ):
        raise NotFound(f"unknown lease {lease_id[:80]!r}: not a lease this server issued")
    study_id, trial_id = int(parts[0]), int(parts[1])
    if study_id > _MAX_ROW_ID or trial_id > _MAX_ROW_ID:  # no database row has such an id
        raise NotFound(f"unknown lease {lease_id[:80]!r}: not a lease this server issued")
    return study_id, trial_id


def retry_of(trials: list[FrozenTrial], number: int) -> int | None:
    """Number of the trial that retries trial ``number`` (its ``retry_history`` ends with it),
    if any."""
    for t in trials:
        history = t.system_attrs.get("retry_history", [])
        if history and history[-1] == number:
            return t.number
    return None


@dataclasses.dataclass(frozen=True)
class Resolved(Generic[R]):
    """A resolved lease: its study and trial id, and either the live trial or (for a repeated
    call about a finished trial) the answer that call gets again."""

    handle: StudyHandle
    trial_id: int
    live: LiveTrial | None
    answer: R | None = None


#: The code label of the worker a trial was leased to (``server/_other_code.py`` reads it
#: when the worker reports after a server restart, before it asked this server for work).
WORKER_CODE_ATTR = "worker_code"


class LeaseTable:
    """Grants, heartbeats and resolves leases; knows when expiry may start.

    Args:
        storage: the server's Optuna storage (reads a finished trial's stored state).
        writer: the group-commit writer; lease writes go in its urgent lane.
        lease_duration_s: a lease not heartbeated for this long expires.
        study_by_id: the study handle of a storage study id (None when not served).
        trials: every stored trial of a study (for the "re-queued as trial N" message).
    """

    def __init__(
        self,
        storage: DeferredTrialStorage,
        writer: StorageWriter,
        lease_duration_s: int,
        study_by_id: Callable[[int], StudyHandle | None],
        trials: Callable[[StudyHandle], list[FrozenTrial]],
    ) -> None:
        self.storage = storage
        self.writer = writer
        self.lease_duration_s = lease_duration_s
        self._study_by_id = study_by_id
        self._trials = trials
        #: No lease expires before this (monotonic): a lease whose last heartbeat predates
        #: this server's start (a worker that finished or heartbeated while the server was
        #: down) gets one lease duration from the start to reach it again.
        self._expiry_from = time.monotonic() + lease_duration_s
        #: lease id -> the worker it was granted to (a trial's ``worker`` attribute, kept here
        #: so that finding a worker's leases reads nothing); pruned of finished leases as it
        #: grows, and filled from the storage for leases an earlier server granted
        self._holders: dict[str, str] = {}
        self._holders_lock = threading.Lock()
        self._prune_at = _PRUNE_AT

    # ------------------------------------------------------------------ grant and expiry

    def grace_from_now(self) -> None:
        """No lease expires for one lease duration from now: called when the server starts
        answering (its start-up, however long it took, must not eat the workers' time to
        reach it again) and when it ran again after a pause (stopped, swapped out), during
        which the workers' heartbeats waited unanswered."""
        self._expiry_from = max(self._expiry_from, time.monotonic() + self.lease_duration_s)

    def expiring(self) -> bool:
        """Whether leases may expire yet (False during the restart grace)."""
        return time.monotonic() >= self._expiry_from

    def deadline(self) -> float:
        """The deadline (unix seconds) of a lease granted or extended now."""
        return time.time() + self.lease_duration_s

    def expiry_reason(self) -> str:
        """The ``fail_reason`` of a trial whose lease expired."""
        return f"lease expired: no heartbeat for {self.lease_duration_s} s"

    def grant(
        self, h: StudyHandle, tid: int, worker_id: str, code: str = ""
    ) -> tuple[LiveTrial, Future[None]]:
        """Gives prepared trial ``tid`` a fresh lease and queues its write (lease attribute,
        worker, its code label ``code`` when known, attempt and heartbeat: one urgent
        operation).

        Caller holds ``h.lock`` and waits for the returned write after releasing it.

        Returns:
            The live trial, now carrying its lease id, and the queued write.
        """
        live = h.index.live[tid]
        live.lease_id = f"{h.study_id}.{tid}.{secrets.token_hex(12)}"
        self._remember(live.lease_id, worker_id)
        written = self.writer.submit(
            _trial_writes.lease_op(
                tid,
                user={
                    "worker": worker_id,
                    "attempt": live.attempt,
                    WORKER_CODE_ATTR: code,  # "" too: a re-grant must not keep the last one's
                },
                system={LEASE_ATTR: live.lease_id},
            ),
            urgent=True,
        )
        return live, written

    def revoke(self, live: LiveTrial) -> Future[None]:
        """Takes a stored lease back: clears the lease attribute and drops the heartbeat row,
        so the trial is a prepared one again. Caller holds the study lock.

        Returns:
            The queued write, urgent so that a later grant's write comes after it.
        """
        undone = self.writer.submit(
            _trial_writes.unlease_op(live.trial_id, {LEASE_ATTR: ""}), urgent=True
        )
        self.forget(live.lease_id)
        live.lease_id = ""
        return undone

    # ------------------------------------------------------------------ holders

    def holder(self, trial_id: int, lease_id: str) -> str:
        """The worker id lease ``lease_id`` of trial ``trial_id`` was granted to ("" when
        unknown). A lease of an earlier server is read from the stored trial (once)."""
        with self._holders_lock:
            worker = self._holders.get(lease_id)
        if worker is not None:
            return worker
        try:
            frozen = self.storage.get_trial(trial_id)  # RUNNING: read from the database
        except KeyError:
            return ""
        if frozen.system_attrs.get(LEASE_ATTR) != lease_id:
            return ""
        worker = str(frozen.user_attrs.get("worker", ""))
        self._remember(lease_id, worker)
        return worker

    def forget(self, lease_id: str) -> None:
        """Drops what is remembered about a lease that ended."""
        with self._holders_lock:
            self._holders.pop(lease_id, None)

    def _remember(self, lease_id: str, worker_id: str) -> None:
        """Remembers a lease's worker; prunes the leases no longer live once there are twice
        as many remembered as after the last pruning (a lease ends by many paths)."""
        with self._holders_lock:
            self._holders[lease_id] = worker_id
            if len(self._holders) < self._prune_at:
                return
            ended = [lid for lid in self._holders if not self._is_live(lid)]
            for lid in ended:
                del self._holders[lid]
            self._prune_at = max(_PRUNE_AT, 2 * len(self._holders))

    def _is_live(self, lease_id: str) -> bool:
        """Whether ``lease_id`` is a live trial's current lease (read without study locks:
        a lease granted meanwhile is remembered again by its grant)."""
        study_id, tid = parse_lease_id(lease_id)
        h = self._study_by_id(study_id)
        live = h.index.live.get(tid) if h is not None else None
        return live is not None and live.lease_id == lease_id

    def heartbeat(self, lease_id: str) -> float:
        """Extends a live lease.

        The write is queued under the study lock, right after the lease was found live, and
        waited for without it: the reaper fails a trial only under that lock, after the
        writes queued before it (``Retries.reap_once``), so a heartbeat is either committed
        before the reaper's stale query reads it or refused because the reaper failed the
        trial first. Checked without the lock, a heartbeat could be answered with a fresh
        deadline for a trial the reaper had just failed (and re-queued).

        Returns:
            The lease's new deadline (unix seconds).

        Raises:
            NotFound: a lease this server never issued.
            FailedPrecondition: the lease's trial is finished, expired or given up.
        """
        lease: Resolved[None]
        with self.resolve(lease_id) as lease:  # refuses a lease that is not live
            written = self.writer.submit(_trial_writes.heartbeat_op(lease.trial_id))
        written.result()
        return self.deadline()

    # ------------------------------------------------------------------ resolution

    @contextlib.contextmanager
    def resolve(
        self,
        lease_id: str,
        again: Callable[[StudyHandle, FrozenTrial], R | None] | None = None,
    ) -> Iterator[Resolved[R]]:
        """Resolves a lease for report, complete, fail or release, holding the study lock.

        The logic is:
          1. parse the lease id and find its study (NotFound otherwise);
          2. take the study lock; while a finishing write of this lease is queued and not yet
             committed, release it, wait for the write and take it again, so a repeated or
             concurrent call sees the trial's stored state;
          3. when the lease is the live trial's current one, yield it (the lock held);
          4. otherwise read the stored trial (NotFound when the lease was never its lease)
             and yield ``again(handle, trial)``, the answer a repeated call gets again;
          5. when ``again`` is missing or answers None, refuse: FailedPrecondition.

        Raises:
            NotFound: a lease this server never issued.
            FailedPrecondition: the trial is finished and this call is not a repeat.
        """
        h, tid = self._handle(lease_id)
        while True:
            with h.lock:
                # Looked for under the lock that resolves: read before it, a finishing write
                # the same call's twin queued in between was missed, and the twin refused
                # ("already RUNNING") instead of answered again.
                pending = self._pending(h, tid, lease_id)
                if pending is None:
                    live = self._live(h, tid, lease_id)
                    answer: R | None = None
                    if live is None:
                        frozen = self._not_live(tid, lease_id)
                        answer = again(h, frozen) if again is not None else None
                        if answer is None:
                            self.refuse(h, frozen)
                    yield Resolved(h, tid, live, answer)
                    return
            with contextlib.suppress(Exception):  # its own caller reports the failure
                pending.result()

    def refuse(self, h: StudyHandle, frozen: FrozenTrial) -> NoReturn:
        """Refuses a call about a finished trial, saying why and where its candidate went.

        Raises:
            FailedPrecondition: always.
        """
        if frozen.state == TrialState.FAIL:
            retry = self.retry_of(h, frozen.number)
            where = f"; its candidate was re-queued as trial {retry}" if retry is not None else ""
            raise FailedPrecondition(
                f"lease on trial {frozen.number} of {h.spec.name} expired or was given up "
                f"(trial is FAIL{where}); stop working on it"
            )
        raise FailedPrecondition(
            f"trial {frozen.number} of {h.spec.name} is already {frozen.state.name}; "
            "stop working on it"
        )

    def retry_of(self, h: StudyHandle, number: int) -> int | None:
        """Number of the trial that retries trial ``number`` of ``h``, if any."""
        return retry_of(self._trials(h), number)

    def _handle(self, lease_id: str) -> tuple[StudyHandle, int]:
        study_id, trial_id = parse_lease_id(lease_id)
        h = self._study_by_id(study_id)
        if h is None:
            raise NotFound(f"unknown lease {lease_id!r}: its study does not exist")
        return h, trial_id

    @staticmethod
    def _live(h: StudyHandle, trial_id: int, lease_id: str) -> LiveTrial | None:
        live = h.index.live.get(trial_id)
        return live if live is not None and live.lease_id == lease_id else None

    def _not_live(self, trial_id: int, lease_id: str) -> FrozenTrial:
        """The stored trial of a lease that is not live; NotFound when it was never issued."""
        try:
            frozen = self.storage.get_trial(trial_id)
        except KeyError:
            raise NotFound(f"unknown lease {lease_id!r}: its trial does not exist") from None
        # The lease id names its study and trial, so a match also proves the trial is h's.
        if frozen.system_attrs.get(LEASE_ATTR) != lease_id:
            raise NotFound(f"unknown lease {lease_id!r}: not the lease of trial {frozen.number}")
        return frozen

    @staticmethod
    def _pending(h: StudyHandle, tid: int, lease_id: str) -> Future[None] | None:
        """The finishing write queued for this lease while it is not committed (or failed)
        yet; the caller holds ``h.lock`` and waits for it after releasing the lock."""
        entry = h.index.finishing.get(tid)
        if entry is None or entry[0] != lease_id or entry[1].done():
            return None
        return entry[1]
