"""A task teacher's fine-tuning (what ``init: "teacher"`` and ``distill`` students need first)
stops with the trial that asked for it and continues on the next trial that needs the same
teacher, on this machine or on one that shares no folder, to the same teacher weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _checks import Checks
from _fake_artifacts import FakeServer
from _tiny import distill_candidate, save_tiny_teacher

from archsearch.spaces import Candidate, get_task
from archsearch.worker import TrainContext, TrialStopped
from archsearch.worker._bert_trainer import BertTrainer
from archsearch.worker._teacher_cache import TeacherCache
from archsearch.worker._teacher_training import teacher_progress_artifact

#: WNLI's 635 training pairs in batches of 32 for one epoch: 20 teacher steps.
TEACHER_STEPS = 20


def trainer() -> BertTrainer:
    made = BertTrainer()
    made.teacher_overrides["wnli"] = {"epochs": 1.0, "max_seq_length": 32, "batch_size": 32}
    return made


def use_machine(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """A machine with its own (empty) teacher cache and checkpoint folder."""
    monkeypatch.setenv("ARCHSEARCH_CACHE_DIR", str(root / "cache"))
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(root / "checkpoints"))


def cached_teacher(teacher: str) -> dict[str, torch.Tensor]:
    task = get_task("wnli")
    model = trainer().teacher_for(task, teacher, torch.device("cpu"))
    return model.state_dict()


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def teacher(tmp_path: Path) -> str:
    return save_tiny_teacher(tmp_path / "teacher")


@pytest.fixture
def student(teacher: str) -> Candidate:
    return distill_candidate(teacher, init="teacher", distill={"mode": "logits"})


def uninterrupted(
    student: Candidate, teacher: str, monkeypatch: pytest.MonkeyPatch, root: Path
) -> tuple[dict[str, float], dict[str, torch.Tensor], int]:
    """The student's metrics, the teacher's weights and the trial's stop checks, trained
    without a stop on a fresh machine."""
    use_machine(monkeypatch, root)
    checks = Checks()
    result = trainer().train(student, TrainContext(should_stop=checks))
    return result.metrics, cached_teacher(teacher), checks.calls


def progress_folders(root: Path) -> list[Path]:
    return sorted((root / "checkpoints" / "progress" / "teacher").glob("*"))


def test_a_stopped_teacher_fine_tuning_continues_on_the_next_trial(
    student: Candidate, teacher: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    metrics, weights, whole_checks = uninterrupted(student, teacher, monkeypatch, tmp_path / "a")

    use_machine(monkeypatch, tmp_path / "b")
    # Check 1 is the trial's own before it starts; check 7 comes inside the teacher's step 6.
    with pytest.raises(TrialStopped):
        trainer().train(student, TrainContext(should_stop=Checks(stop_at=7)))
    (folder,) = progress_folders(tmp_path / "b")
    assert (folder / "progress.pt").exists()
    assert not TeacherCache().contains(folder.name)  # no half-trained teacher is cached

    checks = Checks()
    again = trainer().train(student, TrainContext(should_stop=checks))
    assert whole_checks - checks.calls == 5  # the 5 steps it had done are not trained again
    assert same_weights(cached_teacher(teacher), weights)
    assert again.metrics["accuracy"] == metrics["accuracy"]
    assert not folder.exists()  # the finished fine-tuning leaves no progress behind


def test_a_teacher_stopped_on_one_machine_continues_on_another_through_the_server(
    student: Candidate, teacher: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, weights, whole_checks = uninterrupted(student, teacher, monkeypatch, tmp_path / "a")

    server = FakeServer()
    use_machine(monkeypatch, tmp_path / "pod-a")
    with pytest.raises(TrialStopped):
        trainer().train(student, server.context(0, should_stop=Checks(stop_at=12)))
    (folder,) = progress_folders(tmp_path / "pod-a")
    assert (0, teacher_progress_artifact(folder.name)) in server.files

    use_machine(monkeypatch, tmp_path / "pod-b")  # another trial, on an empty disk
    checks = Checks()
    trainer().train(student, server.context(1, should_stop=checks))
    assert whole_checks - checks.calls == 10  # stopped inside step 11
    assert same_weights(cached_teacher(teacher), weights)


def test_without_saving_a_stopped_teacher_starts_over(
    student: Candidate, teacher: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, weights, whole_checks = uninterrupted(student, teacher, monkeypatch, tmp_path / "a")

    use_machine(monkeypatch, tmp_path / "b")
    made = trainer()
    made.save_minutes = 0
    with pytest.raises(TrialStopped):
        made.train(student, TrainContext(should_stop=Checks(stop_at=7)))
    assert progress_folders(tmp_path / "b") == []
    assert get_task("wnli").id not in made.teacher_metrics

    checks = Checks()
    made.train(student, TrainContext(should_stop=checks))
    assert checks.calls == whole_checks  # every teacher step again
    assert same_weights(cached_teacher(teacher), weights)
