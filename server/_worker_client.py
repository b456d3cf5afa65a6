"""The worker's client: WorkerService's calls, for ``archsearch worker`` and trainers.

Imports only grpc and the generated stubs (a worker machine needs none of the search stack).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from archsearch.server._client_base import ClientBase
from archsearch.v1 import archsearch_pb2 as pb
from archsearch.v1 import archsearch_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from archsearch.spaces import TrainerInfo


def _poll_deadline(timeout_s: float) -> float:
    """Call deadline of a long poll: the poll itself plus a margin (robust to bad input, which
    the server answers with INVALID_ARGUMENT rather than the client timing out)."""
    return (min(timeout_s, 3600.0) if math.isfinite(timeout_s) else 0.0) + 10.0


def _acquire_request(
    worker_id: str,
    capabilities: pb.WorkerCapabilities,
    timeout_s: float,
    study_name: str,
    skip_studies: Iterable[str] = (),
) -> pb.AcquireTrialRequest:
    return pb.AcquireTrialRequest(
        worker_id=worker_id,
        capabilities=capabilities,
        study_name=study_name,
        timeout_s=timeout_s,
        skip_studies=sorted(skip_studies),
    )


class WorkerClient(ClientBase):
    """The worker's side of the protocol: thin, typed wrappers around WorkerService."""

    def __init__(self, target: str, **kw: Any) -> None:
        super().__init__(target, **kw)
        self.stub = pb_grpc.WorkerServiceStub(self._channel)

    def register(
        self,
        worker_id: str,
        capabilities: pb.WorkerCapabilities,
        trainer_info: Sequence[TrainerInfo] = (),
    ) -> pb.RegisterWorkerResponse:
        """Registers, describing each trainer in ``trainer_info`` (what it trains and reports)."""
        return self._call(
            self.stub.RegisterWorker,
            pb.RegisterWorkerRequest(
                worker_id=worker_id,
                capabilities=capabilities,
                trainer_info=[trainer_info_to_pb(t) for t in trainer_info],
            ),
        )

    def acquire_future(
        self,
        worker_id: str,
        capabilities: pb.WorkerCapabilities,
        timeout_s: float,
        study_name: str = "",
        skip_studies: Iterable[str] = (),
    ) -> grpc.Future:
        """Starts a long poll; the caller waits on (or cancels) the returned future.
        ``skip_studies``: studies this worker cannot train now (it lacks their data)."""
        req = _acquire_request(worker_id, capabilities, timeout_s, study_name, skip_studies)
        return self.stub.AcquireTrial.future(
            req, timeout=_poll_deadline(timeout_s), metadata=self._metadata
        )

    def acquire(
        self,
        worker_id: str,
        capabilities: pb.WorkerCapabilities,
        timeout_s: float = 0.0,
        study_name: str = "",
        skip_studies: Iterable[str] = (),
    ) -> pb.AcquireTrialResponse:
        req = _acquire_request(worker_id, capabilities, timeout_s, study_name, skip_studies)
        return self._call(self.stub.AcquireTrial, req, timeout=_poll_deadline(timeout_s))

    def heartbeat(self, lease_id: str) -> pb.HeartbeatResponse:
        return self._call(self.stub.Heartbeat, pb.HeartbeatRequest(lease_id=lease_id))

    def report(self, lease_id: str, step: int, value: float) -> pb.ReportIntermediateResponse:
        return self._call(
            self.stub.ReportIntermediate,
            pb.ReportIntermediateRequest(lease_id=lease_id, step=step, value=value),
        )

    def complete(
        self, lease_id: str, metrics: dict[str, float], info: dict[str, str] | None = None
    ) -> pb.CompleteTrialResponse:
        return self._call(
            self.stub.CompleteTrial,
            pb.CompleteTrialRequest(lease_id=lease_id, metrics=metrics, info=info or {}),
        )

    def fail(self, lease_id: str, reason: str, retryable: bool) -> pb.FailTrialResponse:
        return self._call(
            self.stub.FailTrial,
            pb.FailTrialRequest(lease_id=lease_id, reason=reason, retryable=retryable),
        )

    def leave(self, worker_id: str, timeout_s: float = 5.0) -> pb.LeaveWorkerResponse:
        """Says that this worker is exiting (one try, no retries: it is a courtesy)."""
        return self._call(
            self.stub.LeaveWorker, pb.LeaveWorkerRequest(worker_id=worker_id), timeout=timeout_s
        )

    def release(self, lease_id: str, reason: str = "") -> pb.ReleaseTrialResponse:
        return self._call(
            self.stub.ReleaseTrial, pb.ReleaseTrialRequest(lease_id=lease_id, reason=reason)
        )

    def upload_artifact(
        self, lease_id: str, path: str | Path, name: str = "", timeout_s: float | None = None
    ) -> str:
        """Uploads a file for the lease's trial (chunked, sha256 checked by the server);
        returns its artifact id. ``name`` defaults to the file's name. The default deadline
        allows 1 MB/s. Raises ClientError (see UploadArtifact in the proto for each status)."""
        from archsearch.server import _artifact_client

        path = Path(path)
        artifact = _artifact_client.upload(self, lease_id, path, name or path.name, timeout_s)
        return artifact.artifact_id

    def download_artifact(
        self,
        study_name: str,
        trial_number: int,
        name: str,
        dest_path: str | Path,
        artifact_id: str = "",
        timeout_s: float | None = None,
    ) -> pb.Artifact:
        """Downloads an artifact of a trial (by ``name``, or by ``artifact_id`` with an empty
        name) into ``dest_path``, which appears only once the bytes matched the sha256
        recorded at upload; returns its description. Raises ClientError (DATA_LOSS on a
        mismatch; see DownloadArtifact in the proto)."""
        from archsearch.server import _artifact_client

        request = pb.DownloadArtifactRequest(
            study_name=study_name, trial_number=trial_number, name=name, artifact_id=artifact_id
        )
        return _artifact_client.download(self, request, Path(dest_path), timeout_s)

    def list_artifacts(self, study_name: str, trial_number: int) -> list[pb.Artifact]:
        """The artifacts of a trial, sorted by name."""
        resp = self._call(
            self.stub.ListArtifacts,
            pb.ListArtifactsRequest(study_name=study_name, trial_number=trial_number),
        )
        return list(resp.artifacts)

    def find_artifact(self, study_name: str, name: str, limit: int = 0) -> pb.FindArtifactResponse:
        """The lowest-numbered trial of a study holding a whole upload named ``name``
        (``trial_number``) and that artifact; with ``limit`` > 0, ``holders`` lists up to that
        many holding trials, lowest-numbered first. Raises ClientError: NOT_FOUND for an
        unknown study or when no trial holds one; INVALID_ARGUMENT for an empty study, a bad
        name or a limit outside [0, 1000]."""
        return self._call(
            self.stub.FindArtifact,
            pb.FindArtifactRequest(study_name=study_name, name=name, limit=limit),
        )


def trainer_info_to_pb(info: TrainerInfo) -> pb.TrainerInfo:
    """The wire form of a trainer's metadata (the server reads it back and validates it)."""
    return pb.TrainerInfo(
        name=info.name,
        description=info.description,
        spaces=info.spaces,
        task_metrics=info.task_metrics,
        metrics=info.metrics,
        cost_metrics=info.cost_metrics,
        multi_task_metrics=info.multi_task_metrics,
        multi_task=info.multi_task,
        required_space_options=dict(info.required_space_options),
        labelled_metrics=info.labelled_metrics,
        data_fields=info.data_fields,
    )
