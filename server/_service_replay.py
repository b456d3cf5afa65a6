"""Replaying a loop on a FlexiBERT table through a running service (``archsearch replay
--server``).

In-process replay (``_replay``) drives a loop with the server's own ask code; this goes through
the real thing: each search is a study launched on the server (the ``flexibert-small`` space
restricted to the table's rows, the ``table`` trainer, ``n_trials`` = the evaluation budget),
and ``parallel`` workers, threads of this process speaking the worker protocol, lease its
candidates and complete them with their rows' scores. So the server's pool, leases, repeat
handling (a repeat is answered with the earlier result, no worker sees it) and group-commit
writes are all on the path, and the figures include whatever they change. The server must be
able to read the table at the same path (it restricts the space to the table's rows).

An evaluation is a candidate a worker completed, in the order the completions were answered;
the searches are asynchronous (each worker asks again as soon as it finishes).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import grpc

from archsearch.server._replay import ReplayError, loop_base
from archsearch.server._replay_stats import Run
from archsearch.server.client import ClientError, SearchClient, WorkerClient
from archsearch.spaces import TABLE_METRIC, Candidate, ReplayTable
from archsearch.v1 import archsearch_pb2 as pb

#: Seconds a search may take before it is stopped and reported as an error.
SEARCH_TIMEOUT_S = 3600.0


class ServiceReplayFailed(ReplayError):
    """A search through the service failed as it ran (the server refused its study, a
    worker's call failed, it timed out, other workers took its trials): not the caller's
    input (the CLI exits 1)."""


def check_service_table(table: ReplayTable) -> None:
    """Raises ReplayError unless the service can host a search of ``table``."""
    if getattr(table.space, "name", "") != "flexibert-small" or not getattr(
        table.space, "table_path", None
    ):
        raise ReplayError(
            f"{table.source} is no FlexiBERT table: through a service only FlexiBERT tables "
            "can be replayed (the server restricts the flexibert-small space to their rows, "
            "and the table trainer scores them); drop --server to replay it in-process"
        )


def service_replay_search(
    target: str,
    table: ReplayTable,
    loop_name: str,
    seed: int,
    evals: int,
    loop_options: Mapping[str, Any] | None = None,
    parallel: int = 1,
    client_options: Mapping[str, Any] | None = None,
    timeout_s: float = SEARCH_TIMEOUT_S,
    ready_timeout_s: float = 10.0,
) -> Run:
    """One seeded search of ``table`` as a study on the server at ``target``.

    Args:
        client_options: keyword arguments of the gRPC clients (``token``, TLS files).
        ready_timeout_s: how long to wait for the server to answer at all.

    Raises:
        ReplayError: the table cannot be served, the server refused the study, a worker's
            call failed, or the search did not end within ``timeout_s``.
    """
    check_service_table(table)
    kw = dict(client_options or {})
    task = table.metric
    evals = min(evals, len(table.architectures))
    name = f"replay-{loop_name.replace('@', '-')}-s{seed}-{uuid.uuid4().hex[:8]}"
    spec = {
        "name": name,
        "space": "flexibert-small",
        # absolute: the server resolves a relative path against its own folder
        "space_options": {"table": os.path.abspath(table.space.table_path), "task": task},  # type: ignore[attr-defined]
        "trainer": "table",
        "task": task,
        "loop": loop_base(loop_name),
        "loop_options": dict((loop_options or {}).get(loop_name) or {}),
        "seed": seed,
        "n_trials": evals,
    }
    done: list[tuple[str, float]] = []  # (row key, score) in the order completions answered
    lock = threading.Lock()
    errors: list[str] = []
    finished = threading.Event()
    with SearchClient(target, **kw) as search:
        workers: list[threading.Thread] = []
        ended = False
        try:  # whatever ends it early (an error, a timeout, Ctrl-C even during the launch),
            # the study is stopped: its workers are gone
            try:
                search.wait_ready(ready_timeout_s)
                search.launch(spec)
            except ClientError as e:
                raise ServiceReplayFailed(
                    f"cannot launch the replay study {name} on {target}: {e.details}"
                ) from e
            t0 = time.perf_counter()
            workers = [
                threading.Thread(
                    target=_work,
                    args=(
                        target,
                        kw,
                        name,
                        table,
                        task,
                        f"{name}-w{i}",
                        done,
                        lock,
                        errors,
                        finished,
                    ),
                    daemon=True,
                )
                for i in range(parallel)
            ]
            for w in workers:
                w.start()
            deadline = time.monotonic() + timeout_s
            while not errors and time.monotonic() < deadline:
                if search.get_study(name).state == pb.STUDY_COMPLETED:
                    ended = True
                    break
                time.sleep(0.2)
            else:
                if not errors:
                    errors.append(f"the search did not end within {timeout_s:g} s")
        finally:
            finished.set()
            for w in workers:
                w.join(30)
            if not ended:  # NOT_FOUND when the launch never reached the server: nothing to stop
                with contextlib.suppress(ClientError):
                    search.stop(name)
        if errors:
            raise ServiceReplayFailed(f"replay study {name}: {errors[0]}")
        seconds = time.perf_counter() - t0
        trials = search.list_trials(name)
        asks = len(trials)
    _only_ours(name, target, trials)
    run = Run(loop_name, seed, direction=table.direction, seconds=seconds, asks=asks)
    better = max if table.direction == "maximize" else min
    best = -math.inf if table.direction == "maximize" else math.inf
    seen: set[str] = set()
    for key, score in done:
        if key in seen:
            continue
        seen.add(key)
        best = better(best, score)
        run.best.append(best)
        run.evaluated.append(key)
    run.best, run.evaluated = run.best[:evals], run.evaluated[:evals]
    return run


def _only_ours(name: str, target: str, trials: list[pb.Trial]) -> None:
    """Raises ReplayError when a worker of another process completed one of the study's
    trials: its evaluation never reached this replay, so the figures would be wrong (a
    ``worker --trainer table`` connected to the same server takes the study's trials too)."""
    others = sorted(
        {
            t.worker_id
            for t in trials
            if t.state == pb.COMPLETE and t.worker_id and not t.worker_id.startswith(f"{name}-w")
        }
    )
    if others:
        raise ServiceReplayFailed(
            f"replay study {name}: trials were completed by other workers of {target} "
            f"({', '.join(others)}), which this replay cannot count; stop the table workers "
            "connected to that server, or replay against a server of its own"
        )


def _work(
    target: str,
    kw: Mapping[str, Any],
    study: str,
    table: ReplayTable,
    task: str,
    worker_id: str,
    done: list[tuple[str, float]],
    lock: threading.Lock,
    errors: list[str],
    finished: threading.Event,
) -> None:
    """One worker: lease a candidate of ``study``, complete it with its row's score, repeat."""
    from archsearch.worker._table_trainer import TableTrainer

    caps = pb.WorkerCapabilities(trainers=["table"], device="replay", hostname="replay")
    metric = TABLE_METRIC.get(task, "accuracy")
    try:
        with WorkerClient(target, **kw) as client:
            client.register(worker_id, caps, [TableTrainer.info])
            while not finished.is_set():
                try:
                    resp = client.acquire(worker_id, caps, timeout_s=1.0, study_name=study)
                except ClientError as e:  # FAILED_PRECONDITION: the study has ended
                    if e.code == grpc.StatusCode.FAILED_PRECONDITION:
                        return
                    raise
                if not resp.has_trial:
                    continue
                arch = Candidate.from_json(resp.candidate_json).architecture
                try:
                    score = table.score(arch)
                except KeyError:
                    client.fail(resp.lease.lease_id, "no row of the table", retryable=False)
                    raise ServiceReplayFailed(
                        f"the server proposed {table.space.describe(arch)}, no row of "
                        f"{table.source}"
                    ) from None
                client.complete(resp.lease.lease_id, {metric: score, "score": score})
                with lock:
                    done.append((table.key(arch), score))
    except (ClientError, ReplayError) as e:
        if not finished.is_set():
            errors.append(f"worker {worker_id}: {e}")
