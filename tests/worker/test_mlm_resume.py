"""A FlexiBERT candidate's masked-LM pre-training stops with its trial and continues, on the
next trial that needs the same encoder (here, or on a worker that shares no folder), to the
weights and losses of a pre-training that was never stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _checks import Checks
from _fake_artifacts import FakeServer
from _tiny import POSITIONS, VOCAB

from archsearch.spaces import Candidate
from archsearch.worker import TrainContext, TrainResult, TrialStopped
from archsearch.worker._bert_trainer import CHECKPOINT_DIR_ENV, BertTrainer
from archsearch.worker._flexibert_config import FlexiBertConfig
from archsearch.worker._flexibert_model import FlexiBertForMaskedLM
from archsearch.worker._flexibert_pretrain import pretrain_progress_artifact
from archsearch.worker._mlm_pretrain import (
    MlmCorpus,
    MlmPretraining,
    MlmTraining,
    _batches,
    pretrain_mlm,
)
from archsearch.worker._pretrain_cache import PRETRAIN_DIR_ENV
from archsearch.worker._progress import ProgressFile

ARCH = {"l": 2, "o": ["sa", "c"], "p": ["sdp", "5"], "h": [32, 32], "n": [2, 2], "f": [[64], [64]]}
#: Eight sequences in batches of three: an epoch is three batches, so 10 steps cross epochs.
STEPS = 10


def corpus() -> MlmCorpus:
    rows = [np.array([1, *range(5 + i, 12 + 2 * i), 2], dtype=np.int32) for i in range(8)]
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    flat = np.concatenate(rows)
    return MlmCorpus(flat, np.zeros_like(flat, dtype=np.int8), offsets)


def pretrain(
    arch: dict[str, Any] = ARCH,
    context: TrainContext | None = None,
    progress: ProgressFile | None = None,
    steps: int = STEPS,
) -> tuple[MlmPretraining, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = FlexiBertForMaskedLM(FlexiBertConfig(arch, VOCAB, POSITIONS))
    run = MlmTraining(model, corpus(), steps, batch_size=3, learning_rate=3e-3, seed=4)
    done = pretrain_mlm(
        run,
        mask_id=3,
        special_ids=[0, 1, 2, 3],
        context=context,
        progress=progress,
        share_as="shared.pt",
    )
    return done, model.state_dict()


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_batches_from_a_step_are_those_an_unbroken_run_draws_there() -> None:
    whole = _batches(corpus(), 3, 0, torch.device("cpu"), seed=4)
    drawn = [next(whole) for _ in range(11)]
    for start in (0, 2, 3, 7):
        later = _batches(corpus(), 3, 0, torch.device("cpu"), seed=4, start=start)
        for expected in drawn[start:]:
            got = next(later)
            assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_a_stopped_pretraining_continues_to_the_weights_of_an_unbroken_one(
    tmp_path: Path,
) -> None:
    whole, weights = pretrain()
    assert whole.resumed_from is None and len(whole.losses) == STEPS

    progress = ProgressFile(tmp_path / "progress")
    with pytest.raises(TrialStopped):  # the fifth check comes before step 5
        pretrain(context=TrainContext(should_stop=Checks(stop_at=5)), progress=progress)
    assert progress.path.exists()

    checks = Checks()
    again, resumed = pretrain(context=TrainContext(should_stop=checks), progress=progress)
    assert again.resumed_from == 4 and checks.calls == STEPS - 4
    assert again.losses == whole.losses
    assert same_weights(resumed, weights)
    assert again.seconds > 0


def test_progress_that_does_not_fit_is_ignored_and_changes_nothing(tmp_path: Path) -> None:
    other = {**ARCH, "h": [48, 48]}
    progress = ProgressFile(tmp_path / "progress")
    with pytest.raises(TrialStopped):
        pretrain(other, TrainContext(should_stop=Checks(stop_at=5)), progress)

    whole, weights = pretrain()
    again, from_scratch = pretrain(progress=progress)  # another model's progress
    assert again.resumed_from is None and again.losses == whole.losses
    assert same_weights(from_scratch, weights)

    longer, _ = pretrain(progress=progress, steps=STEPS + 2)  # another step count
    assert longer.resumed_from is None


def test_without_progress_a_stop_saves_nothing(tmp_path: Path) -> None:
    progress = ProgressFile(tmp_path / "progress", save_minutes=0)
    with pytest.raises(TrialStopped):
        pretrain(context=TrainContext(should_stop=Checks(stop_at=5)), progress=progress)
    assert not progress.folder.exists()


# ------------------------------------------------------------------- through the trainer

#: 64 SST-2 sentences in batches of 16: 4 pre-training steps per epoch, 6 steps.
PRETRAIN_STEPS = 6


def candidate() -> Candidate:
    return Candidate(
        space="flexibert",
        architecture=ARCH,
        recipe={
            "max_steps": 2,
            "batch_size": 16,
            "max_seq_length": 32,
            "learning_rate": 1e-3,
            "eval_every": 2,
            "seed": 3,
            "measure_latency": False,
            "pretrain_steps": PRETRAIN_STEPS,
        },
        data={"task": "sst2", "train_subset": 64, "eval_subset": 32},
    )


@pytest.fixture(scope="module")
def trainer() -> BertTrainer:
    return BertTrainer()


def use_machine(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """A machine with its own (empty) pre-training cache and checkpoint folder."""
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(root / "checkpoints"))
    monkeypatch.setenv(PRETRAIN_DIR_ENV, str(root / "pretrained"))


def progress_folders(root: Path) -> list[Path]:
    return sorted((root / "checkpoints" / "progress" / "pretrain").glob("*"))


def uninterrupted(
    trainer: BertTrainer, monkeypatch: pytest.MonkeyPatch, root: Path
) -> tuple[TrainResult, int]:
    """The candidate trained without a stop on a fresh machine, and its trial's stop checks."""
    use_machine(monkeypatch, root)
    checks = Checks()
    return trainer.train(candidate(), TrainContext(should_stop=checks)), checks.calls


def test_a_trial_stopped_in_pretraining_continues_it_on_the_next_trial(
    trainer: BertTrainer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    whole, whole_checks = uninterrupted(trainer, monkeypatch, tmp_path / "a")

    use_machine(monkeypatch, tmp_path / "b")
    with pytest.raises(TrialStopped):  # check 1 is the trial's own; check 4 precedes step 3
        trainer.train(candidate(), TrainContext(should_stop=Checks(stop_at=4)))
    (folder,) = progress_folders(tmp_path / "b")
    assert (folder / "progress.pt").exists()
    assert not (tmp_path / "b" / "pretrained").exists() or not any(
        (tmp_path / "b" / "pretrained").iterdir()
    )  # no half-trained encoder is cached

    checks = Checks()
    again = trainer.train(candidate(), TrainContext(should_stop=checks))
    assert whole_checks - checks.calls == 2  # the 2 steps it had done are not trained again
    assert again.metrics["pretrain_loss"] == whole.metrics["pretrain_loss"]
    assert again.metrics["accuracy"] == whole.metrics["accuracy"]
    assert again.metrics["pretrain_cached"] == 0.0
    assert not folder.exists()  # kept in the cache now: no progress left behind


def test_a_pretraining_stopped_on_one_machine_continues_on_another_through_the_server(
    trainer: BertTrainer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    whole, whole_checks = uninterrupted(trainer, monkeypatch, tmp_path / "a")

    server = FakeServer()
    use_machine(monkeypatch, tmp_path / "pod-a")
    with pytest.raises(TrialStopped):
        trainer.train(candidate(), server.context(0, should_stop=Checks(stop_at=6)))
    (folder,) = progress_folders(tmp_path / "pod-a")
    assert (0, pretrain_progress_artifact(folder.name)) in server.files

    use_machine(monkeypatch, tmp_path / "pod-b")  # another trial, on an empty disk
    checks = Checks()
    again = trainer.train(candidate(), server.context(1, should_stop=checks))
    assert whole_checks - checks.calls == 4  # stopped before step 5
    assert again.metrics["pretrain_loss"] == whole.metrics["pretrain_loss"]
    assert again.metrics["accuracy"] == whole.metrics["accuracy"]


def test_a_fine_tuning_continued_on_another_machine_does_not_pretrain_again(
    trainer: BertTrainer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    whole, whole_checks = uninterrupted(trainer, monkeypatch, tmp_path / "a")

    server = FakeServer()
    use_machine(monkeypatch, tmp_path / "pod-a")
    # check 1 is the trial's own, 2-7 precede the pre-training steps, 8 fine-tuning step 1
    # and 9 fine-tuning step 2: the fine-tuning keeps step 1
    with pytest.raises(TrialStopped):
        trainer.train(candidate(), server.context(0, should_stop=Checks(stop_at=9)))

    use_machine(monkeypatch, tmp_path / "pod-b")  # no pre-trained encoder in its cache
    checks = Checks()
    again = trainer.train(candidate(), server.context(1, should_stop=checks))
    assert again.info["resumed_from_step"] == "1"
    assert checks.calls == whole_checks - 1 - PRETRAIN_STEPS  # no pre-training step again
    assert not (tmp_path / "pod-b" / "pretrained").exists()
    assert again.metrics["pretrain_loss"] == whole.metrics["pretrain_loss"]  # restored
    assert again.metrics["accuracy"] == whole.metrics["accuracy"]


def test_fine_tuning_progress_that_cannot_be_read_still_pretrains(
    trainer: BertTrainer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_machine(monkeypatch, tmp_path / "a")
    whole = trainer.train(candidate(), TrainContext())

    use_machine(monkeypatch, tmp_path / "b")
    spec = candidate()
    torn = tmp_path / "b" / "checkpoints" / "progress" / "bert" / spec.fingerprint() / "sst2"
    torn.mkdir(parents=True)
    (torn / "progress.pt").write_bytes(b"not a torch file")
    again = trainer.train(spec, TrainContext())
    assert "resumed_from_step" not in again.info
    assert again.metrics["pretrain_cached"] == 0.0
    assert again.metrics["pretrain_loss"] == whole.metrics["pretrain_loss"]
    assert again.metrics["accuracy"] == whole.metrics["accuracy"]


def test_a_finished_pretraining_is_not_run_again_on_another_machine(
    trainer: BertTrainer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from archsearch.worker._pretrain_sharing import artifact_names

    server = FakeServer()
    use_machine(monkeypatch, tmp_path / "pod-a")
    checks_a = Checks()
    first = trainer.train(candidate(), server.context(0, should_stop=checks_a))
    assert first.metrics["pretrain_cached"] == 0.0
    (entry,) = (tmp_path / "pod-a" / "pretrained").iterdir()
    weights, meta = artifact_names(entry.name)
    assert {(0, weights), (0, meta)} <= set(server.files)

    use_machine(monkeypatch, tmp_path / "pod-b")  # another trial, on an empty disk
    checks_b = Checks()
    again = trainer.train(candidate(), server.context(1, should_stop=checks_b))
    assert again.metrics["pretrain_cached"] == 1.0 and again.metrics["pretrain_seconds"] == 0.0
    assert checks_b.calls == checks_a.calls - PRETRAIN_STEPS  # no pre-training step
    assert again.metrics["pretrain_loss"] == first.metrics["pretrain_loss"]
    assert again.metrics["accuracy"] == first.metrics["accuracy"]
    assert (tmp_path / "pod-b" / "pretrained" / entry.name).is_dir()  # cached there now
    assert (1, meta) not in server.files  # the study holds one copy


def test_a_lost_shared_encoder_is_pretrained_again(
    trainer: BertTrainer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from archsearch.worker._pretrain_sharing import artifact_names

    server = FakeServer()
    use_machine(monkeypatch, tmp_path / "pod-a")
    first = trainer.train(candidate(), server.context(0))
    (entry,) = (tmp_path / "pod-a" / "pretrained").iterdir()
    weights, _ = artifact_names(entry.name)
    server.files[0, weights] = b"not safetensors"  # a damaged copy on the server
    use_machine(monkeypatch, tmp_path / "pod-b")
    again = trainer.train(candidate(), server.context(1))
    assert again.metrics["pretrain_cached"] == 0.0  # pre-trained, to the same encoder
    assert again.metrics["pretrain_loss"] == first.metrics["pretrain_loss"]
