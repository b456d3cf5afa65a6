"""What a leased trial's trainer is given (``TrainContext``): its intermediate reports (checked,
then sent with retries; a refused one is the trainer's mistake), its stop signal, its device,
and the artifact calls bound to its lease."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from archsearch.server.client import ClientError
from archsearch.v1 import archsearch_pb2 as pb
from archsearch.worker._capabilities import artifact_holders, first_holder
from archsearch.worker._result_checks import check_report
from archsearch.worker._trainer import CandidateError, TrainContext
from archsearch.worker._trial_watch import TrialState

if TYPE_CHECKING:
    from archsearch.worker._runner import Worker


def trial_context(worker: Worker, resp: pb.AcquireTrialResponse, state: TrialState) -> TrainContext:
    """The context of the trial ``resp`` leased; ``state`` records a prune or a lost lease."""
    lease = resp.lease

    def report(step: int, value: float) -> bool:
        if state.lost.is_set():
            return True
        check_report(step, value)  # CandidateError: a trainer's mistake, said at once
        state.reporting = True
        try:
            # As long as the server does not answer (a restart: it gives leases one lease
            # duration from its start, so this one is alive when it is back), or until
            # --idle-exit: giving up after one lease duration dropped a trial that a server
            # down for longer would have kept.
            r = worker._retry(
                "report",
                lambda: worker.client.report(lease.lease_id, step, float(value)),
                give_up_after_s=worker.idle_exit_s,
            )
        except ClientError as e:
            if e.code == grpc.StatusCode.INVALID_ARGUMENT:
                raise CandidateError(f"intermediate report refused: {e.details}") from None
            if e.transient and worker.stopping.is_set():
                return True  # the stop ends it (a hand-back is tried); the lease is not lost
            state.lost.set()
            state.reason = (
                f"the server did not answer for {worker.idle_exit_s:g}s (--idle-exit)"
                if e.transient and worker.idle_exit_s is not None
                else e.details
            )
            return True
        finally:
            state.reporting = False
        if r.should_prune:
            state.pruned = True
        return bool(r.should_prune)

    return TrainContext(
        report=report,
        should_stop=lambda: worker.stopping.is_set() or state.lost.is_set(),
        intermediate_metric=resp.intermediate_metric,
        objective_metrics=tuple(resp.objective_metrics),
        device=worker.device,
        upload=lambda path, name: worker.client.upload_artifact(lease.lease_id, path, name),
        download=worker.client.download_artifact,
        study_name=lease.study_name,
        find=lambda study, name: first_holder(worker.client, study, name),
        holders=lambda study, name, limit: artifact_holders(worker.client, study, name, limit),
        trial_number=lease.trial_number,
        cancelled=state.cancelled.is_set,
    )
