"""BertTrainer on FlexiBERT candidates: fine-tuning, MLM pre-training with its cache, weight
transfer, and what it refuses (tiny models, a few steps on SST-2 slices)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import accuracy_score

from archsearch.spaces import Candidate
from archsearch.spaces._flexibert_overlap import flexibert_parameter_count, weight_overlap
from archsearch.worker import CandidateError, TrainContext, TrainResult
from archsearch.worker._bert_trainer import CHECKPOINT_DIR_ENV, BertTrainer
from archsearch.worker._pretrain_cache import PRETRAIN_DIR_ENV

#: Two layers, two operations, a width change (one projection).
MIXED = {
    "l": 2,
    "o": ["c", "l"],
    "p": ["5", "dft"],
    "h": [64, 128],
    "n": [2, 2],
    "f": [[128], [64, 128]],
}


@pytest.fixture(scope="module")
def trainer() -> BertTrainer:
    return BertTrainer()  # shared: the tokenizer and tokenised slices are cached on it


@pytest.fixture(autouse=True)
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path / "checkpoints"))
    monkeypatch.setenv(PRETRAIN_DIR_ENV, str(tmp_path / "pretrained"))


def candidate(
    architecture: dict[str, Any] | None = None, space: str = "flexibert", **recipe: Any
) -> Candidate:
    return Candidate(
        space=space,
        architecture=architecture or MIXED,
        recipe={
            "max_steps": 2,
            "batch_size": 16,
            "max_seq_length": 32,
            "learning_rate": 1e-3,
            "eval_every": 2,
            "seed": 3,
            "measure_latency": False,
            **recipe,
        },
        data={"task": "sst2", "train_subset": 64, "eval_subset": 32},
    )


REPORTS: list[tuple[int, float]] = []


@pytest.fixture(scope="module")
def kept(trainer: BertTrainer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainResult]:
    """The mixed model trained for 4 steps with its checkpoint kept (a transfer source)."""

    def report(step: int, value: float) -> bool:
        REPORTS.append((step, value))
        return False

    context = TrainContext(report=report, objective_metrics=("accuracy", "params", "flops"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path_factory.mktemp("kept")))
        yield trainer.train(candidate(keep_checkpoint=True, max_steps=4), context)


def test_mixed_model_trains_and_reports(trainer: BertTrainer, kept: TrainResult) -> None:
    result = kept
    assert [step for step, _ in REPORTS] == [2, 4]
    expected = accuracy_score(trainer.last_labels, trainer.last_predictions)
    assert result.metrics["accuracy"] == pytest.approx(expected)
    assert len(trainer.last_predictions) == 32
    vocab = len(trainer.tokenizer)
    assert result.metrics["params"] == flexibert_parameter_count(MIXED, vocab, 512, 2, 2)
    # The embeddings block: (vocab + 512 + 2) * 64 + LayerNorm 128.
    embeddings = (vocab + 512 + 2) * 64 + 128
    assert result.metrics["params_no_embeddings"] == result.metrics["params"] - embeddings
    assert result.metrics["flops"] > 0
    assert set(BertTrainer.metric_names("sst2", measure_latency=False)) == set(result.metrics)
    assert all(math.isfinite(v) for v in result.metrics.values())
    folder = Path(result.info["checkpoint"])
    assert (folder / "model.safetensors").is_file()
    config = json.loads((folder / "flexibert_config.json").read_text())
    assert config["architecture"] == MIXED and config["num_labels"] == 2
    note = json.loads((folder / "archsearch_checkpoint.json").read_text())
    assert note["candidate"]["space"] == "flexibert"


def test_flexibert_small_candidates_are_converted(trainer: BertTrainer) -> None:
    small = {"l": 2, "a": [2, 4], "h": [128, 128], "s": ["wma", "sdp"], "f": [256, 128]}
    result = trainer.train(candidate(small, space="flexibert-small"), TrainContext())
    converted = {
        "l": 2,
        "o": ["sa", "sa"],
        "p": ["wma", "sdp"],
        "h": [128, 128],
        "n": [2, 4],
        "f": [[256], [128]],
    }
    expected = flexibert_parameter_count(converted, len(trainer.tokenizer), 512, 2, 2)
    assert result.metrics["params"] == expected


def test_pretraining_runs_once_per_architecture(trainer: BertTrainer, tmp_path: Path) -> None:
    spec = candidate(pretrain_steps=2, batch_size=8)
    first = trainer.train(spec, TrainContext())
    assert first.metrics["pretrain_steps"] == 2.0
    assert first.metrics["pretrain_cached"] == 0.0
    assert first.metrics["pretrain_seconds"] > 0
    assert math.isfinite(first.metrics["pretrain_loss"])
    assert len(list((tmp_path / "pretrained").iterdir())) == 1

    second = trainer.train(spec, TrainContext())
    assert second.metrics["pretrain_cached"] == 1.0
    assert second.metrics["pretrain_seconds"] == 0.0
    assert second.metrics["pretrain_loss"] == first.metrics["pretrain_loss"]
    # Same seed, same starting encoder, same dropout draws: the same fine-tuned model.
    assert second.metrics["accuracy"] == first.metrics["accuracy"]
    assert len(list((tmp_path / "pretrained").iterdir())) == 1


def test_pretraining_on_a_text_file(trainer: BertTrainer, tmp_path: Path) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("the cat sat on the mat .\n\na dog ran in the park .\nbirds sing .\n")
    result = trainer.train(
        candidate(pretrain_steps=2, pretrain_text=str(text), batch_size=2), TrainContext()
    )
    assert result.metrics["pretrain_steps"] == 2.0
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(CandidateError, match="holds no sentence"):
        trainer.train(
            candidate(pretrain_steps=2, pretrain_text=str(tmp_path / "empty.txt")),
            TrainContext(),
        )


def test_weight_transfer_from_a_kept_checkpoint(trainer: BertTrainer, kept: TrainResult) -> None:
    path = kept.info["checkpoint"]

    # Pre-training is also allowed, so BOSHNAS's rule applies: overlap 1.0 >= 0.8, transfer.
    same = trainer.train(candidate(transfer_from=path, pretrain_steps=2), TrainContext())
    assert same.metrics["transfer_overlap"] == 1.0
    assert same.metrics["transferred"] == 1.0
    assert same.metrics["pretrain_steps"] == 0.0  # transfer won: not pre-trained
    assert same.info["transfer_from"] == path

    other = {**MIXED, "o": ["sa", "l"], "p": ["sdp", "dct"], "h": [128, 128]}
    partial = trainer.train(candidate(other, transfer_from=path), TrainContext())
    expected = weight_overlap(MIXED, other, len(trainer.tokenizer), 512, 2, 2)
    assert 0 < partial.metrics["transfer_overlap"] < 1
    assert partial.metrics["transfer_overlap"] == pytest.approx(expected, rel=1e-12)

    # Below 0.8 the encoder is pre-trained instead. The word embeddings dominate a small
    # model, so the overlap drops below 0.8 only when the embedding width grows: 64 -> 256
    # leaves a quarter of them (and every operation changes).
    far = {**MIXED, "o": ["sa", "sa"], "p": ["sdp", "sdp"], "h": [256, 128]}
    low = weight_overlap(MIXED, far, len(trainer.tokenizer), 512, 2, 2)
    assert low < 0.8
    both = trainer.train(
        candidate(far, transfer_from=path, pretrain_steps=2, batch_size=4), TrainContext()
    )
    assert both.metrics["transfer_overlap"] == pytest.approx(low, rel=1e-12)
    assert both.metrics["transferred"] == 0.0 and both.metrics["pretrain_steps"] == 2.0

    with pytest.raises(FileNotFoundError, match="not a FlexiBERT checkpoint"):
        trainer.train(candidate(transfer_from=str(Path(path).parent)), TrainContext())


@pytest.mark.parametrize(
    ("space", "architecture", "recipe", "message"),
    [
        ("flexibert", MIXED, {"init": "teacher"}, "recipe.init 'teacher' is not supported"),
        ("flexibert", MIXED, {"distill": {"mode": "logits"}}, "recipe.distill is not supported"),
        ("flexibert", {**MIXED, "n": [3, 2]}, {}, r"architecture\.n\[0\]"),
        ("flexibert", MIXED, {"pretrain_steps": "10"}, "pretrain_steps must be an integer"),
        ("flexibert", MIXED, {"pretrain_steps": -1}, "must be >= 0"),
        ("flexibert", MIXED, {"pretrain_text": "a.txt"}, "needs recipe.pretrain_steps"),
        (
            "bert",
            {
                "num_hidden_layers": 1,
                "hidden_size": 32,
                "num_attention_heads": 2,
                "intermediate_size": 64,
            },
            {"pretrain_steps": 10},
            "apply to FlexiBERT candidates only",
        ),
    ],
)
def test_refused_candidates(
    trainer: BertTrainer,
    space: str,
    architecture: dict[str, Any],
    recipe: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(CandidateError, match=message):
        trainer.train(candidate(architecture, space=space, **recipe), TrainContext())
