"""A user's own task, declared in the candidate, trained by the bert trainer."""

from __future__ import annotations

from pathlib import Path

from _tiny import TINY_BERT
from sklearn.metrics import accuracy_score, f1_score

from archsearch.spaces import Candidate
from archsearch.worker import TrainContext
from archsearch.worker._bert_trainer import BertTrainer


def test_custom_csv_task_trains_and_scores(tmp_path: Path) -> None:
    long = "great acting and a fine story, " * 4  # past max_seq_length: one dev row in 8
    good = ["a wonderful film", long, "i loved it", "superb"]
    bad = ["a dreadful film", "boring and far too long", "i hated it", "awful"]
    rows = [(t, "pos") for t in good] + [(t, "neg") for t in bad]
    for split, n in (("train", 8), ("dev", 4)):
        lines = ["review,stars"] + [f'"{t}",{label}' for t, label in (rows * n)[: 8 * n]]
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    cand = Candidate.from_dict(
        {
            "space": "bert",
            "architecture": TINY_BERT,
            "recipe": {
                "max_steps": 6,
                "eval_every": 3,
                "batch_size": 8,
                "max_seq_length": 16,
                "measure_latency": False,
            },
            "data": {
                "task": "reviews",
                "custom_task": {
                    "name": "reviews",
                    "train": str(tmp_path / "train.csv"),
                    "dev": str(tmp_path / "dev.csv"),
                    "text_fields": ["review"],
                    "label_field": "stars",
                },
            },
        }
    )
    trainer = BertTrainer()
    result = trainer.train(
        cand, TrainContext(intermediate_metric="accuracy", objective_metrics=("accuracy",))
    )
    assert result.metrics["accuracy"] == accuracy_score(
        trainer.last_labels, trainer.last_predictions
    )
    assert "reviews.accuracy" in result.metrics and result.metrics["params"] > 0
    # which class f1 scores is said (the labels sorted: "neg", then "pos", the positive one)
    assert result.info["labels"] == "neg, pos" and result.info["f1_positive_label"] == "pos"
    assert result.metrics["f1"] == f1_score(
        trainer.last_labels, trainer.last_predictions, pos_label=1, zero_division=0.0
    )
    assert result.info["dev_at_max_seq_length"] == "0.125"


def test_a_worker_does_not_reuse_another_declarations_data(tmp_path: Path) -> None:
    """Two studies gave one custom task name other labels: the worker reused the first one's
    encoded data (its cache was keyed on the name), so the second's f1 scored the wrong class
    while its info named the declared one."""
    rows = [("a fine film", "pos"), ("a bad film", "neg")] * 8
    for split in ("train", "dev"):
        lines = ["review,stars"] + [f'"{t}",{label}' for t, label in rows]
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    task = {
        "name": "reviews",
        "train": str(tmp_path / "train.csv"),
        "dev": str(tmp_path / "dev.csv"),
        "text_fields": ["review"],
        "label_field": "stars",
    }
    recipe = {"max_steps": 1, "eval_every": 1, "batch_size": 8, "max_seq_length": 16}
    trainer = BertTrainer()
    gold = []
    for declared in ({}, {"labels": ["pos", "neg"]}):
        cand = Candidate.from_dict(
            {
                "space": "bert",
                "architecture": TINY_BERT,
                "recipe": {**recipe, "measure_latency": False},
                "data": {"task": "reviews", "custom_task": {**task, **declared}},
            }
        )
        result = trainer.train(cand, TrainContext(objective_metrics=("f1",)))
        gold.append(list(trainer.last_labels))
        assert result.info["f1_positive_label"] == ("pos" if not declared else "neg")
    assert gold[0] == [1, 0] * 8 and gold[1] == [0, 1] * 8  # each study's own class order


def test_a_kept_model_maps_the_users_labels_both_ways(tmp_path: Path) -> None:
    """A kept checkpoint's config.label2id was None (transformers 5 derives it from id2label
    no more), so ``label2id["spam"]`` failed in the user's own code."""
    from transformers import AutoModelForSequenceClassification

    from archsearch.spaces import validate_custom_task
    from archsearch.worker._models import model_factory

    class Tokenizer:
        pad_token_id = 0

        def __len__(self) -> int:
            return 128

    task = validate_custom_task(
        {
            "name": "mail",
            "train": str(tmp_path / "train.csv"),
            "dev": str(tmp_path / "dev.csv"),
            "text_fields": ["text"],
            "label_field": "label",
            "labels": ["ham", "spam"],
        }
    )
    model_factory("bert").build(TINY_BERT, task, Tokenizer()).save_pretrained(tmp_path / "kept")
    config = AutoModelForSequenceClassification.from_pretrained(tmp_path / "kept").config
    assert config.id2label == {0: "ham", 1: "spam"}
    assert config.label2id == {"ham": 0, "spam": 1}
