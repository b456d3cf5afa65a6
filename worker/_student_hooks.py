"""The init and loss hooks of the bert trainer's students (:class:`TrainingHooks`).

* :func:`teacher_hooks`: a BERT student's recipe ``init: "teacher"`` (AutoDistil's extraction
  rule, ``_extract``) and ``distill`` (the losses of ``_distill``), against a fine-tuned teacher.
* :func:`flexibert_hooks`: a FlexiBERT student's fidelity (masked-LM pre-training or ordered
  weight transfer, ``_flexibert_pretrain``).

Imports torch at module level; ``archsearch.worker`` does not import it eagerly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from archsearch.worker._batches import EncodedSplit
from archsearch.worker._distill import Distiller
from archsearch.worker._extract import init_student_from_teacher
from archsearch.worker._flexibert_model import FlexiBertForSequenceClassification
from archsearch.worker._flexibert_pretrain import initial_weights
from archsearch.worker._loop import InitFn, LossFn, TrainingHooks
from archsearch.worker._mlm_pretrain import MlmCorpus, read_text_corpus, text_corpus
from archsearch.worker._plan import TrainingPlan
from archsearch.worker._precision import fp32_autocast, resolve_precision
from archsearch.worker._progress import DEFAULT_SAVE_MINUTES
from archsearch.worker._trainer import CandidateError, TrainContext


def needs_teacher(recipe: Mapping[str, Any]) -> bool:
    """Whether the recipe's ``init`` or ``distill`` reads a fine-tuned teacher."""
    distill = recipe.get("distill") or {}
    mode = distill.get("mode", "logits") if distill else "none"
    return recipe.get("init", "random") != "random" or mode != "none"


def teacher_hooks(recipe: Mapping[str, Any], teacher: torch.nn.Module) -> TrainingHooks:
    """Hooks that start a BERT student from ``teacher`` and/or distil it.

    * ``init: "teacher"``: evenly spaced teacher layers, leading slices of every weight matrix
      (``worker/_extract.py``), the classifier head included.
    * ``distill: {"mode": "logits" | "minilm" | "minilmv2", ...}``: ``worker/_distill.py``'s
      ``Distiller`` loss against ``teacher`` on the same batch (one distiller per model).

    Raises (from the hooks, when called):
        CandidateError: The student cannot be initialised from or distilled against
            ``teacher`` (shapes that do not fit).
    """
    distill = dict(recipe.get("distill") or {})
    mode = distill.get("mode", "logits") if distill else "none"

    init_fn: InitFn | None = None
    if recipe.get("init", "random") == "teacher":

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
                        teacher,  # type: ignore[arg-type]
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


def flexibert_hooks(
    plan: TrainingPlan,
    tokenizer: Any,
    train_split: Callable[[], EncodedSplit],
    context: TrainContext | None = None,
    pretrain_texts: Callable[[], Sequence[str]] | None = None,
    save_minutes: float = DEFAULT_SAVE_MINUTES,
) -> TrainingHooks:
    """Hooks that bring a FlexiBERT student to its fidelity's starting weights.

    Args:
        plan: The plan (its fidelity and recipe).
        tokenizer: Tokenises a ``pretrain_text`` file.
        train_split: The task's tokenised training split: the default pre-training corpus
            (called only when needed).
        context: The trial's: checked before every pre-training step; a pre-training it
            asks to end keeps its progress for the next trial that needs the same encoder.
        pretrain_texts: The pre-training texts a ``data.pretrain_selection`` chose (called
            only when needed); None: the candidate has none.
        save_minutes: Minutes between saves of a pre-training's progress (0: none).

    The hooks record what they measured (``pretrain_loss``, ``transfer_overlap``, ...) in
    ``TrainingHooks.metrics``.
    """
    recipe, fidelity = plan.recipe, plan.fidelity
    if fidelity.default:
        return TrainingHooks()

    def corpus() -> MlmCorpus:
        if fidelity.pretrain_text is not None:
            try:
                return read_text_corpus(fidelity.pretrain_text, tokenizer, recipe["max_seq_length"])
            except ValueError as e:
                raise CandidateError(str(e)) from e
        if pretrain_texts is not None:
            return text_corpus(pretrain_texts(), tokenizer, recipe["max_seq_length"])
        train = train_split()
        return MlmCorpus(train.input_ids, train.token_type_ids, train.offsets)

    metrics: dict[str, float] = {}

    def init_fn(model: torch.nn.Module) -> None:
        assert isinstance(model, FlexiBertForSequenceClassification)
        device = next(model.parameters()).device
        precision = resolve_precision(recipe["precision"], device)
        # fp16 needs loss scaling, which the short pre-training loop does not do: fp32.
        autocast = functools.partial(
            precision.autocast if not precision.scaled else fp32_autocast, device
        )
        metrics.update(
            initial_weights(
                model,
                fidelity,
                corpus=corpus,
                recipe=dict(recipe),
                tokenizer=tokenizer,
                autocast=autocast,
                context=context,
                save_minutes=save_minutes,
            )
        )

    return TrainingHooks(init_fn=init_fn, init_sets_weights=True, metrics=metrics)
