"""The hook points of :class:`~archsearch.worker._loop.TrainingLoop`: what differs between
kinds of students (where the weights start, what is minimised, which examples each epoch
sees, what is scored after training, what happens around each step, what state a resumed
training must restore).

Imports torch at module level; ``archsearch.worker`` does not import it eagerly.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch

from archsearch.worker._batches import DataSchedule
from archsearch.worker._loop_state import Stateful

#: ``loss_fn(model, batch) -> scalar loss``; ``batch`` holds ``input_ids``,
#: ``token_type_ids``, ``attention_mask`` and ``labels`` on the training device.
LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]
#: ``init_fn(model)``: changes the freshly built model's weights in place before training.
InitFn = Callable[[torch.nn.Module], None]
#: ``configure_fn(model)``: puts the model in one configuration (a LoRA rank, a sub-network);
#: it may return a context manager, entered around the evaluation, whose exit restores it.
ConfigureFn = Callable[[torch.nn.Module], "contextlib.AbstractContextManager[Any] | None"]
#: ``evaluate_many(model) -> [(label, configure_fn), ...]``: the configurations to score; a
#: ``configure_fn`` of None is the model as training left it (its final evaluation is reused).
EvaluateMany = Callable[[torch.nn.Module], Iterable[tuple[str, ConfigureFn | None]]]
#: ``step_fn(step)``: called with the optimiser step's number (1 first).
StepFn = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class TrainingHooks:
    """How a student starts, what it minimises, what it sees and how it is scored.

    Every hook is optional; with none the loop trains from the built model's weights on the
    model's own loss over every training example each epoch.

    Attributes:
        init_fn: Where the weights start: called once on the built model (already on the
            device) before the optimiser is created (teacher extraction, FlexiBERT
            pre-training or transfer). None keeps the random initialisation.
        init_sets_weights: ``init_fn`` sets only the weights (and :attr:`metrics`), both of
            which a resumed training restores: a run that continues from saved progress
            then skips it (a retry on another machine does not pre-train a FlexiBERT
            encoder again); it runs after all when the progress cannot be restored.
        loss_fn: What is minimised: the training loss of a batch, called under the recipe's
            autocast (distillation against a teacher). None uses the model's own loss
            (cross-entropy, or MSE for regression).
        data_schedule: What each epoch sees (a curriculum): called at the start of every pass
            over the data with the epoch index (0 first) and returns the indices of the
            training examples of that epoch (None: all of them). They are shuffled with the
            recipe's seed and cut into micro-batches; training still ends after ``max_steps``
            optimiser steps, so a smaller epoch simply comes round sooner.
        evaluate_many: Several configurations of the one set of trained weights (DyLoRA ranks,
            supernet students): called once after the last step; yields ``(label,
            configure_fn)`` pairs, and each configuration's dev metrics are kept in
            :attr:`TrainingLoop.label_metrics` under its label (the trainer reports them as
            ``"<metric>@<label>"``). The loop's own final evaluation, reports and checkpoint
            use the model as trained, before any configuration; a ``configure_fn`` of None
            names that model as trained, whose final evaluation is reused rather than
            scored again (DyLoRA's rank r_max).
        before_step: Called before each optimiser step (before its first micro-batch) with
            the step's number, 1 first (DyLoRA draws the step's rank here).
        after_step: Called after each optimiser step (the weights updated, gradients
            cleared), before any evaluation of that step.
        metrics: Filled by the hooks with what they measured (a FlexiBERT candidate's
            ``transfer_overlap``, ``pretrain_loss``, ...); the trainer adds them to the task's
            metrics.
        stateful: Every hook object whose state changes while training (DyLoRA's rank
            generator, a curriculum), with ``state_dict()`` and ``load_state_dict(state)``: a
            resumed training (``TrainingLoop``'s ``progress``) saves and restores them. A hook
            that keeps state and is not listed makes a resumed training differ.
    """

    init_fn: InitFn | None = None
    init_sets_weights: bool = False
    loss_fn: LossFn | None = None
    data_schedule: DataSchedule | None = None
    evaluate_many: EvaluateMany | None = None
    before_step: StepFn | None = None
    after_step: StepFn | None = None
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    stateful: tuple[Stateful, ...] = ()
