"""A stopped training job of the lora and bert trainers continues on its next attempt, on the
same machine or on one that shares no folder (through the server's artifacts), and ends with
the metrics of an uninterrupted job: DyLoRA's rank draws and a curriculum's state included."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from _fake_artifacts import FakeServer
from _tiny import TINY_BERT
from _tiny_lora import lora_candidate

from archsearch.spaces import Candidate
from archsearch.worker import TrainContext, TrialStopped, _task_training
from archsearch.worker._bert_trainer import BertTrainer
from archsearch.worker._lora_trainer import LoraTrainer
from archsearch.worker._task_training import progress_artifact

#: What depends on the training (not on the wall clock): STS-B's correlations move with any
#: change of the weights (accuracy on a tiny model often does not).
SCORES = ("pearson", "pearson@r1", "pearson@r2", "pearson@r3", "pearson@r4")


def stopping(at: int) -> Callable[[], bool]:
    checks = [0]

    def should_stop() -> bool:
        checks[0] += 1
        return checks[0] == at

    return should_stop


def reporting(into: list[int]) -> Callable[[int, float], bool]:
    def report(step: int, value: float) -> bool:
        into.append(step)
        return False

    return report


@pytest.fixture
def dylora() -> Candidate:
    # more draws than ranks: a resumed run with fresh rank draws would train other ranks
    candidate = lora_candidate({"dropout": 0.1}, max_steps=8, eval_every=2)
    return dataclasses.replace(candidate, data={**candidate.data, "task": "stsb"})


def test_a_stopped_dylora_trial_continues_with_the_same_rank_draws(
    dylora: Candidate, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "whole"))
    whole = LoraTrainer().train(dylora, TrainContext())
    assert "resumed_from_step" not in whole.info

    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "stopped"))
    trainer = LoraTrainer()
    with pytest.raises(TrialStopped):  # inside step 6 (one check a step, one per report)
        trainer.train(dylora, TrainContext(should_stop=stopping(9)))
    folder = tmp_path / "stopped" / "progress" / "lora" / dylora.fingerprint() / "stsb"
    assert (folder / "progress.pt").exists()

    steps: list[int] = []
    again = trainer.train(
        dylora, TrainContext(report=reporting(steps), intermediate_metric="pearson")
    )
    assert again.info["resumed_from_step"] == "5"
    assert steps == [2, 4, 6, 8]  # what was reported before, then the rest
    assert {k: again.metrics[k] for k in SCORES} == {k: whole.metrics[k] for k in SCORES}
    assert not folder.exists()


def test_workers_that_share_no_folder_pass_a_jobs_progress_through_the_server(
    dylora: Candidate, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "whole"))
    whole = LoraTrainer().train(dylora, TrainContext())

    server = FakeServer()
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "pod-a"))
    with pytest.raises(TrialStopped):  # a drained pod
        LoraTrainer().train(dylora, server.context(0, should_stop=stopping(9)))
    name = progress_artifact("lora", dylora, "stsb")
    assert (0, name) in server.files

    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "pod-b"))  # an empty disk
    again = LoraTrainer().train(dylora, server.context(1))
    assert again.info["resumed_from_step"] == "5"
    assert {k: again.metrics[k] for k in SCORES} == {k: whole.metrics[k] for k in SCORES}


def stopped_on_pod_a(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[Candidate, FakeServer]:
    """TWO_TASKS with kept checkpoints, stopped a few steps into mrpc (the second task) on
    pod A, whose disk is ``tmp_path / "pod-a"``."""
    kept = dataclasses.replace(TWO_TASKS, recipe={**TWO_TASKS.recipe, "keep_checkpoint": True})
    server = FakeServer()
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "pod-a"))
    with pytest.raises(TrialStopped):
        BertTrainer().train(kept, server.context(0, should_stop=stopping(13)))
    return kept, server


def test_a_finished_tasks_kept_checkpoint_comes_through_the_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kept, server = stopped_on_pod_a(monkeypatch, tmp_path)
    written = tmp_path / "pod-a" / kept.fingerprint() / "stsb"
    prefix = f"done-bert-{kept.fingerprint()}-stsb"
    shared = {name for n, name in server.files if n == 0 and name.startswith(prefix)}
    files = sorted(p.name for p in written.iterdir())
    assert "model.safetensors" in files
    assert shared == {f"{prefix}.pt", *(f"{prefix}--{f}" for f in files)}
    contents = {f: (written / f).read_bytes() for f in files}
    shutil.rmtree(tmp_path / "pod-a")  # pod A is gone, with its disk

    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "pod-b"))  # an empty disk
    trained = spy_on_tasks(monkeypatch)
    again = BertTrainer().train(kept, server.context(1))
    assert trained == ["mrpc"]  # stsb, checkpoint and all, came through the server
    here = Path(again.info["stsb.checkpoint"])
    assert here == tmp_path / "pod-b" / kept.fingerprint() / "stsb"
    assert {f: (here / f).read_bytes() for f in files} == contents
    # and the trial's end uploads it as any kept checkpoint (what `archsearch fetch` reads)
    assert (1, "checkpoint-stsb--model.safetensors") in server.files


def test_a_finished_task_whose_checkpoint_cannot_come_is_trained_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kept, server = stopped_on_pod_a(monkeypatch, tmp_path)
    for key in [k for k in server.files if k[1].endswith("--model.safetensors")]:
        del server.files[key]  # lost: the outcome says what to fetch, the fetch fails
    shutil.rmtree(tmp_path / "pod-a")
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "pod-b"))
    trained = spy_on_tasks(monkeypatch)
    again = BertTrainer().train(kept, server.context(1))
    assert trained == ["stsb", "mrpc"]
    assert Path(again.info["stsb.checkpoint"]).is_dir()


def test_without_saving_a_stopped_trial_starts_over(
    dylora: Candidate, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path))
    trainer = LoraTrainer.from_options({"save_minutes": 0})
    with pytest.raises(TrialStopped):
        trainer.train(dylora, TrainContext(should_stop=stopping(9)))
    assert not (tmp_path / "progress").exists()
    assert "resumed_from_step" not in trainer.train(dylora, TrainContext()).info


def test_a_stopped_curriculum_trial_continues_with_its_schedule(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    curriculum = {"method": "competency", "difficulty": "length", "c0": 0.2, "min_examples": 8}
    candidate = Candidate(
        space="bert",
        architecture=TINY_BERT,
        recipe={"max_steps": 10, "batch_size": 4, "max_seq_length": 32, "eval_every": 5},
        data={"task": "sst2", "train_subset": 48, "eval_subset": 16, "curriculum": curriculum},
    )
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "whole"))
    whole = BertTrainer().train(candidate, TrainContext())

    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "stopped"))
    trainer = BertTrainer()
    with pytest.raises(TrialStopped):
        trainer.train(candidate, TrainContext(should_stop=stopping(9)))
    again = trainer.train(candidate, TrainContext())
    assert 0 < int(again.info["resumed_from_step"]) < 10
    assert again.metrics["accuracy"] == whole.metrics["accuracy"]
    assert again.info["curriculum_trace"] == whole.info["curriculum_trace"]


#: A trial of two tasks: STS-B, then MRPC.
TWO_TASKS = Candidate(
    space="bert",
    architecture=TINY_BERT,
    recipe={"max_steps": 6, "batch_size": 4, "max_seq_length": 32, "eval_every": 3},
    data={"task": "stsb", "tasks": ["stsb", "mrpc"], "train_subset": 32, "eval_subset": 16},
)


def spy_on_tasks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tasks ``train_task`` trains from now on, in order."""
    trained: list[str] = []
    real = _task_training.train_task

    def spy(trainer, plan, reports, *args, **kwargs):  # type: ignore[no-untyped-def]
        trained.append(reports.task.id)
        return real(trainer, plan, reports, *args, **kwargs)

    monkeypatch.setattr(_task_training, "train_task", spy)
    return trained


def test_a_stopped_multi_task_trial_trains_only_the_tasks_it_had_not_finished(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    candidate = TWO_TASKS
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "whole"))
    whole_steps: list[int] = []
    whole = BertTrainer().train(candidate, TrainContext(report=reporting(whole_steps)))

    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "stopped"))
    trainer = BertTrainer()
    with pytest.raises(TrialStopped):  # a few steps into mrpc, the second task
        trainer.train(candidate, TrainContext(should_stop=stopping(13)))
    folder = tmp_path / "stopped" / "progress" / "bert" / candidate.fingerprint()
    assert (folder / "stsb.done.pt").exists() and (folder / "mrpc" / "progress.pt").exists()

    trained = spy_on_tasks(monkeypatch)
    steps: list[int] = []
    with caplog.at_level("INFO", logger="archsearch.worker"):
        again = trainer.train(candidate, TrainContext(report=reporting(steps)))
    assert trained == ["mrpc"]  # stsb's outcome was kept
    assert "task stsb was finished by an earlier attempt" in caplog.text
    assert again.info["mrpc.resumed_from_step"].isdigit()
    assert steps == whole_steps  # both tasks' curves, as one trial reports them
    for name in ("stsb.pearson", "mrpc.accuracy", "mrpc.f1"):
        assert again.metrics[name] == whole.metrics[name], name
    assert not folder.exists()  # the trial ended: nothing kept


def test_pods_that_share_no_folder_pass_finished_tasks_through_the_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "whole"))
    whole = BertTrainer().train(TWO_TASKS, TrainContext())

    server = FakeServer()
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "pod-a"))
    with pytest.raises(TrialStopped):  # a few steps into mrpc, the second task
        BertTrainer().train(TWO_TASKS, server.context(0, should_stop=stopping(13)))
    fingerprint = TWO_TASKS.fingerprint()
    assert (0, f"done-bert-{fingerprint}-stsb.pt") in server.files
    assert (0, progress_artifact("bert", TWO_TASKS, "mrpc")) in server.files

    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "pod-b"))  # an empty disk
    trained = spy_on_tasks(monkeypatch)
    again = BertTrainer().train(TWO_TASKS, server.context(1))
    assert trained == ["mrpc"]  # stsb's outcome came through the server
    assert again.info["mrpc.resumed_from_step"].isdigit()
    for name in ("stsb.pearson", "mrpc.accuracy", "mrpc.f1"):
        assert again.metrics[name] == whole.metrics[name], name
