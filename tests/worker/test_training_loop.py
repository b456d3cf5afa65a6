"""TrainingLoop's hook points, on the unit tests' 1 x 32 BERT and synthetic token data.

Each hook is shown to be called and to change the outcome: ``init_fn`` sets the starting
weights, ``loss_fn`` what is minimised, ``data_schedule`` which examples an epoch sees,
``evaluate_many`` which configurations of the trained weights are scored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from _loop_data import DEV, TASK, TRAIN, model, recipe
from _tiny import TINY_BERT

from archsearch.worker import CandidateError, TrainContext
from archsearch.worker._batches import EncodedSplit, collate, epoch_batches
from archsearch.worker._loop import ConfigureFn, TrainingHooks, TrainingLoop, model_loss


def train(hooks: TrainingHooks | None = None, **changes: Any) -> tuple[TrainingLoop, np.ndarray]:
    loop = TrainingLoop(model(), TASK, recipe(**changes), TrainContext(), None, 0, hooks=hooks)
    predictions, _ = loop.run(TRAIN, DEV)
    return loop, predictions


def weights(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def recorder(seen: list[int]) -> TrainingHooks:
    """A loss hook that records which examples each batch holds and keeps the model's loss."""

    def loss_fn(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seen.extend((batch["input_ids"][:, 1] - 2).tolist())
        return model_loss(m, batch)

    return TrainingHooks(loss_fn=loss_fn)


def test_init_fn_sets_the_starting_weights() -> None:
    calls: list[int] = []

    def init_fn(m: torch.nn.Module) -> None:
        calls.append(1)
        head: Any = m.classifier
        with torch.no_grad():
            head.bias.copy_(torch.tensor([50.0, -50.0]))

    _, plain = train(learning_rate=0.0)
    _, started = train(TrainingHooks(init_fn=init_fn), learning_rate=0.0)
    assert calls == [1]
    assert (started == 0).all()  # the bias it set decides every prediction
    assert not (plain == 0).all()


def test_loss_fn_replaces_what_is_minimised() -> None:
    calls: list[int] = []

    def zero_loss(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        calls.append(1)
        return model_loss(m, batch) * 0.0

    start = weights(model())
    plain, _ = train()
    zeroed, _ = train(TrainingHooks(loss_fn=zero_loss), gradient_accumulation_steps=2)
    assert len(calls) == 4 * 2  # every micro-batch
    assert not same(start, weights(plain.model))
    assert same(start, weights(zeroed.model))  # no gradient, no decay: nothing moved


def test_data_schedule_chooses_each_epochs_examples() -> None:
    epochs: list[int] = []
    first = list(range(8))

    def schedule(epoch: int) -> list[int] | None:
        epochs.append(epoch)
        return first if epoch == 0 else None

    seen: list[int] = []
    hooks = recorder(seen)
    train(TrainingHooks(loss_fn=hooks.loss_fn, data_schedule=schedule), max_steps=2)
    assert epochs == [0]
    assert sorted(seen) == first  # two steps of four: exactly epoch 0's examples, once each

    seen.clear()
    train(TrainingHooks(loss_fn=hooks.loss_fn, data_schedule=schedule), max_steps=6)
    assert epochs == [0, 0, 1]  # the second run: epoch 1 (every example) after 2 steps
    assert sorted(seen[:8]) == first and len(set(seen[8:]) - set(first)) > 0

    unscheduled: list[int] = []
    train(recorder(unscheduled), max_steps=2)
    assert sorted(unscheduled) != first  # without the hook, epoch 0 draws from all 64


def test_epoch_batches_without_a_schedule_keep_the_seeded_order() -> None:
    batches = epoch_batches(10, 4, seed=5)
    rng = np.random.default_rng(5)
    expected = [chunk for _ in range(2) for chunk in np.array_split(rng.permutation(10), [4, 8])]
    for want in expected:
        assert next(batches).tolist() == want.tolist()


def test_data_schedule_errors() -> None:
    with pytest.raises(CandidateError, match="epoch 0 no examples"):
        next(epoch_batches(10, 4, 0, lambda epoch: []))
    with pytest.raises(ValueError, match=r"outside \[0, 10\)"):
        next(epoch_batches(10, 4, 0, lambda epoch: [3, 10]))


def flip_classifier(m: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
    """A configuration: the classifier's logits negated, restored on exit."""

    @contextlib.contextmanager
    def flipped() -> Iterator[None]:
        head: Any = m.classifier
        with torch.no_grad():
            head.weight.neg_()
            head.bias.neg_()
        try:
            yield
        finally:
            with torch.no_grad():
                head.weight.neg_()
                head.bias.neg_()

    return flipped()


def test_evaluate_many_scores_configurations_of_one_set_of_weights() -> None:
    configured: list[str] = []

    def configurations(m: torch.nn.Module) -> Iterator[tuple[str, ConfigureFn]]:
        def record(label: str) -> ConfigureFn:
            def configure(model: torch.nn.Module) -> None:
                assert model is m
                configured.append(label)

            return configure

        yield "as-trained", record("as-trained")
        yield "flipped", flip_classifier

    loop, predictions = train(TrainingHooks(evaluate_many=configurations), max_steps=8)
    trained = weights(loop.model)
    by_label = loop.label_metrics
    assert set(by_label) == {"as-trained", "flipped"} and configured == ["as-trained"]
    accuracy = float((predictions == DEV.labels).mean())
    assert by_label["as-trained"]["accuracy"] == pytest.approx(accuracy)
    # Negated logits swap the two classes' argmax: every right answer becomes wrong.
    assert by_label["flipped"]["accuracy"] == pytest.approx(1 - accuracy)
    assert same(trained, weights(loop.model))  # the context restored the weights
    assert loop.predict(DEV).tolist() == predictions.tolist()

    plain, _ = train(max_steps=8)
    assert plain.label_metrics == {}

    with pytest.raises(ValueError, match="twice"):
        loop.evaluate_many(lambda m: [("a", flip_classifier), ("a", flip_classifier)], DEV)


def test_the_dev_loss_is_the_models_own_loss_on_the_dev_split() -> None:
    def configurations(m: torch.nn.Module) -> Iterator[tuple[str, ConfigureFn]]:
        yield "flipped", flip_classifier

    loop, predictions = train(TrainingHooks(evaluate_many=configurations), max_steps=8)
    again, loss = loop.predict_scored(DEV)
    assert again.tolist() == predictions.tolist()
    # Hugging Face's own cross-entropy of the whole split in one batch
    batch = collate(DEV, np.arange(len(DEV)), 0, torch.device("cpu"))
    loop.model.eval()
    with torch.no_grad():
        expected = float(loop.model(**batch).loss)
        flipped = float(
            torch.nn.functional.cross_entropy(-loop.model(**batch).logits, batch["labels"])
        )
    assert loss == pytest.approx(expected, rel=1e-5)
    assert loop.final_dev_loss == pytest.approx(loss)
    assert loop.label_metrics["flipped"]["dev_loss"] == pytest.approx(flipped, rel=1e-5)
    assert flipped != pytest.approx(expected)
    # a label the model has no class for: no dev loss (trial metrics must be finite), no error
    unknown = EncodedSplit(DEV.input_ids, DEV.token_type_ids, DEV.offsets, DEV.labels + 5)
    assert np.isnan(loop.predict_scored(unknown)[1])
    assert "dev_loss" not in loop.evaluate_many(configurations, unknown)["flipped"]
    # reported while training, a dev loss that cannot be measured is the candidate's error
    reporting = TrainingLoop(model(), TASK, recipe(), TrainContext(), "dev_loss", 0)
    with pytest.raises(CandidateError, match="'dev_loss' could not be measured"):
        reporting.run(TRAIN, unknown)


def test_a_none_configuration_reuses_the_final_evaluation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def configurations(m: torch.nn.Module) -> Iterator[tuple[str, ConfigureFn | None]]:
        yield "as-trained", None
        yield "flipped", flip_classifier

    loop, predictions = train(TrainingHooks(evaluate_many=configurations), max_steps=8)
    accuracy = float((predictions == DEV.labels).mean())
    assert loop.label_metrics["as-trained"]["accuracy"] == pytest.approx(accuracy)
    assert loop.label_metrics["flipped"]["accuracy"] == pytest.approx(1 - accuracy)
    # Scored again, only "flipped" runs the model: the final evaluation stands for "as-trained".
    calls: list[int] = []
    original = loop.predict_scored

    def counted(split: EncodedSplit) -> tuple[np.ndarray, float]:
        calls.append(1)
        return original(split)

    monkeypatch.setattr(loop, "predict_scored", counted)
    again = loop.evaluate_many(configurations, DEV)
    assert calls == [1] and again["as-trained"] == loop.label_metrics["as-trained"]


def test_the_trainer_passes_its_hooks_to_the_loop_and_reports_each_label() -> None:
    from archsearch.spaces import Candidate
    from archsearch.worker._bert_trainer import BertTrainer

    epochs: list[int] = []

    class CurriculumTrainer(BertTrainer):
        def training_hooks(
            self, candidate: Any, task: Any, device: Any = None, context: Any = None
        ) -> TrainingHooks:
            def schedule(epoch: int) -> list[int]:
                epochs.append(epoch)
                return list(range(8))

            return TrainingHooks(
                data_schedule=schedule,
                evaluate_many=lambda m: [("flipped", flip_classifier)],
            )

    spec = Candidate(
        space="bert",
        architecture=TINY_BERT,
        recipe={"max_steps": 4, "batch_size": 4, "max_seq_length": 32, "eval_every": 4},
        data={"task": "sst2", "train_subset": 32, "eval_subset": 16},
    )
    result = CurriculumTrainer().train(spec, TrainContext())
    assert epochs == [0, 1]  # 8 examples a pass, 4 a step: a new epoch every 2 steps
    assert result.metrics["accuracy@flipped"] == pytest.approx(1 - result.metrics["accuracy"])


def test_before_and_after_step_surround_each_optimiser_step() -> None:
    """Called once per optimiser step (not per micro-batch), in order, before any evaluation;
    what ``after_step`` changes is what the step's evaluation sees."""
    events: list[tuple[str, int]] = []

    def loss_fn(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        events.append(("micro", 0))
        return model_loss(m, batch)

    def after_step(step: int) -> None:
        events.append(("after", step))
        head: Any = loop_model.classifier
        with torch.no_grad():
            head.bias.copy_(torch.tensor([50.0, -50.0]))

    loop_model = model()
    hooks = TrainingHooks(
        loss_fn=loss_fn,
        before_step=lambda step: events.append(("before", step)),
        after_step=after_step,
    )
    loop = TrainingLoop(
        loop_model,
        TASK,
        recipe(gradient_accumulation_steps=2, max_steps=3, eval_every=3),
        TrainContext(),
        None,
        0,
        hooks=hooks,
    )
    predictions, _ = loop.run(TRAIN, DEV)
    step_events = [("before", s) for s in (1, 2, 3)]
    assert [e for e in events if e[0] == "before"] == step_events
    assert events == [
        event
        for s in (1, 2, 3)
        for event in (("before", s), ("micro", 0), ("micro", 0), ("after", s))
    ]
    assert (predictions == 0).all()  # evaluated after after_step set the head's bias
