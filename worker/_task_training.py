"""One task of a :class:`~archsearch.worker._bert_trainer.BertTrainer` trial: build the model,
train it through the loop with the trainer's hooks, score it and measure its costs, keep its
checkpoint (stages 3 to 6 of that module's docstring)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from archsearch.spaces import DEV_LOSS
from archsearch.worker._batches import EncodedSplit, take
from archsearch.worker._checkpoints import checkpoint_root
from archsearch.worker._curriculum import Curriculum
from archsearch.worker._custom_files import label_info
from archsearch.worker._evaluate import CostMeter, Evaluator
from archsearch.worker._finished_tasks import FinishedTasks, each_task
from archsearch.worker._loop import TrainingLoop
from archsearch.worker._models import model_factory
from archsearch.worker._optim import seed_everything
from archsearch.worker._plan import TrainingPlan
from archsearch.worker._precision import Precision
from archsearch.worker._progress import ProgressFile
from archsearch.worker._result_metrics import TaskReports
from archsearch.worker._trainer import CandidateError, TrainContext
from archsearch.worker._trial_crowd import training_answers

if TYPE_CHECKING:
    from archsearch.spaces import Candidate
    from archsearch.worker._bert_trainer import BertTrainer


@dataclasses.dataclass
class TaskOutcome:
    """What one task's training gave: its metrics, kept checkpoint, final dev predictions and
    labels, and notes for the result's info."""

    metrics: dict[str, float]
    checkpoint: str | None
    predictions: np.ndarray
    labels: np.ndarray
    info: dict[str, str] = dataclasses.field(default_factory=dict)
    #: The trained model's 0/1 answers on every training item, in split order, when the
    #: curriculum records them (``crowd_trials``; :mod:`~archsearch.worker._trial_crowd`).
    answers: np.ndarray | None = None
    #: ``(step, value)`` of the intermediate values sent while training the task.
    reported: list[tuple[int, float]] = dataclasses.field(default_factory=list)


def train_task(
    trainer: BertTrainer,
    plan: TrainingPlan,
    reports: TaskReports,
    splits: dict[str, EncodedSplit],
    context: TrainContext,
    precision: Precision,
    curriculum: Curriculum | None = None,
) -> TaskOutcome:
    """Builds, trains, scores and measures one task's model for ``trainer`` (on
    ``curriculum``'s examples each epoch, when given): its model factory, its
    :meth:`~archsearch.worker._bert_trainer.BertTrainer.training_hooks`, the loop, the
    evaluator and cost meter, and its kept checkpoint."""
    task, recipe, candidate = reports.task, plan.recipe, plan.candidate
    evaluator = Evaluator(task, splits)
    costs = CostMeter(context.device, plan.max_seq_length, plan.measure_latency, precision)
    seed_everything(plan.seed)
    with costs.memory:
        model = model_factory(candidate.space).build(plan.architecture, task, trainer.tokenizer)
        model = model.to(context.device)
        hooks = (
            trainer._flexibert_hooks(plan, task, context)
            if plan.is_flexibert  # pre-training stops when asked to
            else trainer.training_hooks(
                candidate, task, torch.device(context.device), context=context
            )
        )
        if curriculum is not None:
            if hooks.data_schedule is not None:
                raise CandidateError("data.curriculum: this candidate's hooks choose the data")
            hooks = dataclasses.replace(
                hooks, data_schedule=curriculum, stateful=(*hooks.stateful, curriculum)
            )
        loop = TrainingLoop(
            model,
            task,
            dict(recipe),
            context,
            reports.report_metric,
            trainer.tokenizer.pad_token_id,
            hooks=hooks,
            precision=precision,
            step_offset=reports.step_offset,
            select_metric=reports.select_metric if plan.keep_checkpoint else None,
            sample_memory=costs.memory.sample,
            resume=job_progress(trainer, candidate, task.id, context),
            share_as=progress_artifact(trainer.name, candidate, task.id),
        )
        if curriculum is not None:
            train = splits["train"]
            curriculum.answer = lambda items: (
                loop.predict(take(train, items)) == train.labels[items]
            )
        predictions, train_seconds = loop.run(
            splits["train"], evaluator.primary, evaluator.extra_splits
        )

    answers = None
    if curriculum is not None and curriculum.answers_name:  # in-sample: on what it trained
        answers = training_answers(loop.predict, splits["train"])
    metrics = evaluator.metrics(loop.predict, predictions)
    if loop.final_dev_loss is not None:  # the primary split's, from the same predictions
        metrics[DEV_LOSS] = loop.final_dev_loss
    metrics.update(costs.metrics(model))
    metrics["train_seconds"] = train_seconds
    metrics["eval_samples"] = float(len(evaluator.primary))
    metrics.update(hooks.metrics)
    if curriculum is not None:
        metrics.update(curriculum.metrics())
    for label, values in loop.label_metrics.items():
        metrics.update({f"{name}@{label}": value for name, value in values.items()})

    checkpoint = None
    if plan.keep_checkpoint:
        folder = checkpoint_root() / candidate.fingerprint()
        if len(plan.tasks) > 1:
            folder = folder / task.id
        checkpoint = str(trainer.save_checkpoint(model, loop, folder, candidate))
    info = curriculum.info() if curriculum is not None else {}
    info.update(label_info(task))  # a custom task's class order: which class f1 scores
    # dev examples as long as max_seq_length (cut, or exactly that long): the default 64 cuts
    # a third of RTE's pairs, where published GLUE figures use 128
    at_max = evaluator.primary.lengths >= plan.max_seq_length
    info["dev_at_max_seq_length"] = f"{float(np.mean(at_max)) if len(at_max) else 0.0:.3f}"
    if loop.resumed_from is not None:
        info["resumed_from_step"] = str(loop.resumed_from)
    gold = evaluator.primary.labels
    if collapsed := _one_answer(predictions, task.is_regression, gold, task.labels):
        info["collapsed_warning"] = collapsed  # show lists it among the workers' warnings
    return TaskOutcome(
        metrics,
        checkpoint,
        predictions,
        evaluator.primary.labels,
        info,
        answers=answers,
        reported=list(loop.reported),
    )


def train_tasks(
    trainer: BertTrainer,
    plan: TrainingPlan,
    reports: list[TaskReports],
    splits: dict[str, dict[str, EncodedSplit]],
    context: TrainContext,
    precision: Precision,
    curricula: dict[str, Curriculum | None],
    finished: FinishedTasks | None = None,
) -> dict[str, TaskOutcome]:
    """:func:`train_task` for each task of the trial in turn, by task id; with ``finished``
    (a multi-task trial), what :func:`~archsearch.worker._finished_tasks.each_task` says."""
    by_id = {r.task.id: r for r in reports}

    def train(task_id: str) -> TaskOutcome:
        return train_task(
            trainer, plan, by_id[task_id], splits[task_id], context, precision, curricula[task_id]
        )

    return each_task(finished, list(by_id), context, train, curricula)


def finished_tasks(trainer: BertTrainer, candidate: Candidate) -> FinishedTasks | None:
    """Where a multi-task trial of ``candidate`` keeps its finished tasks' outcomes (its
    candidate's progress folder); None when the trainer saves no progress."""
    if trainer.save_minutes <= 0:
        return None
    return FinishedTasks(
        checkpoint_root() / "progress" / trainer.name / candidate.fingerprint(),
        share_prefix=f"done-{trainer.name}-{candidate.fingerprint()}-",
        checkpoints=checkpoint_root() / candidate.fingerprint(),  # as train_task keeps them
    )


def job_progress(
    trainer: BertTrainer, candidate: Candidate, task_id: str, context: TrainContext
) -> ProgressFile | None:
    """Where the training of ``candidate`` on ``task_id`` keeps its progress
    (``<checkpoint root>/progress/<trainer>/<fingerprint>/<task>``), with the newest upload
    of the study fetched into it when this folder holds none as recent; None when the trainer
    saves none (``save_minutes`` 0)."""
    if trainer.save_minutes <= 0:
        return None
    folder = checkpoint_root() / "progress" / trainer.name / candidate.fingerprint() / task_id
    progress = ProgressFile(folder, trainer.save_minutes)
    progress.fetch(context, progress_artifact(trainer.name, candidate, task_id))
    return progress


def progress_artifact(trainer: str, candidate: Candidate, task_id: str) -> str:
    """The artifact name a stopped training of ``candidate`` on ``task_id`` uploads its
    progress under (an artifact name's characters only)."""
    task = re.sub(r"[^A-Za-z0-9._-]", "_", task_id)[:40]
    return f"progress-{trainer}-{candidate.fingerprint()}-{task}.pt"


def _one_answer(
    predictions: np.ndarray,
    regression: bool,
    labels: Any = None,
    names: Sequence[str] | None = None,
) -> str:
    """What to say of a model that gives every dev example the same answer (it learned
    nothing it uses: its score is the majority share, or no correlation), else "". A
    regressor's answers count as one when they spread over less than 1% of the gold scores'
    range (an untrained head's outputs differ in the third decimal, never exactly). A class
    is said by its name (``names``, the task's labels in index order) where it has one."""
    values = np.asarray(predictions, dtype=np.float64 if regression else None)
    if len(values) < 2:
        return ""
    if regression:
        gold = np.asarray(labels if labels is not None else values, dtype=np.float64)
        scale = float(np.ptp(gold)) if len(gold) else 0.0
        if float(np.ptp(values)) > max(0.01 * scale, 1e-6):
            return ""
        what = f"about one score ({float(np.min(values)):.3g} to {float(np.max(values)):.3g})"
    else:
        if len(np.unique(values)) > 1:
            return ""
        index = int(values[0])
        name = names[index] if names is not None and 0 <= index < len(names) else str(index)
        what = f"class {index}" if name == str(index) else f"class {name!r}"
    return (
        f"every one of the {len(values)} dev examples got {what}: the model predicts one "
        "answer (more max_steps, another learning rate or a larger model may help)"
    )
