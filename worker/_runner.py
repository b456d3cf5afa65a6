"""The worker loop: register, acquire, heartbeat, train, report; reconnect; hand back on SIGTERM.

One trial at a time. The main thread trains; a heartbeat thread extends the lease. The worker
stops a trial at once when the server prunes it, when its lease is lost (expired or unknown),
or when the process receives SIGTERM/SIGINT — in that last case it hands the lease back so the
candidate is re-queued immediately, then exits.

While the server is unreachable the worker retries with exponential backoff (capped), keeping
its current trial and heartbeating it until the server acknowledged its result: a restarted
server gives every lease a grace of one lease duration from its own start, so a result
finished while it was down is accepted. After SIGTERM the worker still tries to hand back (or
report) its trial for at most ``stop_grace_s`` seconds (default 10, well under Kubernetes' 30 s
termination grace), sleeping between attempts, then exits.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from archsearch.server.client import ClientError, WorkerClient
from archsearch.spaces import Candidate, SpecError
from archsearch.v1 import archsearch_pb2 as pb
from archsearch.worker._capabilities import (
    artifact_holders,
    declared_trainer_info,
    device_memory_bytes,
    first_holder,
)
from archsearch.worker._checkpoint_dir import checkpoint_root
from archsearch.worker._progress_sweep import ProgressSweeper
from archsearch.worker._trainer import CandidateError, TrainContext, Trainer, TrialStopped

log = logging.getLogger("archsearch.worker")
T = TypeVar("T")


class Backoff:
    """Exponential backoff with full jitter: 0.2 s doubling up to ``cap`` seconds."""

    def __init__(self, base: float = 0.2, cap: float = 5.0) -> None:
        self.base, self.cap, self.n = base, cap, 0

    def next(self) -> float:
        delay = random.uniform(0, min(self.cap, self.base * 2**self.n))
        self.n = min(self.n + 1, 30)
        return delay

    def reset(self) -> None:
        self.n = 0


class _TrialState:
    def __init__(self) -> None:
        self.lost = threading.Event()  # lease expired or unknown: stop, report nothing
        self.pruned = False
        self.reason = ""


class Worker:
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
        if not stop_grace_s >= 0:
            raise ValueError(f"stop_grace_s must be >= 0, got {stop_grace_s}")
        self.client = client
        self.trainers = trainers
        self.device = device
        self.study_name = study_name
        self.poll_s = poll_s
        self.max_trials = max_trials
        self.idle_exit_s = idle_exit_s
        host = socket.gethostname()
        self.worker_id = worker_id or f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        #: what each trainer trains and reports, sent on RegisterWorker
        self.trainer_info = declared_trainer_info(trainers)
        self.capabilities = pb.WorkerCapabilities(
            trainers=sorted(trainers),
            device=device,
            hostname=host,
            memory_bytes=device_memory_bytes(device),
        )
        self.stopping = threading.Event()
        self.stop_grace_s = stop_grace_s
        #: monotonic time after which a stopping worker stops retrying (set by ``stop``)
        self._stop_deadline = float("inf")
        self.heartbeat_interval_s = 10.0
        self.lease_duration_s = 60.0
        self.trials_done = 0
        self.sweeper = sweeper or ProgressSweeper(checkpoint_root)

    # -------------------------------------------------------------- signals and retries

    def stop(self) -> None:
        """Asks the worker to hand back its trial and exit, within ``stop_grace_s``."""
        if not self.stopping.is_set():
            self._stop_deadline = time.monotonic() + self.stop_grace_s
            self.stopping.set()

    def install_signal_handlers(self) -> None:
        def _handler(signum: int, _frame: object) -> None:
            log.info("signal %d: handing back the current trial and exiting", signum)
            self.stop()

        signal.signal(signal.SIGTERM, _handler)
        signal.signal(signal.SIGINT, _handler)

    def _retry(
        self,
        what: str,
        fn: Callable[[], T],
        give_up_after_s: float | None = None,
        while_stopping: bool = True,
    ) -> T:
        """Calls ``fn`` until it succeeds or fails for good; transient errors back off.

        Args:
            give_up_after_s: re-raise a transient error after this long (None: never).
            while_stopping: keep trying after a stop request, until the stop grace ends (to
                hand back or report a trial); False re-raises at once once stopping.

        Every retry sleeps its backoff delay (cut to the time left), stop or no stop: a stop
        request shortens how long the worker keeps trying, never how long it waits between
        attempts, so a server that does not answer costs one log line per attempt.
        """
        backoff = Backoff()
        give_up = math.inf if give_up_after_s is None else time.monotonic() + give_up_after_s
        while True:
            try:
                return fn()
            except ClientError as e:
                if not e.transient:
                    raise
                limit = give_up
                if self.stopping.is_set():
                    limit = min(limit, self._stop_deadline if while_stopping else 0.0)
                left = limit - time.monotonic()
                if left <= 0:
                    raise
                delay = min(backoff.next(), left)
                if cause := self.client.cause_once(e):  # a TLS mismatch, once: see README
                    log.error("%s: %s; retrying", what, cause)
                log.warning("%s: %s; retrying in %.1fs", what, e.code.name, delay)
                time.sleep(delay)

    # -------------------------------------------------------------- main loop

    def register(self) -> None:
        resp = self._retry(
            "register",
            lambda: self.client.register(self.worker_id, self.capabilities, self.trainer_info),
            while_stopping=False,
        )
        self.worker_id = resp.worker_id
        self.heartbeat_interval_s = resp.heartbeat_interval_s
        self.lease_duration_s = resp.lease_duration_s
        log.info(
            "worker %s registered (server %s; heartbeat %.0fs, lease %.0fs; trainers %s)",
            self.worker_id,
            resp.server_version,
            self.heartbeat_interval_s,
            self.lease_duration_s,
            ",".join(self.trainers),
        )

    def run(self) -> int:
        """Loops until stopped; returns the number of trials run."""
        try:
            self.register()
        except ClientError as e:
            if self.stopping.is_set():
                return 0
            raise SystemExit(
                f"worker: cannot register with {self.client.target}: {e.details}"
            ) from None
        idle_since = time.monotonic()
        backoff = Backoff()
        while not self.stopping.is_set():
            if self.max_trials is not None and self.trials_done >= self.max_trials:
                break
            self.sweeper.maybe_sweep()
            try:
                resp = self._acquire()
            except ClientError as e:
                if not e.transient:
                    raise SystemExit(f"worker: {e}") from None
                delay = backoff.next()
                if cause := self.client.cause_once(e):
                    log.error("acquire: %s; retrying", cause)
                log.warning(
                    "acquire: server unavailable (%s); retrying in %.1fs", e.code.name, delay
                )
                self.stopping.wait(delay)
                continue
            backoff.reset()
            if resp is None or not resp.has_trial:
                if (
                    self.idle_exit_s is not None
                    and time.monotonic() - idle_since > self.idle_exit_s
                ):
                    log.info("no work for %.0fs; exiting", self.idle_exit_s)
                    break
                continue
            self.run_trial(resp)
            self.trials_done += 1
            idle_since = time.monotonic()
        log.info("worker %s exiting after %d trial(s)", self.worker_id, self.trials_done)
        return self.trials_done

    def _acquire(self) -> pb.AcquireTrialResponse | None:
        """One long poll that SIGTERM can interrupt."""
        fut = self.client.acquire_future(
            self.worker_id, self.capabilities, self.poll_s, self.study_name
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
            self._safe(lambda: self.client.release(resp.lease.lease_id, "worker shutting down"))
            return None
        return resp

    # -------------------------------------------------------------- one trial

    def run_trial(self, resp: pb.AcquireTrialResponse) -> None:
        lease = resp.lease
        tag = f"{lease.study_name}#{lease.trial_number}"
        state = _TrialState()
        try:
            candidate = Candidate.from_json(resp.candidate_json)
        except SpecError as e:
            why = f"unreadable candidate: {e}"
            self._safe(lambda: self.client.fail(lease.lease_id, why, False))
            return
        trainer = self.trainers.get(resp.trainer)
        if trainer is None:  # the server matched our capabilities, so this is a server bug
            self._safe(
                lambda: self.client.release(lease.lease_id, f"no trainer {resp.trainer!r} here")
            )
            return
        if candidate.kind not in trainer.kinds:  # a loop asked for a job this trainer lacks
            why = (
                f"the {resp.trainer} trainer does not do {candidate.kind!r} jobs (it does: "
                f"{', '.join(trainer.kinds)}); use a loop and trainer that agree on job kinds"
            )
            self._safe(lambda: self.client.fail(lease.lease_id, why, False))
            return
        log.info("trial %s: %s", tag, candidate.summary())
        done = threading.Event()
        hb = threading.Thread(
            target=self._heartbeats, args=(lease.lease_id, state, done), daemon=True
        )
        hb.start()

        def report(step: int, value: float) -> bool:
            if state.lost.is_set():
                return True
            try:
                r = self._retry(
                    "report",
                    lambda: self.client.report(lease.lease_id, step, value),
                    give_up_after_s=self.lease_duration_s,
                )
            except ClientError as e:
                state.lost.set()
                state.reason = e.details
                return True
            if r.should_prune:
                state.pruned = True
            return bool(r.should_prune)

        context = TrainContext(
            report=report,
            should_stop=lambda: self.stopping.is_set() or state.lost.is_set(),
            intermediate_metric=resp.intermediate_metric,
            objective_metrics=tuple(resp.objective_metrics),
            device=self.device,
            upload=lambda path, name: self.client.upload_artifact(lease.lease_id, path, name),
            download=self.client.download_artifact,
            study_name=lease.study_name,
            find=lambda study, name: first_holder(self.client, study, name),
            holders=lambda study, name, limit: artifact_holders(self.client, study, name, limit),
            trial_number=lease.trial_number,
        )
        started = time.monotonic()
        try:
            result = trainer.train(candidate, context)
        except TrialStopped:
            done.set()
            if state.pruned:
                log.info("trial %s pruned", tag)
            elif state.lost.is_set():
                log.warning("trial %s: lease lost (%s); dropped", tag, state.reason)
            else:
                log.info("trial %s: handing back", tag)
                self._safe(lambda: self.client.release(lease.lease_id, "worker stopped (SIGTERM)"))
            return
        except CandidateError as e:
            done.set()
            log.warning("trial %s: candidate failed: %s", tag, e)
            why = f"candidate error: {e}"
            self._safe(lambda: self.client.fail(lease.lease_id, why, False))
            return
        except Exception as e:
            done.set()
            log.error("trial %s: %s", tag, traceback.format_exc(limit=5))
            why = f"{type(e).__name__}: {e}"
            self._safe(lambda: self.client.fail(lease.lease_id, why, True))
            return
        info = {
            "worker_id": self.worker_id,
            "device": self.device,
            **result.info,
            "wall_seconds": f"{time.monotonic() - started:.3f}",
        }
        # Heartbeats go on until the result is acknowledged: a server that was down while
        # the training ended keeps the lease alive once it is back, and the result is stored.
        try:
            out = self._retry(
                "complete", lambda: self.client.complete(lease.lease_id, result.metrics, info)
            )
            log.info("trial %s complete: %s", tag, list(out.values))
        except ClientError as e:
            log.warning("trial %s: completion refused: %s", tag, e)
        finally:
            done.set()

    def _heartbeats(self, lease_id: str, state: _TrialState, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_interval_s):
            try:
                self.client.heartbeat(lease_id)
            except ClientError as e:
                if e.transient:
                    continue  # server restarting: keep trying until the lease would expire
                state.reason = e.details
                state.lost.set()
                return

    def _safe(self, fn: Callable[[], Any]) -> None:
        try:
            self._retry("report", fn, give_up_after_s=self.lease_duration_s)
        except ClientError as e:
            log.warning("server refused: %s", e)
