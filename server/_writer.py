"""Group commit: one thread applies the server's storage writes, many per transaction.

Every hot-path write of the server (a lease, a finished trial, a prepared candidate, a
heartbeat) is an *operation*: a function of one SQLAlchemy connection that runs inside a
transaction it does not commit. ``StorageWriter`` owns a single connection and a queue; its
thread takes every operation waiting in the queue, runs them in one transaction and commits
once, then resolves each operation's future. Thirty-two workers completing at the same moment
therefore cost one commit (and one SQLite write lock) instead of thirty-two, and no RPC thread
ever holds a database connection or a write lock while it waits.

Durability is unchanged: a caller answers its RPC only after its operation's future resolved,
that is after the transaction holding it committed. If a batch fails, it is rolled back and
every operation in it is retried alone in its own transaction, so one bad operation (a unique
constraint, a trial that is no longer RUNNING) fails only its own caller.

Two lanes: *urgent* operations (leases, which a worker's acquire waits on) are taken before
any other queued operation and committed in a transaction of their own, so an acquire waits at
most for the batch being written plus its own small one, not behind a crowd of completions;
other batches are capped at ``max_batch`` operations so the batch in progress stays short.

Operations must be pure database work: they may raise, and they may be run twice (the batch
attempt is rolled back before the retry), so in-memory state is changed by the caller after the
future resolves, never inside the operation.

A storage that cannot be used (a database restarting) fails batch after batch: ``outage``
says it once and says when a commit succeeds again (``_outage``), not a traceback per batch.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import sqlalchemy

from archsearch.server._outage import OutageLog
from archsearch.server._rpc import storage_down

log = logging.getLogger("archsearch.server")

T = TypeVar("T")
Operation = Callable[[sqlalchemy.Connection], Any]


class WriterClosed(RuntimeError):
    """The writer was closed; the operation was not applied."""


class StorageWriter:
    """Applies queued write operations in batches, one transaction and one commit per batch.

    Args:
        engine: engine of the Optuna storage; the writer checks out one connection of its own.
        max_batch: most operations per transaction: bounds how long the batch in progress
            delays an urgent operation and how long one commit holds the SQLite write lock.
        name: thread name, for stack dumps and profiles.
    """

    def __init__(
        self, engine: sqlalchemy.Engine, max_batch: int = 16, name: str = "storage-writer"
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}; use 1 for no batching")
        self.engine = engine
        self.max_batch = max_batch
        self._queue: collections.deque[tuple[Operation, Future[Any]]] = collections.deque()
        self._urgent: collections.deque[tuple[Operation, Future[Any]]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        #: Number of transactions committed and operations applied (for tests and logs).
        self.commits = 0
        self.applied = 0
        #: this storage's outages, said once (also by the RPCs and background passes)
        self.outage = OutageLog()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ callers' side

    def submit(self, op: Callable[[sqlalchemy.Connection], T], urgent: bool = False) -> Future[T]:
        """Queues ``op``; its future resolves with its result once the batch committed.

        Args:
            urgent: write it before every non-urgent operation queued (for small writes that
                a caller is waiting on with nothing else to do, such as a lease).

        Raises:
            WriterClosed: the writer is closed.
        """
        fut: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise WriterClosed("the storage writer is closed (the server is shutting down)")
            (self._urgent if urgent else self._queue).append((op, fut))
            self._cond.notify()
        return fut

    def run(self, op: Callable[[sqlalchemy.Connection], T]) -> T:
        """Queues ``op`` and waits until it is committed; returns its result or raises its
        exception."""
        return self.submit(op).result()

    def barrier(self) -> None:
        """Waits until every operation queued before this call is committed (or failed)."""
        self.run(_noop)

    def close(self, timeout: float = 30.0) -> None:
        """Applies what is queued, then stops the thread; later submissions raise."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the writer thread

    def _take(self) -> tuple[list[tuple[Operation, Future[Any]]], bool] | None:
        """The next batch and whether it is urgent; None once closed and drained."""
        with self._cond:
            while not self._queue and not self._urgent and not self._closed:
                self._cond.wait()
            urgent = bool(self._urgent)
            lane = self._urgent if urgent else self._queue
            if not lane:
                return None
            n = min(len(lane), self.max_batch)
            return [lane.popleft() for _ in range(n)], urgent

    def _urgent_waiting(self) -> bool:
        return bool(self._urgent)  # a racy read is fine: it only decides when to commit

    def _run(self) -> None:
        conn: sqlalchemy.Connection | None = None
        while True:
            taken = self._take()
            if taken is None:
                break
            batch, urgent = taken
            # (a future already RUNNING was put back by an early commit below)
            batch = [
                (op, fut)
                for op, fut in batch
                if fut.running() or fut.set_running_or_notify_cancel()
            ]
            if not batch:
                continue
            try:
                if conn is None or conn.closed or conn.invalidated:
                    conn = self.engine.connect()
                rest = self._apply(conn, batch, yield_to_urgent=not urgent)
                if rest:
                    with self._cond:  # back to the front, in order, after the urgent ones
                        self._queue.extendleft(reversed(rest))
            except Exception as e:  # the connection itself broke: fail this batch, reconnect
                down = storage_down(e)
                if down is None:
                    log.exception("storage writer: connection failed; reconnecting")
                else:  # the database is away: said once, not a traceback per batch
                    self.outage.down("storage writer", down, e)
                for _op, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                if conn is not None:
                    with contextlib.suppress(Exception):  # the next batch reconnects anyway
                        conn.invalidate()
                        conn.close()
                conn = None
        if conn is not None:
            conn.close()
        with self._cond:  # anything submitted after close() was refused, but be sure
            leftover = [*self._urgent, *self._queue]
            self._urgent.clear()
            self._queue.clear()
        for _op, fut in leftover:
            fut.set_exception(WriterClosed("the storage writer closed before this write"))

    def _apply(
        self,
        conn: sqlalchemy.Connection,
        batch: list[tuple[Operation, Future[Any]]],
        yield_to_urgent: bool = False,
    ) -> list[tuple[Operation, Future[Any]]]:
        """Applies ``batch`` in one transaction; returns the operations it left for later.

        With ``yield_to_urgent``, an urgent operation arriving meanwhile makes the batch commit
        early (what is done so far) and hand back the rest, so it waits for one operation, not
        for a whole batch.
        """
        results: list[Any] = []
        rest: list[tuple[Operation, Future[Any]]] = []
        try:
            with conn.begin():
                for i, (op, _fut) in enumerate(batch):
                    results.append(op(conn))
                    if yield_to_urgent and i + 1 < len(batch) and self._urgent_waiting():
                        rest = batch[i + 1 :]
                        break
        except Exception as first_error:
            if len(batch) == 1:
                batch[0][1].set_exception(first_error)
                return []
            # One operation spoilt the batch: retry each alone so only it fails.
            for op, fut in batch:
                try:
                    with conn.begin():
                        result = op(conn)
                except Exception as e:
                    fut.set_exception(e)
                else:
                    self.commits += 1
                    self.applied += 1
                    self.outage.up()
                    fut.set_result(result)
            return []
        self.commits += 1
        self.applied += len(results)
        self.outage.up()
        for (_op, fut), result in zip(batch, results, strict=False):
            fut.set_result(result)
        return rest


def _noop(_conn: sqlalchemy.Connection) -> None:
    return None
