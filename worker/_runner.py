"""The worker loop: register, acquire, heartbeat, train, report; reconnect; hand back on SIGTERM.

One trial at a time. The main thread trains; a heartbeat thread extends the lease. The worker
stops a trial at once when the server prunes it, when its lease is lost (expired or unknown),
or when the process receives SIGTERM/SIGINT — in that last case it hands the lease back so the
candidate is re-queued immediately, then exits.

While the server is unreachable the worker retries with exponential backoff (capped; said once,
with the address and the fix, then at debug level: ``_calls``, ``_reach``), keeping
its current trial and heartbeating it until the server acknowledged its result: a restarted
server gives every lease a grace of one lease duration from its own start, so a result
finished while it was down is accepted. After SIGTERM the worker still tries to hand back (or
report) its trial for at most ``stop_grace_s`` seconds (default 10, well under Kubernetes' 30 s
termination grace), sleeping between attempts, then exits.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid

import grpc

from archsearch.server._source import code_label, mismatch
from archsearch.server.client import ClientError, WorkerClient
from archsearch.spaces import Candidate, SpecError
from archsearch.v1 import archsearch_pb2 as pb
from archsearch.worker._backoff import Backoff
from archsearch.worker._calls import ServerCalls
from archsearch.worker._capabilities import (
    declared_trainer_info,
    device_memory_bytes,
)
from archsearch.worker._checkpoint_dir import checkpoint_root
from archsearch.worker._data_skips import DataSkips
from archsearch.worker._exits import SETUP_REFUSALS, BadSetup, NeverReached, end_refused
from archsearch.worker._glue_dir import GlueDataInvalid, GlueDataMissing
from archsearch.worker._progress_sweep import ProgressSweeper
from archsearch.worker._reach import unreachable
from archsearch.worker._result_checks import checked_metrics
from archsearch.worker._trainer import CandidateError, Trainer, TrialStopped
from archsearch.worker._trial_context import trial_context
from archsearch.worker._trial_watch import TrialState, heartbeats

log = logging.getLogger("archsearch.worker")
#: How a trial ended for this worker: finished here (completed, pruned or failed), handed back
#: to the server (re-queued at once), or dropped (lease lost, or the server unreachable).
DONE, HANDED_BACK, DROPPED = "done", "handed back", "dropped"


#: What a trial the server cancelled reports (the server's own reason says the same).
CANCELLED = "cancelled: the study was stopped with --cancel-running"


class Worker(ServerCalls):
    """Runs trials from an archsearch server until stopped.

    Args:
        client: a connected WorkerClient.
        trainers: trainers by name; their names are advertised as capabilities.
        device: device string for trainers ("cpu", "cuda", "cuda:1").
        study_name: only take trials of this study.
        poll_s: long-poll timeout per AcquireTrial call.
        max_trials: exit after this many trials (None: run until stopped).
        idle_exit_s: exit after this long without work (None: never).
        stop_grace_s: after SIGTERM/SIGINT, how long to keep trying to hand back or report
            the current trial while the server does not answer.
        sweeper: removes old saved progress between trials (default: 7 days old, hourly).
    """

    def __init__(
        self,
        client: WorkerClient,
        trainers: dict[str, Trainer],
        device: str = "cpu",
        study_name: str = "",
        worker_id: str = "",
        poll_s: float = 20.0,
        max_trials: int | None = None,
        idle_exit_s: float | None = None,
        stop_grace_s: float = 10.0,
        sweeper: ProgressSweeper | None = None,
    ) -> None:
        super().__init__(client, stop_grace_s)
        self.trainers = trainers
        self.device = device
        self.study_name = study_name
        #: why the ``--study`` this worker serves has no work for it, as last said
        self._waiting = ""
        #: the server answered an acquire for it: a later NOT_FOUND is a delete (exit 0)
        self._study_seen = False
        self.poll_s = poll_s
        self.max_trials = max_trials
        self.idle_exit_s = idle_exit_s
        host = socket.gethostname()
        self.worker_id = worker_id or f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        #: studies whose data this worker lacks: their trials are handed back and not asked for
        self.skips = DataSkips(self.worker_id)
        #: what each trainer trains and reports, sent on RegisterWorker
        self.trainer_info = declared_trainer_info(trainers)
        self.capabilities = pb.WorkerCapabilities(
            trainers=sorted(trainers),
            device=device,
            hostname=host,
            memory_bytes=device_memory_bytes(device),
            source=code_label(),
        )
        self.heartbeat_interval_s = 10.0
        #: trials finished here (completed, pruned or failed); handed back; dropped
        self.trials_done = self.handed_back = self.dropped = 0
        self.sweeper = sweeper or ProgressSweeper(checkpoint_root)

    # -------------------------------------------------------------- main loop

    def register(self) -> None:
        """Registers once, at start-up: a second RegisterWorker with this id tells the server
        that this worker restarted, and it re-queues the trials leased to it at once. Retries
        until the server answers, or for ``idle_exit_s`` at most."""
        resp = self._retry(
            "register",
            lambda: self.client.register(self.worker_id, self.capabilities, self.trainer_info),
            give_up_after_s=self.idle_exit_s,
            while_stopping=False,
        )
        self.worker_id = resp.worker_id
        self.heartbeat_interval_s = resp.heartbeat_interval_s
        self.lease_duration_s = resp.lease_duration_s
        log.info(
            "worker %s registered (server %s; heartbeat %.0fs, lease %.0fs; trainers %s)",
            self.worker_id,
            resp.server_source or resp.server_version,
            self.heartbeat_interval_s,
            self.lease_duration_s,
            ",".join(self.trainers),
        )
        other = mismatch(code_label(), resp.server_source, "the server")
        if other:
            log.warning("%s", other)

    def run(self) -> int:
        """Loops until stopped; returns the number of trials finished here.

        Raises:
            SystemExit: with one line, when the server cannot be reached within ``idle_exit_s``
                or refuses this worker (its study unknown, ended or trained by another trainer).
        """
        try:
            self.register()
        except ClientError as e:
            if self.stopping.is_set():
                return 0
            if e.transient:  # --idle-exit: never reached its server
                why = self.outage.line or unreachable(e, self.outage.target, self.outage.tls)
                raise NeverReached(
                    f"worker: {why}; gave up after {self.idle_exit_s:g}s (--idle-exit)"
                ) from None
            kind = BadSetup if e.code in SETUP_REFUSALS else SystemExit
            raise kind(f"worker: cannot register with {self.client.target}: {e.details}") from None
        try:
            self._serve()
        finally:
            self.leave(self.worker_id)
        return self.trials_done

    def _serve(self) -> None:
        """Acquires and runs trials until stopped, idle for ``idle_exit_s``, done with
        ``max_trials``, or refused."""
        idle_since = time.monotonic()
        backoff = Backoff()
        while not self.stopping.is_set():
            if self.max_trials is not None and self.trials_done >= self.max_trials:
                break
            self.sweeper.maybe_sweep()
            try:
                resp = self._acquire(self._poll_for(idle_since))
            except ClientError as e:
                if not e.transient:
                    # SystemExit, unless the study this worker served ended
                    end_refused(e, self.study_name, self._study_seen)
                    break
                if self._idle_too_long(idle_since):  # the server went away for good?
                    log.warning(
                        "%s; no work for %.0fs (--idle-exit); exiting",
                        self.outage.line or unreachable(e, self.outage.target, self.outage.tls),
                        self.idle_exit_s,
                    )
                    break
                delay = backoff.next()
                if self.idle_exit_s is not None:  # wake in time to give up
                    left = self.idle_exit_s - (time.monotonic() - idle_since)
                    delay = max(0.05, min(delay, left + 0.05))
                self.outage.failed("acquire", e, delay)
                self.stopping.wait(delay)
                continue
            self.outage.answered()
            backoff.reset()
            self._say_waiting(resp)
            if resp is None or not resp.has_trial:
                if self._idle_too_long(idle_since):
                    waited = time.monotonic() - idle_since
                    log.info(
                        "no work for %.0fs (--idle-exit %g); exiting", waited, self.idle_exit_s
                    )
                    break
                continue
            outcome = self.run_trial(resp)
            self._count(outcome)
            if self.study_name and (why := self.skips.why(self.study_name)):
                raise BadSetup(
                    f"worker: study {self.study_name}: this worker lacks its data: {why}"
                )
            if outcome != HANDED_BACK:  # a trial handed back for want of data is no work
                idle_since = time.monotonic()
        others = [f"{n} {what}" for n, what in self._others() if n]
        log.info(
            "worker %s exiting after %d trial(s)%s",
            self.worker_id,
            self.trials_done,
            f" ({', '.join(others)})" if others else "",
        )

    def _say_waiting(self, resp: pb.AcquireTrialResponse | None) -> None:
        """Says once why the ``--study`` this worker serves has no work for it (stopped: it
        waits for ``archsearch resume``), and when that ends."""
        if resp is None:
            return
        self._study_seen = True
        why = "" if resp.has_trial else resp.waiting_because
        if why and why != self._waiting:
            log.info("%s", why)
        elif self._waiting and not why:
            log.info("study %s goes on", self.study_name)
        self._waiting = why

    def _idle_too_long(self, idle_since: float) -> bool:
        """``--idle-exit``: no trial for longer than ``idle_exit_s``, whether the server
        answered with none or stopped answering (a server stopped after its study ended: a
        fleet's workers should not keep their machines for ever)."""
        return self.idle_exit_s is not None and time.monotonic() - idle_since > self.idle_exit_s

    def _count(self, outcome: str) -> None:
        if outcome == DONE:
            self.trials_done += 1
        elif outcome == HANDED_BACK:
            self.handed_back += 1
        else:
            self.dropped += 1

    def _others(self) -> list[tuple[int, str]]:
        return [(self.handed_back, HANDED_BACK), (self.dropped, DROPPED)]

    def _poll_for(self, idle_since: float) -> float:
        """The long poll's length: ``--poll-seconds``, cut to the ``--idle-exit`` time left
        (so that ``--idle-exit 5`` exits after about 5 s, not after a whole 20 s poll)."""
        if self.idle_exit_s is None:
            return self.poll_s
        left = self.idle_exit_s - (time.monotonic() - idle_since)
        return max(0.5, min(self.poll_s, left + 0.05))

    def _acquire(self, poll_s: float) -> pb.AcquireTrialResponse | None:
        """One long poll of ``poll_s`` seconds (:meth:`_poll_for`) that SIGTERM can interrupt."""
        fut = self.client.acquire_future(
            self.worker_id, self.capabilities, poll_s, self.study_name, self.skips.studies()
        )
        while True:
            try:
                resp = fut.result(timeout=0.2)
                break
            except grpc.FutureTimeoutError:
                if self.stopping.is_set():
                    fut.cancel()
                    try:
                        resp = fut.result(timeout=5)
                    except (grpc.FutureCancelledError, grpc.RpcError, grpc.FutureTimeoutError):
                        return None
                    break
            except grpc.FutureCancelledError:
                return None
            except grpc.RpcError as e:
                raise ClientError(e.code(), e.details() or "", "AcquireTrial") from None
        if resp.has_trial and self.stopping.is_set():  # got one while shutting down: give it back
            what = f"hand back trial {resp.lease.study_name}#{resp.lease.trial_number}"
            if self._safe(what, lambda: self.client.release(resp.lease.lease_id, self.stop_reason)):
                self.handed_back += 1
            return None
        return resp

    # -------------------------------------------------------------- one trial

    def run_trial(self, resp: pb.AcquireTrialResponse) -> str:
        """Trains one leased trial and reports it; returns DONE, HANDED_BACK or DROPPED."""
        lease = resp.lease
        tag = f"{lease.study_name}#{lease.trial_number}"
        state = TrialState()

        def fail(why: str, retryable: bool) -> str:
            ok = self._safe(
                f"fail trial {tag}", lambda: self.client.fail(lease.lease_id, why, retryable)
            )
            return DONE if ok else DROPPED

        def release(why: str) -> str:
            ok = self._safe(
                f"hand back trial {tag}", lambda: self.client.release(lease.lease_id, why)
            )
            return HANDED_BACK if ok else DROPPED

        if why := self.skips.why(lease.study_name):  # a server that reads no skip_studies
            return fail(f"worker {self.worker_id} lacks the data: {why}", True)
        try:
            candidate = Candidate.from_json(resp.candidate_json)
        except SpecError as e:
            return fail(f"unreadable candidate: {e}", False)
        trainer = self.trainers.get(resp.trainer)
        if trainer is None:  # the server matched our capabilities, so this is a server bug
            return release(f"no trainer {resp.trainer!r} here")
        if candidate.kind not in trainer.kinds:  # a loop asked for a job this trainer lacks
            return fail(
                f"the {resp.trainer} trainer does not do {candidate.kind!r} jobs (it does: "
                f"{', '.join(trainer.kinds)}); use a loop and trainer that agree on job kinds",
                False,
            )
        log.info("trial %s: %s", tag, candidate.summary())
        done = threading.Event()
        hb = threading.Thread(
            target=heartbeats, args=(self, lease.lease_id, state, done, tag), daemon=True
        )
        hb.start()

        context = trial_context(self, resp, state)
        started = time.monotonic()
        try:
            result = trainer.train(candidate, context)
        except TrialStopped:
            done.set()
            if state.pruned:
                log.info("trial %s pruned", tag)
                return DONE
            if state.lost.is_set():
                log.warning("trial %s: lease lost (%s); dropped", tag, state.reason)
                return DROPPED
            if state.cancelled.is_set():
                log.info("trial %s: cancelled by the server", tag)
                return fail(CANCELLED, False)
            log.info("trial %s: handing back", tag)
            return release(self.stop_reason)
        except CandidateError as e:
            done.set()
            log.warning("trial %s: candidate failed: %s", tag, e)
            return fail(f"candidate error: {e}", False)
        except (GlueDataMissing, GlueDataInvalid) as e:  # this machine's data: handed back
            done.set()
            return release(self.skips.lacks(lease.study_name, str(e)))
        except Exception as e:
            done.set()
            log.error("trial %s: %s", tag, traceback.format_exc(limit=5))
            return fail(f"{type(e).__name__}: {e}", True)
        try:
            metrics = checked_metrics(result, context.objective_metrics)
        except CandidateError as e:
            done.set()
            log.warning("trial %s: %s", tag, e)
            return fail(f"candidate error: {e}", False)
        info = {
            "worker_id": self.worker_id,
            "device": self.device,
            **{str(k): str(v) for k, v in result.info.items()},  # free text: 3 is "3"
            "wall_seconds": f"{time.monotonic() - started:.3f}",
        }
        # Heartbeats go on until the result is acknowledged: a server that was down while
        # the training ended keeps the lease alive once it is back, and the result is stored.
        try:
            out = self._retry(
                "complete", lambda: self.client.complete(lease.lease_id, metrics, info)
            )
            log.info("trial %s complete: %s", tag, list(out.values))
            return DONE
        except ClientError as e:
            if e.transient:  # gave up after the stop grace
                log.warning("trial %s: result not stored: %s", tag, self._unreachable(e))
            elif e.code == grpc.StatusCode.INVALID_ARGUMENT:  # the result itself: not retried
                log.warning("trial %s: completion refused: %s", tag, e)
                return fail(f"result refused by the server: {e.details}", False)
            else:
                log.warning("trial %s: completion refused: %s", tag, e)
            return DROPPED
        finally:
            done.set()
