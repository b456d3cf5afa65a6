"""A supernet job's saved progress: a stopped or lost job continues where it was, exactly."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from _fake_artifacts import FakeServer
from _tiny import save_tiny_teacher
from _tiny_supernet import STUDENTS, random_batches, tiny_teacher
from transformers import BertModel

from archsearch.spaces import Candidate
from archsearch.spaces._subspaces import SubSpace
from archsearch.worker import TrainContext, TrialStopped
from archsearch.worker._autodistil_trainer import AutodistilTrainer
from archsearch.worker._progress import ProgressFile, check_save_minutes
from archsearch.worker._supernet import Supernet
from archsearch.worker._supernet_resume import artifact_name, progress_folder
from archsearch.worker._supernet_training import SupernetRecipe, SupernetTraining

RECIPE = SupernetRecipe(steps=6, lr=3e-3, seed=3)


def training(recipe: SupernetRecipe = RECIPE) -> SupernetTraining:
    teacher_bert = tiny_teacher()
    return SupernetTraining(
        Supernet.from_teacher(teacher_bert),
        Supernet.from_teacher(teacher_bert),
        STUDENTS,
        random_batches(),
        recipe,
    )


def weights(run: SupernetTraining) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in run.supernet.state_dict().items()}


def test_a_restored_training_ends_exactly_where_the_uninterrupted_one_does(
    tmp_path: Path,
) -> None:
    whole = training()
    while not whole.done:
        whole.train_step()

    first = training()
    for _ in range(2):
        first.train_step()
    ProgressFile(tmp_path).save(first, seconds=1.0)
    torch.rand(5)  # what the process draws after the save must not change the resumed steps
    second = training()
    torch.manual_seed(1234)  # another process: other random states until the restore
    assert ProgressFile(tmp_path).restore(second) == {"seconds": 1.0, "step": 2}
    assert second.step == 2 and second.losses == first.losses
    while not second.done:
        second.train_step()

    assert second.losses == whole.losses  # the same batches, sandwiches and dropout draws
    for name, value in weights(whole).items():
        assert torch.equal(weights(second)[name], value), name
    assert not second.supernet.training  # eval mode once done, as the uninterrupted one


def test_progress_that_does_not_fit_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = training(SupernetRecipe(steps=2, lr=3e-3))
    for _ in range(2):
        other.train_step()
    ProgressFile(tmp_path).save(other, seconds=0.5)
    longer = training(SupernetRecipe(steps=1, lr=3e-3))  # 2 saved steps > 1
    with caplog.at_level(logging.WARNING, logger="archsearch.worker"):
        assert ProgressFile(tmp_path).restore(longer) == {}
    assert longer.step == 0 and "does not fit" in caplog.text

    # Another teacher's supernet: some tensors match, the rest do not; nothing is loaded.
    wider = SupernetTraining(
        Supernet.from_teacher(tiny_teacher(seed=5)),
        Supernet.from_teacher(tiny_teacher(seed=5)),
        STUDENTS,
        random_batches(),
        SupernetRecipe(steps=2, lr=3e-3),
    )
    wider.train_step()
    state = wider.state_dict()
    state["supernet"] = {k: v for k, v in state["supernet"].items() if "layer.3" not in k}
    fresh = training()
    before = weights(fresh)
    with pytest.raises(ValueError, match="does not fit this supernet"):
        fresh.load_state_dict(state)
    assert all(torch.equal(weights(fresh)[k], v) for k, v in before.items())
    assert fresh.step == 0

    (tmp_path / "progress.pt").write_bytes(b"torn write")
    fresh = training()
    assert ProgressFile(tmp_path).restore(fresh) == {}
    assert fresh.step == 0


def test_saves_are_spaced_by_the_minutes_and_zero_never_saves(tmp_path: Path) -> None:
    now = [0.0]
    progress = ProgressFile(tmp_path, save_minutes=2, clock=lambda: now[0])
    run = training()
    run.train_step()
    now[0] = 119.0
    assert not progress.due()
    now[0] = 120.0
    assert progress.due()
    progress.save(run, seconds=3.0)
    assert not progress.due() and progress.path.exists()
    progress.clear()
    assert not tmp_path.exists()

    never = ProgressFile(tmp_path, save_minutes=0, clock=lambda: 1e9)
    assert not never.due()
    never.save(run, seconds=3.0)
    assert not tmp_path.exists()


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "ten", None, True])
def test_bad_save_minutes_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="--save-minutes"):
        check_save_minutes(bad)
    if bad is not None:
        with pytest.raises(ValueError, match="--save-minutes"):
            AutodistilTrainer.from_options({"save_minutes": bad})
    assert AutodistilTrainer.from_options({}).save_minutes == 10.0
    assert check_save_minutes("0.5") == 0.5


# ----------------------------------------------------------------------------- the job

SUBSPACE = SubSpace("t", (0.5, 1.0), (0.5, 1.0), None, (2.0,)).to_dict()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture()
def candidate(teacher: str, tmp_path: Path) -> Candidate:
    text = tmp_path / "text.txt"
    words = ["the", "a", "film", "movie", "good", "bad", "great", "dull", "story", "plot"]
    text.write_text(
        "\n".join(" ".join(words[(i * k) % 10] for k in range(1, 9)) for i in range(60)) + "\n"
    )
    return Candidate(
        space="autodistil",
        kind="supernet",
        architecture={"teacher": teacher, "subspace": SUBSPACE},
        recipe={"supernet": {"steps": 6, "batch_size": 8, "max_seq_length": 16, "lr": 1e-3}},
        data={"task": "sst2", "distill_text": str(text)},
    )


def _stopping(checks: int) -> Callable[[], bool]:
    """``should_stop`` of a trial asked to end at its ``checks``-th check (a SIGTERM, say)."""
    seen = [0]

    def should_stop() -> bool:
        seen[0] += 1
        return seen[0] >= checks

    return should_stop


def _stop_after(checks: int) -> TrainContext:
    return TrainContext(should_stop=_stopping(checks))


def test_a_stopped_supernet_job_continues_on_its_next_attempt(
    candidate: Candidate, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "uninterrupted"))
    whole = AutodistilTrainer().train(candidate, TrainContext())
    assert "resumed_from_step" not in whole.info
    expected = BertModel.from_pretrained(whole.info["checkpoint"]).state_dict()

    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "stopped"))
    trainer = AutodistilTrainer()
    with pytest.raises(TrialStopped):
        # Two checks a step (its own and the report's): the 7th comes after the 4th step.
        trainer.train(candidate, _stop_after(checks=7))
    saved = progress_folder(candidate.fingerprint())
    assert (saved / "progress.pt").exists()

    reports: list[int] = []

    def report(step: int, value: float) -> bool:
        reports.append(step)
        return False

    again = trainer.train(candidate, TrainContext(report=report))
    assert again.info["resumed_from_step"] == "4"
    assert reports == [5, 6]  # only the remaining steps
    assert again.metrics["relation_loss"] == pytest.approx(whole.metrics["relation_loss"])
    assert again.metrics["train_seconds"] > 0
    got = BertModel.from_pretrained(again.info["checkpoint"]).state_dict()
    for name, value in expected.items():
        assert torch.equal(got[name], value), name
    assert not saved.exists()  # a finished job leaves no progress behind


def test_without_saving_a_stopped_job_starts_over(
    candidate: Candidate, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path))
    trainer = AutodistilTrainer(save_minutes=0)
    with pytest.raises(TrialStopped):
        trainer.train(candidate, _stop_after(checks=3))
    assert not progress_folder(candidate.fingerprint()).exists()
    assert "resumed_from_step" not in trainer.train(candidate, TrainContext()).info


def test_a_lost_job_continues_from_its_last_periodic_save(
    candidate: Candidate, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path))
    trainer = AutodistilTrainer(save_minutes=1e-9)  # a save after every step
    checks = [0]

    def crash() -> bool:  # the machine goes away during the 3rd step's report: no save then
        checks[0] += 1
        if checks[0] == 6:
            raise RuntimeError("machine lost")
        return False

    with pytest.raises(RuntimeError, match="machine lost"):
        trainer.train(candidate, TrainContext(should_stop=crash))
    again = trainer.train(candidate, TrainContext())
    assert again.info["resumed_from_step"] == "2"


def test_workers_that_share_no_folder_pass_the_progress_through_the_server(
    candidate: Candidate, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "uninterrupted"))
    whole = AutodistilTrainer().train(candidate, TrainContext())
    expected = BertModel.from_pretrained(whole.info["checkpoint"]).state_dict()

    server = FakeServer()
    name = artifact_name(candidate.fingerprint())
    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "pod-a"))
    with pytest.raises(TrialStopped):  # a drained pod: stopped after its 4th step
        AutodistilTrainer().train(candidate, server.context(0, should_stop=_stopping(7)))
    assert (0, name) in server.files  # uploaded on its own trial before handing it back

    monkeypatch.setenv("ARCHSEARCH_CHECKPOINT_DIR", str(tmp_path / "pod-b"))  # an empty disk
    again = AutodistilTrainer().train(candidate, server.context(1))
    assert again.info["resumed_from_step"] == "4"
    got = BertModel.from_pretrained(again.info["checkpoint"]).state_dict()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_the_newer_of_the_folder_and_the_server_is_used(tmp_path: Path) -> None:
    server = FakeServer()
    run = training()
    run.train_step()
    pod = ProgressFile(tmp_path / "pod")
    pod.save(run, 1.0, server.context(0))  # the folder: trial 0's, at step 1
    run.train_step()
    elsewhere = ProgressFile(tmp_path / "elsewhere")
    elsewhere.save(run, 2.0, server.context(1))
    elsewhere.share(server.context(1), "p.pt")  # the server: trial 1's, at step 2

    pod.fetch(server.context(2), "p.pt")
    assert pod.restore(training()) == {"seconds": 2.0, "step": 2}  # trial 1's is newer
    calls = len(server.calls)
    pod.fetch(server.context(3), "p.pt")  # the folder now holds trial 1's: nothing to fetch
    assert server.calls[calls:] == ["holders"]

    server.fail["holders"] = OSError("server unreachable")
    fresh = ProgressFile(tmp_path / "fresh")
    fresh.fetch(server.context(4), "p.pt")  # logged; the job starts from its folder
    assert fresh.restore(training()) == {}


def test_progress_further_on_than_the_upload_is_kept_whatever_its_study(tmp_path: Path) -> None:
    # A task teacher's folder is shared by every study on the machine: study "other" got it
    # to step 2; this study's upload is at step 1.
    server = FakeServer()
    run = training()
    run.train_step()
    elsewhere = ProgressFile(tmp_path / "elsewhere")
    elsewhere.save(run, 1.0, server.context(0))
    elsewhere.share(server.context(0), "p.pt")  # this study's upload: step 1
    run.train_step()
    local = ProgressFile(tmp_path / "machine")
    other = TrainContext(study_name="other", trial_number=7)
    local.save(run, 2.0, other)  # another study's, further on

    local.fetch(server.context(1), "p.pt")
    assert local.restore(training()) == {"seconds": 2.0, "step": 2}
    assert not list((tmp_path / "machine").glob(".*download*"))  # the download is removed

    server.files[0, "p.pt"] = b"torn upload"  # an upload that cannot be read changes nothing
    local.fetch(server.context(1), "p.pt")
    assert local.restore(training()) == {"seconds": 2.0, "step": 2}
