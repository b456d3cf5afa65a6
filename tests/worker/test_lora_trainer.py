"""LoraTrainer (``lora``) end to end through the trainer interface, on a tiny local base model:
DyLoRA scores every rank from one training, the baselines run in the same code path, and bad
candidates are CandidateErrors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from _tiny_lora import lora_candidate, tiny_base

from archsearch.spaces._checkpoint_names import NOTE_FILE
from archsearch.worker import CandidateError, TrainContext, Trainer
from archsearch.worker._registry import create_trainer


@pytest.fixture(scope="module")
def trainer() -> Trainer:
    return create_trainer("lora", {})


def train(trainer: Trainer, candidate: Any, reports: list[tuple[int, float]] | None = None):
    def report(step: int, value: float) -> bool:
        if reports is not None:
            reports.append((step, value))
        return False

    context = TrainContext(
        report=report, intermediate_metric="accuracy", objective_metrics=("accuracy",)
    )
    return trainer.train(candidate, context)


def test_a_dylora_trial_scores_every_rank_from_one_training(trainer) -> None:
    reports: list[tuple[int, float]] = []
    result = train(trainer, lora_candidate(), reports)
    metrics = result.metrics
    assert [step for step, _ in reports] == [3, 6]  # evaluated at r_max while training
    for b in range(1, 5):
        assert 0.0 <= metrics[f"accuracy@r{b}"] <= 1.0
        assert metrics[f"sst2.accuracy@r{b}"] == metrics[f"accuracy@r{b}"]
    params = [metrics[f"trainable_params@r{b}"] for b in range(1, 5)]
    lora_per_rank = 2 * (32 + 32)  # query and value of the 1 x 32 base
    assert [p - params[0] for p in params] == [lora_per_rank * k for k in range(4)]
    assert metrics["trainable_params"] == params[-1]
    # each rank's costs are its own, not r_max's: the model `fetch --rank b` writes has the
    # components past b fewer; its forward pass computes 2 x tokens x rank x (in + out) per
    # LoRA module fewer FLOPs (the max_seq_length recipe's tokens, as `flops` counts them)
    seq_len = lora_candidate().recipe["max_seq_length"]
    for b in range(1, 5):
        fewer = params[-1] - params[b - 1]
        assert metrics[f"params@r{b}"] == metrics["params"] - fewer
        assert metrics[f"params_no_embeddings@r{b}"] == metrics["params_no_embeddings"] - fewer
        assert metrics[f"flops@r{b}"] == metrics["flops"] - 2 * seq_len * fewer
    # the loop's own final evaluation is rank r_max, as trained
    assert metrics["accuracy"] == metrics["accuracy@r4"]
    assert "accuracy@r5" not in metrics


def test_baselines_run_in_the_same_code_path(trainer) -> None:
    plain = train(trainer, lora_candidate({"mode": "lora", "r_max": 2})).metrics
    assert [k for k in plain if k.startswith("accuracy@")] == ["accuracy@r2"]
    assert plain["trainable_params@r2"] == plain["trainable_params"]
    truncated = train(
        trainer, lora_candidate({"mode": "lora", "r_max": 4, "eval_ranks": [1, 2, 3, 4]})
    ).metrics
    assert sorted(k for k in truncated if k.startswith("accuracy@")) == [
        f"accuracy@r{b}" for b in range(1, 5)
    ]


def test_lora_metrics_can_be_objectives(trainer) -> None:
    candidate = lora_candidate({"eval_ranks": [1, 4]}, max_steps=2, eval_every=2)
    context = TrainContext(objective_metrics=("accuracy@r1", "trainable_params", "params"))
    metrics = trainer.train(candidate, context).metrics
    assert {"accuracy@r1", "trainable_params", "params"} <= set(metrics)
    for missing in ("accuracy@r2", "no_such_metric"):
        with pytest.raises(CandidateError, match=rf"objective metric\(s\) \['{missing}'\]"):
            trainer.train(candidate, TrainContext(objective_metrics=("accuracy", missing)))


def test_lora_metric_names_are_what_a_trial_returns(trainer) -> None:
    from archsearch.worker._lora_spec import parse_lora_spec
    from archsearch.worker._lora_trainer import lora_metric_names

    candidate = lora_candidate({"eval_ranks": [2, 3]}, max_steps=1, eval_every=1)
    metrics = trainer.train(candidate, TrainContext()).metrics
    spec = parse_lora_spec(candidate.recipe["lora"])
    assert set(metrics) == set(lora_metric_names(["sst2"], spec, measure_latency=False))


def test_a_kept_checkpoint_loads_back_at_every_rank(trainer, tmp_path, monkeypatch) -> None:
    import torch

    from archsearch.spaces import get_task
    from archsearch.worker._checkpoints import CHECKPOINT_DIR_ENV
    from archsearch.worker._dylora import dylora_of, load_dylora
    from archsearch.worker._loop import TrainingLoop
    from archsearch.worker._lora_model import load_base_classifier
    from archsearch.worker._metrics import compute_metrics

    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path))
    # evaluated at steps 1-6: the kept adapter is the final one, on which every rank was
    # scored, not the best at r_max (whose ranks' scores were never measured)
    candidate = lora_candidate(max_steps=6, eval_every=1, keep_checkpoint=True)
    result = train(trainer, candidate)
    folder = result.info["checkpoint"]
    # how it trained is on the trial (frozen's default changed once, with nothing said)
    assert result.info["lora_mode"] == candidate.recipe["lora"].get("mode", "dylora")
    assert result.info["lora_frozen"] in ("true", "false") and result.info["lora_strict"]
    note = json.loads((Path(folder) / NOTE_FILE).read_text())
    assert note["final"] is True and note["step"] == 6
    task = get_task("sst2")
    model = load_dylora(load_base_classifier(tiny_base(), task), folder)
    dev = trainer.encode("sst2", "dev", 32, {"max_seq_length": 32, "seed": 0}, candidate.data)
    loop = TrainingLoop(model, task, {"batch_size": 16}, TrainContext(), None, 0)
    for b in range(1, 5):
        dylora_of(model).set_rank(b)
        with torch.no_grad():
            scored = compute_metrics(task, loop.predict(dev), dev.labels)
        assert scored["accuracy"] == result.metrics[f"accuracy@r{b}"], b


def _with(candidate: Any, **changes: Any) -> Any:
    return dataclasses.replace(candidate, **changes)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda c: _with(c, space="bert"), "fine-tunes candidates of space 'lora'"),
        (lambda c: _with(c, architecture={"hidden_size": 32}), "architecture must be empty"),
        (
            lambda c: _with(c, recipe={k: v for k, v in c.recipe.items() if k != "lora"}),
            "recipe.lora is missing",
        ),
        (lambda c: _with(c, recipe={**c.recipe, "init": "teacher"}), r"\['init'\] are not"),
        (
            lambda c: _with(c, recipe={**c.recipe, "lora": {"model": "/no/such/model"}}),
            "recipe.lora.model: folder '/no/such/model' does not exist on this worker "
            r"\(give a model folder",
        ),
        (
            lambda c: _with(
                c, recipe={**c.recipe, "lora": {"model": tiny_base(), "targets": ["nothing"]}}
            ),
            r"recipe.lora.targets: \['nothing'\] match no linear module of the base model "
            r"\(its linear modules end in \['classifier', 'dense', 'key', 'query', 'value'\]",
        ),
        (
            lambda c: _with(c, recipe={**c.recipe, "lora": {"r_max": 0}}),
            "recipe.lora.r_max: must be an int >= 1",
        ),
        (lambda c: _with(c, data={**c.data, "task": "squad"}), "squad"),
    ],
)
def test_bad_lora_candidates_are_candidate_errors(trainer, make, message) -> None:
    with pytest.raises(CandidateError, match=message):
        train(trainer, make(lora_candidate()))


def test_the_server_knows_the_packaged_models_linear_modules() -> None:
    """The list the server checks targets against at launch is the packaged model's own."""
    import torch

    from archsearch.spaces import get_task
    from archsearch.spaces._lora_spec import PACKAGED_LINEAR_MODULES, unmatched_targets
    from archsearch.worker._lora_model import load_base_classifier

    base = load_base_classifier(None, get_task("sst2"))
    linear = sorted(n for n, m in base.named_modules() if isinstance(m, torch.nn.Linear))
    assert linear == sorted(PACKAGED_LINEAR_MODULES)
    # peft's rule: the whole name, or a suffix after a dot
    got = unmatched_targets(
        ["attention.self.query", "layer.5.output.dense", "ery", "qurey"], linear
    )
    assert got == ["ery", "qurey"]


def test_each_rank_is_scored_on_every_dev_split(tmp_path: Path) -> None:
    """MNLI's rank trials carried the top rank's mismatched accuracy at every rank (only the
    matched split was scored per rank). With the mismatched split a copy of the matched one,
    both accuracies must agree at every rank."""
    from archsearch.server._rank_trials import metrics_by_rank
    from archsearch.worker._lora_spec import parse_lora_spec
    from archsearch.worker._lora_trainer import lora_metric_names

    header = "index\tsentence1\tsentence2\tgold_label"
    labels = ["entailment", "neutral", "contradiction"]
    said = ["yes", "maybe", "no"]  # the label's word: a rank that learned it scores higher
    folder = tmp_path / "MNLI"
    folder.mkdir()
    for name, rows in (("train", 96), ("dev_matched", 30)):
        lines = [
            f"{i}\tthe cat sat {i}\t{said[i % 3]} it did\t{labels[i % 3]}" for i in range(rows)
        ]
        (folder / f"{name}.tsv").write_text("\n".join([header, *lines]) + "\n")
    (folder / "dev_mismatched.tsv").write_bytes((folder / "dev_matched.tsv").read_bytes())
    candidate = dataclasses.replace(
        lora_candidate(learning_rate=3e-2, max_steps=40, eval_every=40),
        data={"task": "mnli", "train_subset": 0},
    )
    metrics = (
        create_trainer("lora", {"glue_dir": str(tmp_path)}).train(candidate, TrainContext()).metrics
    )
    per_rank = metrics_by_rank(metrics)
    assert sorted(per_rank) == [1, 2, 3, 4]
    scores = [per_rank[b]["accuracy"] for b in range(1, 5)]
    assert len(set(scores)) > 1  # the ranks differ: a copied top rank would show
    for b in range(1, 5):
        assert metrics[f"accuracy_mismatched@r{b}"] == metrics[f"accuracy@r{b}"]
        assert per_rank[b]["accuracy_mismatched"] == per_rank[b]["accuracy"] == scores[b - 1]
        assert per_rank[b]["mnli.accuracy_mismatched"] == scores[b - 1]
    spec = parse_lora_spec(candidate.recipe["lora"])
    assert "accuracy_mismatched@r2" in lora_metric_names(["mnli"], spec, measure_latency=False)
