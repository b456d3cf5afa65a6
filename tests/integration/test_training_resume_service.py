"""A DyLoRA trial handed back mid-training continues where it was on its retry, through the real
service: one ``archsearch worker --trainer lora`` process is sent SIGTERM while it fine-tunes
(the way SLURM preemption or a Kubernetes drain ends a worker); it saves the job's progress,
uploads it and hands the trial back. A second worker with its own, empty checkpoint folder
takes the retry, downloads the progress, reports the values reported before again, trains only
the remaining steps, and the study ends with one trial per rank as usual."""

from __future__ import annotations

from pathlib import Path

from _procs import Proc, ServerProc, hand_back_when, launch, load_trials, pod_worker, wait_study
from _tiny_lora import tiny_base
from optuna.trial import TrialState

from archsearch.server._rank_trials import is_rank_trial
from archsearch.server.client import SearchClient

STEPS, EVERY, R_MAX = 1500, 25, 2


def _trained(storage: str) -> list:
    return [t for t in load_trials(storage, "resume") if not is_rank_trial(t)]


def test_a_handed_back_dylora_trial_resumes_on_another_worker(
    tmp_path: Path, procs: list[Proc]
) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    server = ServerProc(storage, tmp_path / "server.log", lease=20, heartbeat=1).start()
    procs.append(server)
    spec = {
        "name": "resume",
        "space": "lora",
        "trainer": "lora",
        "loop": "random",
        "n_trials": 1,
        "space_options": {"r_max": [R_MAX], "alpha": [8], "learning_rate": 5e-3},
        "recipe": {
            "lora": {"model": tiny_base()},
            "max_steps": STEPS,
            "eval_every": EVERY,
            "batch_size": 8,
            "max_seq_length": 32,
            "measure_latency": False,
        },
        "data": {"task": "sst2", "train_subset": 64, "eval_subset": 16},
    }
    launch(server.address, spec, tmp_path)
    first = pod_worker(server.address, "lora", tmp_path, "first").start()
    procs.append(first)
    hand_back_when(  # it saves the progress (not due for 10 minutes) and hands back
        first,
        lambda: any(len(t.intermediate_values) >= 2 for t in _trained(storage)),
        120,
        "the trial's second report (first.log)",
    )

    (handed_back,) = [t for t in _trained(storage) if t.state == TrialState.FAIL]
    stopped_at = max(handed_back.intermediate_values)
    assert stopped_at < STEPS, "the training ended before SIGTERM: raise STEPS"

    procs.append(pod_worker(server.address, "lora", tmp_path, "second").start())
    with SearchClient(server.address) as client:
        study = wait_study(client, "resume", 240, procs)
    assert study.n_complete == 1 + R_MAX  # the training trial and one per rank

    (retry,) = [t for t in _trained(storage) if t.state == TrialState.COMPLETE]
    info = retry.user_attrs["info"]
    assert info["worker_id"] == "second"
    resumed = int(info["resumed_from_step"])
    assert stopped_at <= resumed < STEPS  # saved when it stopped, at or after its last report
    # the values reported before the stop, sent again, then the rest: one curve, as if whole
    assert sorted(retry.intermediate_values) == list(range(EVERY, STEPS + 1, EVERY))
    for step in handed_back.intermediate_values:
        assert retry.intermediate_values[step] == handed_back.intermediate_values[step]
    second_log = (tmp_path / "second.log").read_text()
    assert "progress of trial resume:0 downloaded" in second_log
    assert "continues at step" in second_log
    assert not any((tmp_path / "second" / "progress").rglob("progress.pt"))  # cleared
