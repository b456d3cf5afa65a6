"""A supernet job handed back mid-training continues where it was on its retry, through the real
service: one ``archsearch worker --trainer autodistil`` process is sent SIGTERM while it trains
the study's supernet (the way SLURM preemption or a Kubernetes drain ends a worker); it saves
the job's progress, uploads it to the server and hands the trial back. A second worker with
its own, empty checkpoint folder (another pod) takes the retry, downloads the progress, trains
only the remaining steps, and the study ends as usual."""

from __future__ import annotations

from pathlib import Path

from _autodistil import needs_autodistil_trainer
from _procs import Proc, ServerProc, hand_back_when, launch, load_trials, pod_worker, wait_study
from optuna.trial import TrialState

from archsearch.server._trial_writes import PROGRESS_STEP_ATTR
from archsearch.server.client import SearchClient

STEPS = 60  # reported every 3 steps
SPEC = {
    "name": "resume",
    "space": "autodistil",
    "loop": "autodistil",
    "trainer": "autodistil",
    "n_trials": 5,
    "space_options": {
        "subspaces": [
            {"name": "tiny", "layers": [1 / 6], "heads": [2 / 12, 4 / 12], "mlp_ratio": [2.0]}
        ],
        "seq_len": 32,
    },
    "loop_options": {
        "top_n": 1,
        "supernet": {"steps": STEPS, "batch_size": 8, "max_seq_length": 32},
        "rank": {"proxy_steps": 4, "heldout": 16},
    },
    "recipe": {"max_steps": 4, "eval_every": 4, "batch_size": 8, "max_seq_length": 32},
    "data": {"task": "sst2", "train_subset": 64, "eval_subset": 32},
}

pytestmark = needs_autodistil_trainer


def _supernets(storage: str) -> list:
    return [
        t
        for t in load_trials(storage, "resume")
        if (t.user_attrs.get("candidate") or {}).get("kind") == "supernet"
    ]


def test_a_handed_back_supernet_job_resumes_on_another_worker(
    tmp_path: Path, procs: list[Proc]
) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    server = ServerProc(storage, tmp_path / "server.log", lease=20, heartbeat=1).start()
    procs.append(server)
    launch(server.address, SPEC, tmp_path)
    first = pod_worker(server.address, "autodistil", tmp_path, "first").start()
    procs.append(first)
    hand_back_when(  # it saves the progress (not due for 10 minutes) and hands back
        first,
        # a supernet job's reports are its progress, not intermediate values of the objective
        lambda: any(PROGRESS_STEP_ATTR in t.user_attrs for t in _supernets(storage)),
        300,
        "the supernet job's first report (first.log)",
    )

    trials = _supernets(storage)
    (handed_back,) = [t for t in trials if t.state == TrialState.FAIL]  # its retry waits
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert handed_back.intermediate_values == {}
    stopped_at = handed_back.user_attrs[PROGRESS_STEP_ATTR]  # its last report
    assert stopped_at < STEPS

    procs.append(pod_worker(server.address, "autodistil", tmp_path, "second").start())
    with SearchClient(server.address) as client:
        wait_study(client, "resume", 400, procs)

    done = [t for t in _supernets(storage) if t.state == TrialState.COMPLETE]
    assert len(done) == 1, [(t.number, t.state.name) for t in _supernets(storage)]
    (retry,) = done
    assert retry.user_attrs["info"]["worker_id"] == "second"
    resumed = int(retry.user_attrs["info"]["resumed_from_step"])
    assert stopped_at <= resumed < STEPS  # saved when it stopped, at or after its last report
    assert retry.user_attrs[PROGRESS_STEP_ATTR] == STEPS and retry.intermediate_values == {}
    assert retry.user_attrs["info"]["checkpoint"].startswith(str(tmp_path / "second"))
    second_log = (tmp_path / "second.log").read_text()
    assert "progress of trial resume:0 downloaded" in second_log
    assert f"continues at step {resumed} " in second_log  # the retry trained only the rest
    # The finished job cleared its progress.
    assert not any((tmp_path / "second" / "autodistil" / "progress").glob("*/progress.pt"))
