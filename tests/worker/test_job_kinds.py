"""A worker refuses a job kind its trainer does not do (``Candidate.kind``), with a reason
that names the kind, the trainer and what it does; a training candidate runs as before."""

from __future__ import annotations

from typing import Any

from archsearch.spaces import Candidate
from archsearch.v1 import archsearch_pb2 as pb
from archsearch.worker import TrainContext, Trainer, TrainResult
from archsearch.worker._runner import Worker


class _Client:
    """Records what the worker tells the server (only the calls this path makes)."""

    target = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def fail(self, *args: Any) -> None:
        self.calls.append(("fail", args))

    def complete(self, *args: Any) -> pb.CompleteTrialResponse:
        self.calls.append(("complete", args))
        return pb.CompleteTrialResponse()

    def heartbeat(self, *args: Any) -> pb.HeartbeatResponse:
        return pb.HeartbeatResponse(deadline_unix=0.0)

    def download_artifact(self, *args: Any) -> None:
        raise AssertionError("not used")


class _Trainer(Trainer):
    name = "kinds-test"

    def __init__(self) -> None:
        self.trained = 0

    def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        self.trained += 1
        return TrainResult(metrics={"accuracy": 0.5})


def _grant(kind: str) -> pb.AcquireTrialResponse:
    cand = Candidate(space="bert", architecture={"num_hidden_layers": 2}, kind=kind)
    return pb.AcquireTrialResponse(
        has_trial=True,
        lease=pb.Lease(lease_id="1.0.x", study_name="s", trial_number=0),
        candidate_json=cand.to_json(),
        trainer="kinds-test",
        objective_metrics=["accuracy"],
    )


def test_an_unknown_job_kind_fails_the_trial_with_the_reason() -> None:
    client, trainer = _Client(), _Trainer()
    worker = Worker(client, {"kinds-test": trainer})  # type: ignore[arg-type]
    worker.run_trial(_grant("supernet"))
    assert trainer.trained == 0
    ((call, (lease, why, retryable)),) = client.calls
    assert call == "fail" and lease == "1.0.x" and retryable is False
    assert "'supernet'" in why and "kinds-test trainer" in why and "train" in why


def test_a_training_job_is_trained() -> None:
    client, trainer = _Client(), _Trainer()
    worker = Worker(client, {"kinds-test": trainer})  # type: ignore[arg-type]
    worker.run_trial(_grant("train"))
    assert trainer.trained == 1 and client.calls[0][0] == "complete"


def test_the_kind_round_trips_and_training_candidates_keep_their_fingerprint() -> None:
    plain = Candidate(space="bert", architecture={"a": 1})
    assert "kind" not in plain.to_dict()  # stored candidates and fingerprints as before
    scored = Candidate.from_json(
        Candidate(space="bert", architecture={"a": 1}, kind="score").to_json()
    )
    assert scored.kind == "score" and scored.fingerprint() != plain.fingerprint()
