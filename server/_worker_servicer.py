"""The worker service's gRPC servicer: register, acquire, heartbeat, report, complete, fail,
hand back. Validate each request, call the study manager, convert the answer.

Each method checks every field it receives before touching the storage, so a malformed request
changes nothing; domain errors become one precise status (``_errors`` names the mapping).
"""

from __future__ import annotations

import logging
import math
import re
import threading

import grpc

from archsearch.server._acquire import refuse_unservable
from archsearch.server._convert import (
    grant_to_pb,
    metrics_from_pb,
)
from archsearch.server._errors import ResourceExhausted
from archsearch.server._rpc import _lease_id, _require, _study_name, rpc
from archsearch.server._source import code_label, mismatch
from archsearch.server._studies import StudyManager
from archsearch.server._trainers import MAX_TRAINER_INFO, registered_trainer_info
from archsearch.server._workers import requeue_leases_of
from archsearch.spaces import TRAINER_NAME_RE
from archsearch.v1 import archsearch_pb2 as pb
from archsearch.v1 import archsearch_pb2_grpc as pb_grpc

log = logging.getLogger("archsearch.server")
WORKER_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")


def _label(caps: pb.WorkerCapabilities) -> str:
    """A client's code label made printable (and short) first: a log line is not cut to its
    first 200 characters, which dropped the fix."""
    return "".join(c for c in caps.source[:100] if c.isprintable())


def _capabilities(caps: pb.WorkerCapabilities) -> tuple[str, ...]:
    trainers = tuple(caps.trainers)
    _require(bool(trainers), "capabilities.trainers is required, for example ['bert']")
    _require(
        len(trainers) <= MAX_TRAINER_INFO,
        f"capabilities.trainers: {len(trainers)} names; at most {MAX_TRAINER_INFO}",
    )
    _require(
        len(set(trainers)) == len(trainers),
        "capabilities.trainers: a trainer named twice "
        f"({sorted({t[:40] for t in trainers if trainers.count(t) > 1})})",
    )
    for t in trainers:
        _require(
            bool(TRAINER_NAME_RE.match(t)),
            f"capabilities.trainers: invalid trainer name {t[:40]!r}",
        )
    _require(
        len(caps.device) <= 256 and len(caps.hostname) <= 256,
        "capabilities: device/hostname too long",
    )
    _require(caps.memory_bytes >= 0, "capabilities.memory_bytes must be >= 0")
    return trainers


class WorkerServicer(pb_grpc.WorkerServiceServicer):
    """WorkerService: what training machines call.

    Args:
        manager: the study manager.
        max_long_polls: AcquireTrial calls allowed to wait at once; more get RESOURCE_EXHAUSTED.
        max_poll_s: cap on AcquireTrialRequest.timeout_s.
    """

    SERVICE = pb.DESCRIPTOR.services_by_name["WorkerService"]

    def __init__(
        self, manager: StudyManager, max_long_polls: int = 256, max_poll_s: float = 30.0
    ) -> None:
        self.m = manager
        self.max_poll_s = max_poll_s
        self.max_long_polls = max_long_polls
        self._polls = threading.BoundedSemaphore(max_long_polls)

    @rpc
    def RegisterWorker(
        self, request: pb.RegisterWorkerRequest, context: grpc.ServicerContext
    ) -> pb.RegisterWorkerResponse:
        """Records a worker and what its trainers do. A worker registers once per process, so
        an id that registers again while it holds leases is a restarted worker: those trials
        are failed and re-queued at once (``requeue_leases_of``), not left RUNNING until
        their leases expire."""
        from archsearch.server import __version__

        worker_id = request.worker_id
        if not worker_id:
            import uuid

            worker_id = f"worker-{uuid.uuid4().hex[:12]}"
        _require(
            bool(WORKER_ID_RE.match(worker_id)),
            f"invalid worker_id {worker_id[:40]!r}: 1-128 of [A-Za-z0-9._:-]",
        )
        caps = request.capabilities
        trainers = _capabilities(caps)
        described = registered_trainer_info(request.trainer_info, trainers)
        theirs = _label(caps)
        self.m.register(
            worker_id, trainers, caps.device, caps.memory_bytes, caps.hostname, described, theirs
        )
        if request.worker_id:  # leases held under this id belong to a process that is gone
            requeue_leases_of(worker_id, self.m)
        other = mismatch(code_label(), theirs, f"worker {worker_id}")
        if other:
            log.warning("%s", other)
        return pb.RegisterWorkerResponse(
            worker_id=worker_id,
            heartbeat_interval_s=self.m.heartbeat_interval_s,
            lease_duration_s=self.m.lease_duration_s,
            server_version=__version__,
            server_source=code_label(),
        )

    @rpc
    def AcquireTrial(
        self, request: pb.AcquireTrialRequest, context: grpc.ServicerContext
    ) -> pb.AcquireTrialResponse:
        """Hands a worker a leased trial, waiting up to ``min(timeout_s, max_poll_s)`` for one.

        The logic is:
          1. Check the request (worker id, trainers, timeout, study name) and take one of the
             ``max_long_polls`` waiting slots, so a crowd of idle workers cannot take every
             server thread (RESOURCE_EXHAUSTED when none is free). A ``study_name`` that names
             no study is NOT_FOUND; one this worker can never serve (completed, or trained
             by a trainer it lacks) is FAILED_PRECONDITION, with the reason and the fix
             (``refuse_unservable``), instead of a wait that never ends; a stopped one is
             waited for, and an answer without a trial says why (``waiting_because``).
          2. In each running study whose trainer the worker offers (only ``study_name`` when
             given), in launch order: a queued retry first, else a prepared candidate popped
             from the study's pool (``CandidatePool``); when the pool is empty, the loop is
             asked for one now, while the worker waits.
          3. Grant it a fresh lease (``LeaseTable.grant``: lease id, worker, attempt and
             heartbeat in one queued write, urgent lane) and answer once that write commits.
          4. No lease for a call that can no longer receive the answer (cancelled, or its
             deadline passed); a lease granted meanwhile is taken back and the trial goes
             back to the front of the pool.
          5. Nothing ready before the timeout (or the loop is still building): ``has_trial``
             false; the worker asks again.

        Returns:
            The lease, the candidate, its trainer and the metrics to report, or no trial.
        """
        _require(
            bool(WORKER_ID_RE.match(request.worker_id)),
            "worker_id is required (from RegisterWorker)",
        )
        trainers = _capabilities(request.capabilities)
        _require(
            math.isfinite(request.timeout_s) and request.timeout_s >= 0,
            "timeout_s must be a finite number >= 0",
        )
        skip = request.skip_studies
        _require(len(skip) <= 100, f"skip_studies: at most 100 names, got {len(skip)}")
        for name in skip:
            _study_name(name, "skip_studies")
        waiting = ""
        if self.m.directory.source_of(request.worker_id) is None:
            self._met(request.worker_id, request.capabilities, trainers)
        if request.study_name:
            _study_name(request.study_name, "study_name")
            waiting = refuse_unservable(self.m.get(request.study_name), trainers)
        timeout = min(request.timeout_s, self.max_poll_s)
        remaining = context.time_remaining()
        if remaining is not None:  # answer "no work" before the caller's deadline passes
            timeout = max(0.0, min(timeout, remaining - 0.5))
        if not self._polls.acquire(blocking=False):
            raise ResourceExhausted(
                f"more than {self.max_long_polls} workers are waiting for trials; retry later "
                "or start the server with a larger --max-long-polls"
            )

        def alive() -> bool:
            """Whether an answer can still reach the caller: no lease for a call that gave
            up or whose deadline passed (it would sit RUNNING until its lease expired)."""
            if not context.is_active():
                return False
            left = context.time_remaining()
            return left is None or left > 0.05

        try:
            grant = self.m.acquire(
                request.worker_id,
                trainers,
                request.study_name,
                timeout,
                alive=alive,
                skip=frozenset(skip),
            )
        finally:
            self._polls.release()
        answer = grant_to_pb(grant)
        if grant is None and request.study_name and not waiting:  # set aside for its code?
            waiting = self.m.other_code.why_out(self.m.get(request.study_name), request.worker_id)
        if grant is None and waiting:
            answer.waiting_because = waiting
        return answer

    def _met(self, worker_id: str, caps: pb.WorkerCapabilities, trainers: tuple[str, ...]) -> None:
        """A worker that asks for work without having registered with this server process: it
        registered with the one before a restart (a worker registers once, when it starts).
        It is recorded with the code label its request carries, and a mismatch is said as at
        registration: an old worker still attached across a server upgrade went unnamed."""
        theirs = _label(caps)
        self.m.directory.register(
            worker_id, trainers, caps.device, caps.memory_bytes, caps.hostname, theirs
        )
        other = mismatch(code_label(), theirs, f"worker {worker_id}")
        if other:
            log.warning("%s (it registered before this server started)", other)

    @rpc
    def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.ServicerContext
    ) -> pb.HeartbeatResponse:
        deadline, stop = self.m.heartbeat(_lease_id(request.lease_id))
        return pb.HeartbeatResponse(deadline_unix=deadline, should_stop=stop)

    @rpc
    def ReportIntermediate(
        self, request: pb.ReportIntermediateRequest, context: grpc.ServicerContext
    ) -> pb.ReportIntermediateResponse:
        lease = _lease_id(request.lease_id)
        _require(math.isfinite(request.value), f"value must be finite, got {request.value}")
        _require(request.step >= 0, f"step must be >= 0, got {request.step}")
        prune, deadline = self.m.report(lease, request.step, request.value)
        return pb.ReportIntermediateResponse(should_prune=prune, deadline_unix=deadline)

    @rpc
    def CompleteTrial(
        self, request: pb.CompleteTrialRequest, context: grpc.ServicerContext
    ) -> pb.CompleteTrialResponse:
        """Stores a trial's final metrics and completes it.

        The logic is:
          1. Check the metrics (names, finite values, count) and provenance (INVALID_ARGUMENT).
          2. Resolve the lease (``LeaseTable.resolve``): unknown lease, NOT_FOUND; a lease
             whose trial is no longer live, FAILED_PRECONDITION, except the same report again,
             which gets the stored values again (reports are idempotent); the same lease with
             other metrics, ALREADY_EXISTS.
          3. Compute the objective values from the raw metrics (aggregates at read time).
          4. Metrics, values and state COMPLETE in one queued write; the answer waits for its
             commit (a concurrent repeat waits for it too, then sees the stored trial).
          5. Prepare the study's next candidates (``CandidatePool.top_up``) before answering,
             so the workers' next acquires are in-memory pops; complete the study when its
             budget is spent.

        Returns:
            The objective values, in the study's objective order.
        """
        lease = _lease_id(request.lease_id)
        metrics = metrics_from_pb(request.metrics)
        _require(bool(metrics), "metrics is required: at least the study's objective metrics")
        values, _state = self.m.complete(lease, metrics, dict(request.info))
        return pb.CompleteTrialResponse(values=values, state=pb.COMPLETE)

    @rpc
    def FailTrial(
        self, request: pb.FailTrialRequest, context: grpc.ServicerContext
    ) -> pb.FailTrialResponse:
        requeued = self.m.fail(_lease_id(request.lease_id), request.reason, request.retryable)
        return pb.FailTrialResponse(requeued=requeued)

    @rpc
    def ReleaseTrial(
        self, request: pb.ReleaseTrialRequest, context: grpc.ServicerContext
    ) -> pb.ReleaseTrialResponse:
        """Hands a lease back (a worker shutting down): the trial fails and its candidate is
        re-queued at once, without counting against its retry budget.

        The logic is:
          1. Resolve the lease (``LeaseTable.resolve``): unknown lease, NOT_FOUND; a finished
             trial, FAILED_PRECONDITION, except the same release again, which gets the same
             answer (whether a retry was queued).
          2. Store ``fail_reason`` and fail the trial (state FAIL).
          3. Queue a WAITING copy with the same parameters and candidate (``Retries.requeue``;
             none when the study was stopped meanwhile or its retry budget was already spent);
             the next acquire takes it first.
          4. Prepare the study's next candidates (``CandidatePool.top_up``) and wake waiting
             acquires.

        Returns:
            Whether the candidate was re-queued.
        """
        requeued = self.m.fail(
            _lease_id(request.lease_id),
            request.reason or "released by worker",
            retryable=True,
            released=True,
        )
        return pb.ReleaseTrialResponse(requeued=requeued)

    @rpc
    def LeaveWorker(
        self, request: pb.LeaveWorkerRequest, context: grpc.ServicerContext
    ) -> pb.LeaveWorkerResponse:
        """A worker exiting: it no longer counts as connected (its leases, if any, expire as
        usual). An id this server never saw is no error: it may have registered with an
        earlier server process."""
        worker_id = request.worker_id
        _require(
            bool(WORKER_ID_RE.match(worker_id)),
            f"invalid worker_id {worker_id[:40]!r}: 1-128 of [A-Za-z0-9._:-]",
        )
        was = self.m.leave(worker_id)
        log.info("worker %s left%s", worker_id, "" if was else " (not connected)")
        return pb.LeaveWorkerResponse(was_connected=was)
