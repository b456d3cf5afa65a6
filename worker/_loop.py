"""TrainingLoop: one model's optimisation on one task, with its hook points.

The loop owns what every student's training shares: the optimiser (AdamW with BERT's
weight-decay groups), the linear warm-up and decay schedule, gradient accumulation and
clipping, precision (autocast, and loss scaling for fp16), the divergence check, periodic
evaluation on the dev split, intermediate reports (and so pruning: ``context.report`` raises
:class:`~archsearch.worker.TrialStopped`), stop checks, the best-weights copy for checkpoints
and the progress bar. What differs between kinds of students enters through
:class:`TrainingHooks`:

* ``init_fn(model)``: where the weights start (teacher extraction, FlexiBERT pre-training or
  weight transfer);
* ``loss_fn(model, batch)``: what is minimised (distillation against a teacher);
* ``data_schedule(epoch)``: which training examples each epoch sees (a curriculum);
* ``evaluate_many(model)``: several configurations of the one set of trained weights to score
  after the last step (DyLoRA ranks, supernet students);
* ``before_step(step)`` / ``after_step(step)``: around each optimiser step (DyLoRA draws the
  step's rank before it and restores the full rank after it);
* ``stateful``: the hook objects whose state a resumed run restores (DyLoRA's rank
  generator, a curriculum).

The hooks are defined in :mod:`._hooks`. With a ``resume`` file the loop saves its state
(:mod:`._loop_state`) and a later run continues from it.

Imports torch at module level; ``archsearch.worker`` does not import it eagerly.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from archsearch.spaces import DEV_LOSS
from archsearch.worker._batches import DataSchedule, EncodedSplit, collate, epoch_batches
from archsearch.worker._dev_scores import dev_metrics, predict_scored
from archsearch.worker._hooks import (
    ConfigureFn,
    EvaluateMany,
    InitFn,
    LossFn,
    StepFn,
    TrainingHooks,
)
from archsearch.worker._loop_state import LoopState, Stateful
from archsearch.worker._metrics import compute_metrics
from archsearch.worker._optim import adamw, model_loss, seed_everything
from archsearch.worker._precision import FP32, Precision
from archsearch.worker._progress import ProgressFile
from archsearch.worker._task_info import Task
from archsearch.worker._trainer import (
    CandidateError,
    TrainContext,
    TrialCancelled,
    TrialPruned,
    TrialStopped,
)

_MAX_GRAD_NORM = 1.0
# On CUDA, reading the loss back to check it is finite waits for the GPU and stops the CPU
# from queueing the next steps; check every this many optimiser steps (and at evaluations).
_CUDA_FINITE_CHECK_EVERY = 20


__all__ = [
    "ConfigureFn",
    "DataSchedule",
    "EvaluateMany",
    "InitFn",
    "LossFn",
    "Stateful",
    "StepFn",
    "TrainingHooks",
    "TrainingLoop",
    "adamw",
    "model_loss",
    "seed_everything",
]


class TrainingLoop:
    """One model's optimisation on one task, with periodic evaluation and reporting.

    Args:
        model: The model, on ``context.device``.
        task: The task trained on (its metrics score the dev split).
        recipe: The checked recipe: reads ``max_steps``, ``eval_every``, ``batch_size``,
            ``gradient_accumulation_steps``, ``learning_rate``, ``weight_decay``,
            ``warmup_ratio``, ``seed`` and ``progress``.
        context: The trial's context (stop checks and intermediate reports).
        report_metric: Metric sent with ``context.report`` after each evaluation; None: none.
        pad_id: The tokenizer's padding id.
        hooks: See :class:`TrainingHooks`.
        precision: Autocast dtype and loss scaling; default fp32.
        step_offset: Added to the steps sent with ``context.report``.
        select_metric: When set, a CPU copy of the weights with the best dev value of this
            metric is kept in ``best_state`` (with ``best_step`` and ``best_value``).
        progress: tqdm's ``disable`` is ``not progress``; None: shown only on a terminal.
        sample_memory: Called where training memory peaks (after each forward and backward
            pass and optimiser step): :meth:`~archsearch.worker._cost.PeakMemoryMeter.sample`.
        resume: Where this job's progress is kept (:class:`LoopState`): the run continues
            from it when it holds some, saves it every ``save_minutes`` and when the trial is
            asked to end (then also uploads it as artifact ``share_as``, unless that is empty),
            and clears it when the run ends (finished, pruned or diverged). None: no saving.
            ``init_fn`` still runs on a resumed run (it may set up more than weights; the
            saved weights then replace what it set) unless ``init_sets_weights``.
        share_as: The artifact name of the uploaded progress.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        task: Task,
        recipe: dict[str, Any],
        context: TrainContext,
        report_metric: str | None,
        pad_id: int,
        *,
        hooks: TrainingHooks | None = None,
        precision: Precision | None = None,
        step_offset: int = 0,
        select_metric: str | None = None,
        progress: bool | None = None,
        sample_memory: Callable[[], None] | None = None,
        resume: ProgressFile | None = None,
        share_as: str = "",
    ) -> None:
        self.model = model
        self.task = task
        self.recipe = recipe
        self.context = context
        self.report_metric = report_metric
        self.device = torch.device(context.device)
        self.pad_id = pad_id
        self.hooks = hooks or TrainingHooks()
        self.precision = precision or FP32
        self.step_offset = step_offset
        self.select_metric = select_metric
        self.progress = recipe.get("progress") if progress is None else progress
        self.sample_memory = sample_memory or _nothing
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_value = -math.inf
        self.best_step = 0
        #: Dev metrics of each configuration ``hooks.evaluate_many`` named, by label.
        self.label_metrics: dict[str, dict[str, float]] = {}
        self._last_values: dict[str, float] = {}
        #: The dev metrics of the evaluation after the last step (the model as trained).
        self._final_values: dict[str, float] | None = None
        self.resume, self.share_as = resume, share_as
        #: ``(step, value)`` of every intermediate value sent (``step_offset`` included).
        self.reported: list[tuple[int, float]] = []
        #: The optimiser steps a restored run started after (None: it started at the beginning).
        self.resumed_from: int | None = None

    def run(
        self,
        train_set: EncodedSplit,
        dev_set: EncodedSplit,
        extra_dev: Mapping[str, EncodedSplit] | None = None,
    ) -> tuple[np.ndarray, float]:
        """Trains for ``max_steps`` optimiser steps; returns the final dev predictions and the
        seconds spent optimising (evaluation excluded). ``extra_dev``: the task's other dev
        splits by name (MNLI's ``dev_mismatched``), on which ``hooks.evaluate_many`` scores
        each configuration too.

        Raises:
            CandidateError: The loss became non-finite, or the training split (or an epoch of
                the data schedule) is empty.
            TrialStopped: The trial was pruned or must stop.
        """
        recipe, context, model = self.recipe, self.context, self.model
        sample_memory, device, pad_id = self.sample_memory, self.device, self.pad_id
        max_steps, eval_every = recipe["max_steps"], recipe["eval_every"]
        accumulation = recipe.get("gradient_accumulation_steps", 1)
        init_fn, resume = self.hooks.init_fn, self.resume
        # weights and metrics only, which the saved progress restores: wait for the restore
        later = self.hooks.init_sets_weights and resume is not None and resume.path.exists()
        if init_fn is not None and not later:
            init_fn(model)
        loss_fn = self.hooks.loss_fn or model_loss
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = adamw(model, recipe["learning_rate"], recipe["weight_decay"])
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(recipe["warmup_ratio"] * max_steps), max_steps
        )
        scaler = torch.amp.GradScaler(device.type) if self.precision.scaled else None
        check_every = _CUDA_FINITE_CHECK_EVERY if device.type == "cuda" else 1
        micro_batches = epoch_batches(
            len(train_set), recipe["batch_size"], recipe["seed"], self.hooks.data_schedule
        )
        state = None
        if resume is not None:
            state = LoopState(self, optimizer, scheduler, scaler, micro_batches)
        eval_seconds, predictions = 0.0, np.empty(0)
        bar = tqdm(
            total=max_steps,
            desc=self.task.id,
            unit="step",
            file=sys.stderr,
            disable=None if self.progress is None else not self.progress,
            dynamic_ncols=True,
            leave=False,
        )
        nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        model.train()
        start = self._now()
        try:
            first = 1
            if resume is not None and state is not None:
                done, seconds = self._restore(resume, state)
                if later and init_fn is not None and done == 0:  # nothing restored after all
                    began = self._now()
                    init_fn(model)
                    state.mark(0)
                    seconds = began - self._now()  # not training time
                first, start = done + 1, start - seconds
                bar.update(done)
            for step in range(first, max_steps + 1):
                if self.hooks.before_step is not None:
                    self.hooks.before_step(step)
                for _ in range(accumulation):
                    context.check()
                    batch = collate(train_set, next(micro_batches), pad_id, device)
                    with self.precision.autocast(device):
                        loss = loss_fn(model, batch)
                    sample_memory()  # activations saved for backward are all alive here
                    if check_every == 1:
                        if not torch.isfinite(loss):
                            raise CandidateError(
                                f"training diverged: loss {loss.item()} at step {step}"
                            )
                    else:
                        nonfinite |= ~torch.isfinite(loss.detach())
                    scaled = loss / accumulation if accumulation > 1 else loss
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                    sample_memory()
                if scaler is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, _MAX_GRAD_NORM)
                    scale = scaler.get_scale()
                    scaler.step(optimizer)  # skipped when the gradients overflowed
                    scaler.update()
                    # A lowered scale means this step was skipped: do not advance the
                    # schedule either (scaler.step already waited for the GPU to know).
                    if scaler.get_scale() >= scale:
                        scheduler.step()
                else:
                    torch.nn.utils.clip_grad_norm_(params, _MAX_GRAD_NORM)
                    optimizer.step()
                    scheduler.step()
                sample_memory()  # gradients and optimiser state both alive here
                optimizer.zero_grad(set_to_none=True)
                if self.hooks.after_step is not None:
                    self.hooks.after_step(step)
                if state is not None:
                    state.mark(step)
                bar.update()
                evaluate = step % eval_every == 0 or step == max_steps
                if check_every > 1 and (evaluate or step % check_every == 0) and nonfinite.item():
                    raise CandidateError(f"training diverged: non-finite loss by step {step}")
                if evaluate:
                    eval_start = self._now()
                    predictions = self._evaluate(step, dev_set, bar)
                    eval_seconds += self._now() - eval_start
                    if step == max_steps:
                        self._final_values = self._last_values
                    if self.report_metric is not None:
                        value = self._last_values[self.report_metric]
                        self.reported.append((self.step_offset + step, value))
                        # Raises TrialStopped if pruned.
                        context.report(self.step_offset + step, value)
                if resume is not None and state is not None and step < max_steps and resume.due():
                    resume.save(state, self._now() - start - eval_seconds, context)
        except (TrialPruned, TrialCancelled, CandidateError):
            if resume is not None:  # it ends for good: nothing to continue
                resume.clear()
            raise
        except TrialStopped:
            if resume is not None and state is not None and state.step > 0:
                resume.save(state, self._now() - start - eval_seconds, context)
                if self.share_as:
                    resume.share(context, self.share_as)
            raise
        finally:
            bar.close()
        seconds = self._now() - start - eval_seconds
        if self.hooks.evaluate_many is not None:
            self.label_metrics = self.evaluate_many(
                self.hooks.evaluate_many, dev_set, extra_dev or {}
            )
        if resume is not None:
            resume.clear()
        return predictions, seconds

    @property
    def final_dev_loss(self) -> float | None:
        """The last step's dev loss (:meth:`predict_scored`); None before it, or not finite."""
        return None if self._final_values is None else self._final_values.get(DEV_LOSS)

    def _restore(self, resume: ProgressFile, state: LoopState) -> tuple[int, float]:
        """Loads the saved progress, if any, and sends its intermediate values again (to the
        retried trial); returns the steps done and the training seconds they took."""
        before = resume.restore(state)
        if not before:
            state.mark(0)
            return 0, 0.0
        self.resumed_from = state.step
        if self.report_metric is not None:
            for step, value in self.reported:
                self.context.report(step, value)
        return state.step, float(before["seconds"])

    def evaluate_many(
        self,
        configurations: EvaluateMany,
        dev_set: EncodedSplit,
        extra_dev: Mapping[str, EncodedSplit] | None = None,
    ) -> dict[str, dict[str, float]]:
        """The task metrics on ``dev_set`` of each configuration ``configurations(model)``
        yields, by label (see :attr:`TrainingHooks.evaluate_many`), and on each ``extra_dev``
        split, suffixed as :class:`~archsearch.worker._evaluate.Evaluator` does (MNLI:
        ``accuracy_mismatched``): a rank trial copied the top rank's otherwise.

        Raises:
            ValueError: Two configurations share a label.
        """
        by_label: dict[str, dict[str, float]] = {}
        for label, configure in configurations(self.model):
            if label in by_label:
                raise ValueError(f"evaluate_many yielded the label {label!r} twice")
            self.context.check()
            with (configure and configure(self.model)) or contextlib.nullcontext():
                if configure is None and self._final_values is not None:
                    values = dict(self._final_values)
                else:
                    predictions, loss = self.predict_scored(dev_set)
                    values = dev_metrics(self.task, predictions, dev_set.labels, loss)
                for split, dev in (extra_dev or {}).items():
                    got = compute_metrics(self.task, self.predict(dev), dev.labels)
                    suffix = split.removeprefix("dev_")
                    values.update({f"{name}_{suffix}": v for name, v in got.items()})
            by_label[label] = values
        return by_label

    def _evaluate(self, step: int, dev_set: EncodedSplit, bar: Any) -> np.ndarray:
        predictions, loss = self.predict_scored(dev_set)
        values = dev_metrics(self.task, predictions, dev_set.labels, loss)
        self._last_values = values
        if self.report_metric is not None and self.report_metric not in values:
            raise CandidateError(  # only dev_loss can be missing: it must be finite
                f"the intermediate metric {self.report_metric!r} could not be measured on the "
                "dev split: a dev label is not one of the model's classes"
            )
        shown = self.report_metric or self.select_metric
        if shown is not None:
            bar.set_postfix({shown: f"{values[shown]:.4f}"}, refresh=False)
        if self.select_metric is not None:
            value = values[self.select_metric]
            if value > self.best_value:  # False for NaN: a NaN score is never the best
                self.best_value, self.best_step = value, step
                self.best_state = {
                    k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
                }
        return predictions

    def predict(self, encoded: EncodedSplit) -> np.ndarray:
        """Class indices (or scores, for regression) for every example, in split order."""
        return self.predict_scored(encoded)[0]

    def predict_scored(self, encoded: EncodedSplit) -> tuple[np.ndarray, float]:
        """:meth:`predict`'s predictions and the mean dev loss of the gold labels, from the
        same forward passes (:func:`~archsearch.worker._dev_scores.predict_scored`)."""
        return predict_scored(
            self.model,
            self.task,
            encoded,
            # no activations kept for backward: room for 2x
            batch_size=2 * self.recipe["batch_size"],
            pad_id=self.pad_id,
            device=self.device,
            precision=self.precision,
        )

    def _now(self) -> float:
        # CUDA runs asynchronously: wait for queued kernels so time lands where it was spent.
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def _nothing() -> None:
    pass
