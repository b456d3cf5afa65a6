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
