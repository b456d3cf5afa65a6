"""How a FlexiBERT candidate starts: from scratch, MLM-pretrained, or from a trained neighbour.

The three fidelities of FlexiBERT/BOSHNAS (algorithms.md 1.1, 1.4, 2.3), chosen by recipe
keys (``_fidelity.check_fidelity``):

* none: fine-tune from the random initialisation;
* ``pretrain_steps: N`` (+ ``pretrain_text``): masked-language-model pre-training of the
  encoder (``_mlm_pretrain.pretrain_mlm``: 15% of the non-special tokens, of which 80% become
  ``[MASK]``, 10% a random token, 10% stay), then fine-tuning. The pre-trained encoder is
  cached on disk (``_pretrain_cache.PretrainCache``) keyed by everything that determines it, so an
  architecture is pre-trained once per (steps, data, seed, optimisation settings). A
  pre-training the trial is asked to end in keeps its progress under that key
  (``<checkpoint root>/progress/pretrain/<key>``, uploaded as artifact
  ``progress-pretrain-<key[:32]>.pt``), so the next trial that needs the same encoder, here or
  on a worker of the same study that shares no folder, continues it; a finished one goes to
  the study too (``_pretrain_sharing``), so a worker that shares no folder does not pre-train
  it again;
* ``transfer_from: PATH``: ordered weight transfer from a checkpoint another candidate left
  (``keep_checkpoint``), then fine-tuning. ``"trial:N"`` / ``"trial:STUDY:N"`` names a trial
  whose checkpoint went to the server; the trainer downloads it first and passes the folder
  here (``_checkpoint_artifacts``). Given together with ``pretrain_steps``, the
  paper's rule decides: transfer when the overlap is at least
  :data:`~archsearch.spaces._flexibert_overlap.OVERLAP_THRESHOLD` (0.8), else pre-train.

:func:`initial_weights` wires them for the trainer and returns the metrics to record
(``transfer_overlap``, ``transferred``, ``pretrain_steps``, ``pretrain_loss``,
``pretrain_seconds``, ``pretrain_cached``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from archsearch.spaces._flexibert_overlap import OVERLAP_THRESHOLD
from archsearch.worker._checkpoint_dir import checkpoint_root
from archsearch.worker._fidelity import Fidelity
from archsearch.worker._flexibert_model import (
    FlexiBertForMaskedLM,
    FlexiBertForSequenceClassification,
)
from archsearch.worker._flexibert_transfer import load_checkpoint, transfer_weights
from archsearch.worker._mlm_pretrain import MlmCorpus, MlmTraining, pretrain_mlm
from archsearch.worker._pretrain_cache import PretrainCache
from archsearch.worker._pretrain_sharing import fetch_encoder, share_encoder
from archsearch.worker._progress import DEFAULT_SAVE_MINUTES, ProgressFile
from archsearch.worker._trainer import TrainContext


def initial_weights(
    model: FlexiBertForSequenceClassification,
    fidelity: Fidelity,
    *,
    corpus: Callable[[], MlmCorpus],
    recipe: Mapping[str, Any],
    tokenizer: Any,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    context: TrainContext | None = None,
    save_minutes: float = DEFAULT_SAVE_MINUTES,
    cache: PretrainCache | None = None,
) -> dict[str, float]:
    """Brings a freshly built classifier to its fidelity's starting weights, in place.

    Transfer (``transfer_from``) copies a neighbour's weights when no pre-training is asked
    for, or when the overlap reaches 0.8; otherwise ``pretrain_steps`` pre-trains the encoder
    (from the cache when this exact run was done before). Afterwards the global torch RNG is
    re-seeded with the recipe's seed, so fine-tuning draws the same dropout masks whether the
    encoder came from the cache or was just pre-trained.

    Args:
        model: The classifier, freshly initialised (under the recipe's seed).
        fidelity: What to do.
        corpus: Gives the pre-training corpus (called only when pre-training runs).
        recipe: The checked recipe (``seed``, ``batch_size``, ``learning_rate``,
            ``weight_decay``, ``warmup_ratio``, ``max_seq_length``).
        tokenizer: The tokenizer (padding, mask and special ids).
        autocast: The forward passes' precision.
        context: The trial's: a pre-training it asks to end keeps its progress (every
            ``save_minutes`` too; 0 keeps none) for the next trial that needs this encoder.
        cache: Where pre-trained encoders are kept; default :class:`PretrainCache` ().

    Returns:
        The metrics to record: ``transfer_overlap`` and ``transferred`` (1.0 or 0.0) with
        ``transfer_from``; ``pretrain_steps`` (steps the encoder was pre-trained for, 0.0
        when transfer won), ``pretrain_loss`` (mean MLM loss of the last 10% of the steps),
        ``pretrain_seconds`` (0.0 from the cache) and ``pretrain_cached`` with
        ``pretrain_steps``.

    Raises:
        FileNotFoundError: ``transfer_from`` is not a FlexiBERT checkpoint on this worker.
    """
    metrics: dict[str, float] = {}
    pretrain = fidelity.pretrain_steps > 0
    if fidelity.transfer_from is not None:
        source_config, state = load_checkpoint(fidelity.transfer_from)
        source_arch = source_config.architecture
        overlap = transfer_weights(state, source_arch, model, apply=False)
        transfer = not pretrain or overlap >= OVERLAP_THRESHOLD
        if transfer:
            transfer_weights(state, source_arch, model)
            pretrain = False
        metrics["transfer_overlap"] = overlap
        metrics["transferred"] = float(transfer)
    if fidelity.pretrain_steps > 0:
        metrics["pretrain_steps"] = 0.0
    if pretrain:
        pretrained = _pretrained_encoder(
            model, fidelity, corpus(), recipe, tokenizer, autocast, context, save_minutes, cache
        )
        metrics.update(pretrained)
    torch.manual_seed(recipe["seed"])
    return metrics


def _pretrained_encoder(
    model: FlexiBertForSequenceClassification,
    fidelity: Fidelity,
    corpus: MlmCorpus,
    recipe: Mapping[str, Any],
    tokenizer: Any,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
    context: TrainContext | None,
    save_minutes: float,
    cache: PretrainCache | None,
) -> dict[str, float]:
    config = model.flexibert.config
    cache = cache or PretrainCache()
    fields = {
        "architecture": config.architecture,
        "steps": fidelity.pretrain_steps,
        "data_hash": corpus.digest,
        "seed": recipe["seed"],
        "vocab_size": config.vocab_size,
        "max_positions": config.max_positions,
        "type_vocab": config.type_vocab,
        **{k: recipe[k] for k in ("batch_size", "learning_rate", "weight_decay", "warmup_ratio")},
    }
    key = cache.key(fields)
    cached = cache.get(key)
    if cached is None and context is not None and fetch_encoder(cache, key, context) is not None:
        cached = cache.get(key)  # another machine of the study pre-trained it
    if cached is not None:
        state, meta = cached
        model.flexibert.load_state_dict(state)
        if context is not None:  # from another study's trial, say: the study's first copy
            share_encoder(cache, key, context)
        return {
            "pretrain_steps": float(fidelity.pretrain_steps),
            "pretrain_loss": float(meta["loss"]),
            "pretrain_seconds": 0.0,
            "pretrain_cached": 1.0,
        }
    mlm = FlexiBertForMaskedLM(config).to(next(model.parameters()).device)
    # Start from the classifier's own random encoder, so the seed alone decides both.
    mlm.flexibert.load_state_dict(model.flexibert.state_dict())
    progress = None
    if save_minutes > 0:
        progress = ProgressFile(checkpoint_root() / "progress" / "pretrain" / key, save_minutes)
        if context is not None:
            progress.fetch(context, pretrain_progress_artifact(key))
    run = MlmTraining(
        mlm,
        corpus,
        fidelity.pretrain_steps,
        batch_size=recipe["batch_size"],
        learning_rate=recipe["learning_rate"],
        weight_decay=recipe["weight_decay"],
        warmup_ratio=recipe["warmup_ratio"],
        seed=recipe["seed"],
        pad_id=tokenizer.pad_token_id,
    )
    done = pretrain_mlm(
        run,
        mask_id=tokenizer.mask_token_id,
        special_ids=list(tokenizer.all_special_ids),
        autocast=autocast,
        context=context,
        progress=progress,
        share_as=pretrain_progress_artifact(key),
    )
    tail = done.losses[-max(1, len(done.losses) // 10) :]
    loss = float(np.mean(tail))
    model.flexibert.load_state_dict(mlm.flexibert.state_dict())
    cache.put(key, mlm.flexibert.state_dict(), {**fields, "loss": loss, "seconds": done.seconds})
    if progress is not None:  # kept in the cache now
        progress.clear()
    if context is not None:  # for the study's trials on other machines
        share_encoder(cache, key, context)
    return {
        "pretrain_steps": float(fidelity.pretrain_steps),
        "pretrain_loss": loss,
        "pretrain_seconds": done.seconds,
        "pretrain_cached": 0.0,
    }


def pretrain_progress_artifact(key: str) -> str:
    """The artifact name a stopped pre-training with cache key ``key`` uploads its progress
    under."""
    return f"progress-pretrain-{key[:32]}.pt"
