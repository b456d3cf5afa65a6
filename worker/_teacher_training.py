"""The teacher stage of the bert trainer: fine-tuning, caching and scoring task teachers.

:class:`TeacherTraining` is mixed into ``BertTrainer``: it needs the trainer's ``encode`` and
``tokenizer`` (the teacher reads the same data stages as its students) and gives it
``teacher_for`` (what ``init: "teacher"`` and ``distill`` read), ``fine_tune_teacher`` and
``evaluate``.

A teacher's fine-tuning is a training job like a student's: it stops when the trial that needs it
is asked to end, and keeps its progress (``<checkpoint root>/progress/teacher/<cache key>``,
shared as artifact ``progress-teacher-<key[:32]>.pt``), so the next trial that needs the same
teacher continues it rather than starting over: on this machine whatever its study, on one that
shares no folder within the same study (artifacts are looked up in the trial's study).

Imports torch and transformers at module level; ``archsearch.worker`` does not import it
eagerly.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch
from transformers import BertForSequenceClassification

from archsearch.spaces import GlueTask, validate_recipe
from archsearch.worker._batches import EncodedSplit
from archsearch.worker._checkpoints import checkpoint_root
from archsearch.worker._evaluate import Evaluator
from archsearch.worker._loop import TrainingLoop
from archsearch.worker._optim import seed_everything
from archsearch.worker._precision import resolve_precision
from archsearch.worker._progress import ProgressFile
from archsearch.worker._teacher import load_teacher_classifier, teacher_recipe
from archsearch.worker._teacher_cache import TeacherCache, TeacherJob
from archsearch.worker._trainer import TrainContext

#: The ``data`` keys that say where examples come from (the teacher reads its task's whole
#: training split from the same place, without the student's selection).
_SOURCE_KEYS = ("source", "hub_dataset", "custom_task")


class TeacherTraining:
    """Fine-tunes a task's teacher once (cached on disk) and scores models on a task's dev
    splits.

    Attributes:
        teacher_overrides: Per-task changes to the teacher's fine-tuning recipe (part of the
            cache key).
        teacher_metrics: Dev metrics of the teachers this trainer fine-tuned (not of cached
            ones).
    """

    teacher_overrides: dict[str, dict[str, Any]]
    teacher_metrics: dict[str, dict[str, float]]
    tokenizer: Any
    #: Minutes of training between progress saves (0: none); the host trainer's.
    save_minutes: float

    #: The host trainer's tokenising stage (``BertTrainer.encode``), which the teacher's
    #: fine-tuning reads its splits through.
    encode: Callable[..., EncodedSplit]

    def teacher_for(
        self,
        task: GlueTask,
        teacher: str | None,
        device: torch.device,
        data: Mapping[str, Any] | None = None,
        context: TrainContext | None = None,
    ) -> BertForSequenceClassification:
        """The teacher fine-tuned on ``task`` with its standard recipe (cached on disk).

        ``self.teacher_overrides[task_id]`` changes that recipe (and so the cache key); the
        dev metrics of a teacher fine-tuned here are kept in ``self.teacher_metrics``. ``data``
        (the student's data choices) says where the task's examples come from; the teacher
        always uses the whole training split. ``context`` (the trial that needs the teacher)
        stops a fine-tuning when the trial is asked to end (``TrialStopped``), after saving
        its progress for the next trial that needs this teacher.
        """
        overrides = self.teacher_overrides.get(task.id, {})
        recipe = teacher_recipe(task.id, **overrides)
        data = _source_only(data)
        train = self.encode(task.id, "train", 0, validate_recipe(_without_epochs(recipe)), data)

        def fine_tune(job: TeacherJob) -> BertForSequenceClassification:
            progress = None
            if self.save_minutes > 0:
                folder = checkpoint_root() / "progress" / "teacher" / job.key
                progress = ProgressFile(folder, self.save_minutes)
                if context is not None:
                    progress.fetch(context, teacher_progress_artifact(job.key))
            model, metrics = self.fine_tune_teacher(
                task,
                teacher,
                device,
                overrides=overrides,
                context=_on_device(context, device),
                data=data,
                progress=progress,
                share_as=teacher_progress_artifact(job.key),
            )
            self.teacher_metrics[task.id] = metrics
            shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            print(f"teacher fine-tuned on {task.id}: {shown}", file=sys.stderr)
            return model

        model = TeacherCache().get(
            task.id,
            fine_tune,
            recipe=recipe,
            data_hash=train.digest,
            teacher=teacher,
            device=device,
        )
        return model.to(device).eval()

    def evaluate(
        self, model: torch.nn.Module, task: GlueTask, max_seq_length: int = 128
    ) -> dict[str, float]:
        """Dev metrics of a trained model (every dev split of the task)."""
        recipe = validate_recipe({"max_seq_length": max_seq_length})
        evaluator = Evaluator(
            task, {s: self.encode(task.id, s, 0, recipe) for s in task.dev_splits}
        )
        device = next(model.parameters()).device
        loop = TrainingLoop(
            model, task, recipe, TrainContext(device=str(device)), None, self.tokenizer.pad_token_id
        )
        return evaluator.metrics(loop.predict)

    def fine_tune_teacher(
        self,
        task: GlueTask,
        teacher: str | None = None,
        device: torch.device | str = "cpu",
        overrides: dict[str, Any] | None = None,
        context: TrainContext | None = None,
        data: Mapping[str, Any] | None = None,
        progress: ProgressFile | None = None,
        share_as: str = "",
    ) -> tuple[BertForSequenceClassification, dict[str, float]]:
        """Fine-tunes the teacher on ``task`` with ``TEACHER_RECIPES`` (``overrides`` win).

        ``epochs`` becomes ``max_steps = epochs * ceil(train examples / batch size)``; the
        model is scored on the dev split(s) at the end. ``data`` says where the examples come
        from (its ``source``, ``hub_dataset``, ``custom_task``; default: ``source`` auto).
        With ``progress`` the fine-tuning continues from it and keeps it, uploading it as
        ``share_as`` when stopped (see :class:`~archsearch.worker._loop.TrainingLoop`'s
        ``resume``). Returns the model and
        its dev metrics.
        """
        base = teacher_recipe(task.id, **(overrides or {}))
        epochs = float(base["epochs"])
        recipe = validate_recipe(_without_epochs(base))
        data = _source_only(data)
        train = self.encode(task.id, "train", 0, recipe, data)
        steps = max(1, math.ceil(epochs * math.ceil(len(train) / recipe["batch_size"])))
        recipe = {**recipe, "max_steps": steps, "eval_every": steps}
        evaluator = Evaluator(
            task, {s: self.encode(task.id, s, 0, recipe, data) for s in task.dev_splits}
        )
        ctx = context or TrainContext(device=str(device))
        seed_everything(recipe["seed"])
        # SDPA trains faster; the distillation losses read Q/K/V through hooks, not attentions.
        model = load_teacher_classifier(task, teacher, attn_implementation="sdpa").to(ctx.device)
        loop = TrainingLoop(
            model,
            task,
            recipe,
            ctx,
            None,
            self.tokenizer.pad_token_id,
            precision=resolve_precision(recipe.get("precision", "auto"), torch.device(ctx.device)),
            resume=progress,
            share_as=share_as,
        )
        predictions, seconds = loop.run(train, evaluator.primary)
        metrics = evaluator.metrics(loop.predict, predictions)
        metrics["train_seconds"] = seconds
        metrics["train_steps"] = float(steps)
        return model.eval(), metrics


def teacher_progress_artifact(key: str) -> str:
    """The artifact name a stopped fine-tuning of the teacher with cache key ``key`` uploads
    its progress under."""
    return f"progress-teacher-{key[:32]}.pt"


def _on_device(context: TrainContext | None, device: torch.device) -> TrainContext:
    """``context`` (its stop request, its server) training on ``device``."""
    if context is None:
        return TrainContext(device=str(device))
    moved = copy.copy(context)
    moved.device = str(device)
    return moved


def _source_only(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keys of ``data`` that say where examples come from (no selection, no subsets)."""
    return {k: v for k, v in (data or {}).items() if k in _SOURCE_KEYS}


def _without_epochs(recipe: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in recipe.items() if k != "epochs"}
