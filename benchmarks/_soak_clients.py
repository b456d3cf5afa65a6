"""The simulated workers of ``benchmarks/soak.py``: light asynchronous clients in a few processes.

Each client process runs its share of the workers as ``grpc.aio`` coroutines on one event loop,
one channel each (a local subchannel pool, so every worker has its own connection, as separate
machines would). A worker registers, then repeats the whole lease lifecycle until the phase
ends: ``AcquireTrial`` (timed), ``Heartbeat``, half its simulated training, ``ReportIntermediate``,
the other half, then ``CompleteTrial`` or, for about ``fail_fraction`` of its trials,
``FailTrial`` (retryable, so the server re-queues the candidate). A worker that is acquiring when
the phase ends stops; one holding a lease finishes its lifecycle first, so no lease is left
behind. Every failed call is an error (counted, its first messages kept); the worker backs off
half a second and goes on.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

#: A worker that meets an error waits this long before it goes on (no tight error loops).
ERROR_BACKOFF_S = 0.5
#: Per-call deadline (an acquire's long poll gets this on top of its timeout).
CALL_TIMEOUT_S = 30.0
#: Longest long poll a worker asks for.
POLL_S = 5.0


@dataclass
class ClientJob:
    """What one client process runs: workers ``first`` .. ``first + count - 1``."""

    target: str
    first: int
    count: int
    train_s: float
    fail_fraction: float
    seed: int


@dataclass
class Tally:
    """What the workers of one process did; ``samples`` are ``(t_end, acquire_s)`` per
    finished lifecycle (``time.monotonic``, comparable across processes on one machine)."""

    lifecycles: int = 0
    completed: int = 0
    failed: int = 0
    pruned: int = 0
    no_work: int = 0
    errors: int = 0
    messages: list[str] = field(default_factory=list)
    samples: list[tuple[float, float]] = field(default_factory=list)

    def error(self, what: str, e: BaseException) -> None:
        self.errors += 1
        if len(self.messages) < 5:
            code = getattr(e, "code", None)
            detail = getattr(e, "details", None)
            text = f"{code()}: {detail()}" if callable(code) and callable(detail) else repr(e)
            self.messages.append(f"{what}: {text}"[:300])


async def _worker(
    index: int, job: ClientJob, start: float, end: float, tally: Tally, rng: random.Random
) -> None:
    import grpc

    from archsearch.v1 import archsearch_pb2 as pb
    from archsearch.v1 import archsearch_pb2_grpc as pb_grpc

    worker_id = f"soak-{index}"
    caps = pb.WorkerCapabilities(trainers=["bert"], device="cpu", hostname="soak")
    options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own per worker
    async with grpc.aio.insecure_channel(job.target, options=options) as channel:
        stub = pb_grpc.WorkerServiceStub(channel)
        try:
            await stub.RegisterWorker(
                pb.RegisterWorkerRequest(worker_id=worker_id, capabilities=caps),
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as e:
            tally.error("RegisterWorker", e)
            return
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        while (left := end - time.monotonic()) > 0:
            step = "AcquireTrial"
            try:
                poll = min(POLL_S, left)
                t0 = time.perf_counter()
                r = await stub.AcquireTrial(
                    pb.AcquireTrialRequest(worker_id=worker_id, capabilities=caps, timeout_s=poll),
                    timeout=poll + CALL_TIMEOUT_S,
                )
                acquire_s = time.perf_counter() - t0
                if not r.has_trial:
                    tally.no_work += 1
                    continue
                lease = r.lease.lease_id
                step = "Heartbeat"
                await stub.Heartbeat(pb.HeartbeatRequest(lease_id=lease), timeout=CALL_TIMEOUT_S)
                train = job.train_s * rng.uniform(0.5, 1.5)
                await asyncio.sleep(train / 2)
                step = "ReportIntermediate"
                rr = await stub.ReportIntermediate(
                    pb.ReportIntermediateRequest(lease_id=lease, step=1, value=rng.random()),
                    timeout=CALL_TIMEOUT_S,
                )
                if rr.should_prune:
                    tally.pruned += 1
                else:
                    await asyncio.sleep(train / 2)
                    if rng.random() < job.fail_fraction:
                        step = "FailTrial"
                        await stub.FailTrial(
                            pb.FailTrialRequest(
                                lease_id=lease, reason="soak: simulated failure", retryable=True
                            ),
                            timeout=CALL_TIMEOUT_S,
                        )
                        tally.failed += 1
                    else:
                        step = "CompleteTrial"
                        await stub.CompleteTrial(
                            pb.CompleteTrialRequest(
                                lease_id=lease, metrics={"accuracy": 0.5 + 0.4 * rng.random()}
                            ),
                            timeout=CALL_TIMEOUT_S,
                        )
                        tally.completed += 1
                tally.lifecycles += 1
                tally.samples.append((time.monotonic(), acquire_s))
            except grpc.aio.AioRpcError as e:
                tally.error(step, e)
                await asyncio.sleep(ERROR_BACKOFF_S)


async def _run(job: ClientJob, start: float, end: float) -> Tally:
    tally = Tally()
    tasks = [
        asyncio.create_task(
            _worker(i, job, start, end, tally, random.Random(job.seed * 1_000_003 + i))
        )
        for i in range(job.first, job.first + job.count)
    ]
    for done in asyncio.as_completed(tasks):
        try:
            await done
        except Exception as e:  # a bug in a worker is an error too, never a silent stop
            tally.error("worker", e)
    return tally


def client_main(jobs: Any, ready: Any, go: Any, t0: Any, seconds: float, out: Any) -> None:
    """One client process: import (while the server starts), take a job, say ready, wait for
    the common start, run, send the tally."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    first = -1
    try:
        import grpc  # noqa: F401  (imported before the start: not counted in the phase)

        from archsearch.v1 import archsearch_pb2_grpc  # noqa: F401

        job: ClientJob = jobs.get(timeout=300)
        first = job.first
        ready.put(first)
        if not go.wait(timeout=300):
            raise RuntimeError("no start signal from the parent")
        tally = asyncio.run(_run(job, t0.value, t0.value + seconds))
        out.put(("ok", job.first, tally))
    except BaseException:
        out.put(("fatal", first, traceback.format_exc()[-2000:]))
