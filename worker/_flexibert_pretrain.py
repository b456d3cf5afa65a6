"""How a FlexiBERT candidate starts: from scratch, MLM-pretrained, or from a trained neighbour.

The three fidelities of FlexiBERT/BOSHNAS (algorithms.md 1.1, 1.4, 2.3), chosen by recipe
keys (:func:`check_fidelity`):

* none: fine-tune from the random initialisation;
* ``pretrain_steps: N`` (+ ``pretrain_text``): masked-language-model pre-training of the
  encoder (:func:`pretrain_mlm`: 15% of the non-special tokens, of which 80% become
  ``[MASK]``, 10% a random token, 10% stay), then fine-tuning. The pre-trained encoder is
  cached on disk (:class:`PretrainCache`) keyed by everything that determines it, so an
  architecture is pre-trained once per (steps, data, seed, optimisation settings);
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
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import get_linear_schedule_with_warmup

from archsearch.spaces._flexibert_overlap import OVERLAP_THRESHOLD
from archsearch.worker._flexibert_model import (
    FlexiBertForMaskedLM,
    FlexiBertForSequenceClassification,
    load_checkpoint,
    transfer_weights,
)

#: Recipe keys of the fidelities, with their JSON types.
FIDELITY_KEYS: dict[str, type] = {
    "pretrain_steps": int,
    "pretrain_text": str,
    "transfer_from": str,
}
#: Environment variable naming the folder pre-trained encoders are cached under.
PRETRAIN_DIR_ENV = "ARCHSEARCH_PRETRAIN_DIR"
MASK_PROBABILITY = 0.15
# Bump when pre-training changes in a way the key does not capture: old entries then miss.
_CACHE_FORMAT = 1
# Adam settings of the reference's pre-training (pretrain_flexibert.py): β₂ 0.98, ε 1e-6.
_ADAM_BETAS = (0.9, 0.98)
_ADAM_EPS = 1e-6
_MAX_GRAD_NORM = 1.0
_ENCODER_FILE = "encoder.safetensors"
_META_FILE = "pretrain.json"


@dataclasses.dataclass(frozen=True)
class Fidelity:
    """How a candidate starts (see the module docstring).

    Attributes:
        pretrain_steps: MLM optimiser steps before fine-tuning (0: none).
        pretrain_text: A UTF-8 text file, one sentence per line, to pre-train on; None: the
            task's training sentences.
        transfer_from: A checkpoint folder of another FlexiBERT candidate; None: no transfer.
    """

    pretrain_steps: int = 0
    pretrain_text: str | None = None
    transfer_from: str | None = None

    @property
    def default(self) -> bool:
        """True when the candidate is fine-tuned from scratch."""
        return self.pretrain_steps == 0 and self.transfer_from is None


def check_fidelity(values: Mapping[str, Any]) -> Fidelity:
    """The :class:`Fidelity` of a recipe's fidelity keys (others are ignored).

    Raises:
        ValueError: A key has the wrong type or value; the message names it and the fix.
    """
    given = {k: values[k] for k in FIDELITY_KEYS if k in values}
    for key, value in given.items():
        kind = FIDELITY_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            wanted = "an integer" if kind is int else "a path string"
            raise ValueError(f"recipe.{key} must be {wanted}, got {value!r}")
    steps = given.get("pretrain_steps", 0)
    if steps < 0:
        raise ValueError(f"recipe.pretrain_steps must be >= 0, got {steps}")
    if "pretrain_text" in given and steps == 0:
        raise ValueError("recipe.pretrain_text needs recipe.pretrain_steps > 0")
    for key in ("pretrain_text", "transfer_from"):
        if key in given and not given[key]:
            raise ValueError(f"recipe.{key} must be a non-empty path")
    if "transfer_from" in given:
        from archsearch.worker._checkpoint_artifacts import parse_trial_ref

        parse_trial_ref(given["transfer_from"])  # ValueError for a malformed "trial:..." form
    return Fidelity(steps, given.get("pretrain_text"), given.get("transfer_from"))


# ----------------------------------------------------------------------------- corpus


@dataclasses.dataclass(frozen=True)
class MlmCorpus:
    """Tokenised pre-training sequences, stored flat like the trainer's ``EncodedSplit``.

    Attributes:
        input_ids: Every sequence's token ids (special tokens included), concatenated.
        token_type_ids: Segment ids aligned with ``input_ids``.
        offsets: Sequence ``i`` spans ``offsets[i]:offsets[i + 1]``.
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def digest(self) -> str:
        """SHA-256 of the token ids, segment ids and offsets: what was pre-trained on."""
        h = hashlib.sha256()
        for array in (self.input_ids, self.token_type_ids, self.offsets):
            h.update(str(array.dtype).encode())
            h.update(np.ascontiguousarray(array).data)
        return h.hexdigest()


def read_text_corpus(path: str | Path, tokenizer: Any, max_length: int) -> MlmCorpus:
    """Tokenises a text file, one sentence per line (blank lines skipped), each truncated
    to ``max_length`` tokens with ``[CLS]``/``[SEP]``.

    Raises:
        FileNotFoundError: The file does not exist on this worker.
        ValueError: It holds no sentence.
    """
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    sentences = [line for line in lines if line]
    if not sentences:
        raise ValueError(f"recipe.pretrain_text {path} holds no sentence (one per line)")
    return text_corpus(sentences, tokenizer, max_length)


def text_corpus(sentences: Sequence[str], tokenizer: Any, max_length: int) -> MlmCorpus:
    """Tokenises texts, each truncated to ``max_length`` tokens with ``[CLS]``/``[SEP]``."""
    encoded = tokenizer(
        sentences, truncation=True, max_length=max_length, return_attention_mask=False
    )
    ids = [np.asarray(row, dtype=np.int32) for row in encoded["input_ids"]]
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum([len(row) for row in ids], out=offsets[1:])
    flat = np.concatenate(ids)
    return MlmCorpus(flat, np.zeros_like(flat, dtype=np.int8), offsets)


def _batches(
    corpus: MlmCorpus, batch_size: int, pad_id: int, device: torch.device, seed: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless padded batches in a fresh seeded order each epoch."""
    if len(corpus) == 0:
        raise ValueError("the pre-training corpus is empty")
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(corpus))
        for begin in range(0, len(order), batch_size):
            indices = order[begin : begin + batch_size]
            starts = corpus.offsets[indices]
            lengths = corpus.offsets[indices + 1] - starts
            columns = np.arange(int(lengths.max()))
            mask = columns < lengths[:, None]
            positions = starts[:, None] + np.minimum(columns, lengths[:, None] - 1)
            ids = np.where(mask, corpus.input_ids[positions], pad_id)
            types = np.where(mask, corpus.token_type_ids[positions], 0)
            yield {
                "input_ids": torch.from_numpy(ids.astype(np.int64)).to(device),
                "token_type_ids": torch.from_numpy(types.astype(np.int64)).to(device),
                "attention_mask": torch.from_numpy(mask.astype(np.int64)).to(device),
            }


# ----------------------------------------------------------------------------- MLM


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: picks 15% of the real, non-special tokens; of those 80% become
    ``mask_id``, 10% a uniformly random token and 10% stay unchanged.

    At least one token per batch is picked (when any can be), so the loss is never an empty
    mean.

    Returns:
        The corrupted ids and the labels (the original id where picked, -100 elsewhere).
    """
    device = input_ids.device

    def uniform() -> torch.Tensor:
        return torch.rand(input_ids.shape, generator=generator).to(device)

    eligible = attention_mask.bool() & ~torch.isin(input_ids, special_ids)
    picked = (uniform() < MASK_PROBABILITY) & eligible
    if not picked.any() and eligible.any():
        candidates = eligible.flatten().nonzero().squeeze(1)
        choice = torch.randint(len(candidates), (1,), generator=generator).item()
        picked.view(-1)[candidates[int(choice)]] = True
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    draw = uniform()
    corrupted = input_ids.clone()
    corrupted[picked & (draw < 0.8)] = mask_id
    randomised = picked & (draw >= 0.8) & (draw < 0.9)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator).to(device)
    corrupted[randomised] = random_ids[randomised]
    return corrupted, labels


def pretrain_mlm(
    model: FlexiBertForMaskedLM,
    corpus: MlmCorpus,
    steps: int,
    *,
    batch_size: int,
    learning_rate: float,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    seed: int = 0,
    pad_id: int = 0,
    mask_id: int,
    special_ids: list[int],
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    check: Callable[[], None] | None = None,
) -> list[float]:
    """Masked-language-model training of ``model`` for ``steps`` optimiser steps, in place.

    AdamW (β₂ 0.98, ε 1e-6 as the reference; no decay on biases and LayerNorms), linear
    warm-up over ``warmup_ratio`` of the steps then linear decay, gradient clipping at 1.0.
    Masking is drawn from a generator seeded with ``seed``, batches in a seeded order.

    Args:
        model: The MLM model, on its device.
        corpus: Sequences to train on.
        steps: Optimiser steps.
        batch_size: Sequences per step.
        learning_rate, weight_decay, warmup_ratio: Optimisation settings.
        seed: Seeds the batch order and the masking.
        pad_id, mask_id, special_ids: The tokenizer's padding, mask and special ids.
        autocast: A context manager factory the forward passes run under.
        check: Called before every step (raises to stop, e.g. ``TrainContext.check``).

    Returns:
        The loss of every step.

    Raises:
        ValueError: A step's loss was not finite.
    """
    device = next(model.parameters()).device
    vocab_size = model.flexibert.config.vocab_size
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=learning_rate,
        betas=_ADAM_BETAS,
        eps=_ADAM_EPS,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * steps), steps)
    generator = torch.Generator().manual_seed(seed)
    specials = torch.tensor(sorted(set(special_ids)), dtype=torch.long, device=device)
    batches = _batches(corpus, batch_size, pad_id, device, seed)
    losses: list[float] = []
    model.train()
    for step in range(1, steps + 1):
        if check is not None:
            check()
        batch = next(batches)
        corrupted, labels = mask_tokens(
            batch["input_ids"], batch["attention_mask"], specials, mask_id, vocab_size, generator
        )
        with autocast():
            loss = model(
                input_ids=corrupted,
                attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"],
                labels=labels,
            ).loss
        if not torch.isfinite(loss):
            raise ValueError(f"MLM pre-training diverged: loss {loss.item()} at step {step}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), _MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
    return losses


# ----------------------------------------------------------------------------- cache


def pretrain_root() -> Path:
    """Where pre-trained encoders are cached: ``$ARCHSEARCH_PRETRAIN_DIR``, else
    ``$ARCHSEARCH_CACHE_DIR/pretrained``, else ``~/.cache/archsearch/pretrained``."""
    named = os.environ.get(PRETRAIN_DIR_ENV)
    if named:
        return Path(named).expanduser()
    base = os.environ.get("ARCHSEARCH_CACHE_DIR")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "archsearch"
    return root / "pretrained"


class PretrainCache:
    """Pre-trained encoders on disk, one folder per key (:meth:`key`).

    A folder holds ``encoder.safetensors`` (the encoder's ``state_dict``) and
    ``pretrain.json`` (the key's fields, the final loss, the seconds it took). Folders are
    written under a temporary name and renamed, so a reader never sees half an entry and two
    workers pre-training the same key at once both end with a complete one.

    Args:
        root: The cache folder; default :func:`pretrain_root`.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else pretrain_root()

    @staticmethod
    def key(fields: Mapping[str, Any]) -> str:
        """A digest of the JSON of ``fields`` (architecture, steps, data hash, seed and the
        optimisation settings): equal fields, equal pre-trained encoder."""
        text = json.dumps({"format": _CACHE_FORMAT, **fields}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def get(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The cached encoder weights and metadata, or None."""
        folder = self.root / key
        if not (folder / _ENCODER_FILE).is_file() or not (folder / _META_FILE).is_file():
            return None
        meta = json.loads((folder / _META_FILE).read_text())
        return load_file(str(folder / _ENCODER_FILE)), meta

    def put(self, key: str, state: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
        """Stores an entry (replacing an existing one); returns its folder."""
        folder = self.root / key
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = folder.with_name(f".{key}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
        save_file(tensors, str(staging / _ENCODER_FILE))
        (staging / _META_FILE).write_text(json.dumps(dict(meta), indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(staging, folder)
        except OSError:  # another worker renamed its copy in between: keep theirs
            shutil.rmtree(staging, ignore_errors=True)
        return folder


# ----------------------------------------------------------------------------- wiring


def initial_weights(
    model: FlexiBertForSequenceClassification,
    fidelity: Fidelity,
    *,
    corpus: Callable[[], MlmCorpus],
    recipe: Mapping[str, Any],
    tokenizer: Any,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    check: Callable[[], None] | None = None,
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
        check: Called before every pre-training step.
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
            model, fidelity, corpus(), recipe, tokenizer, autocast, check, cache
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
    check: Callable[[], None] | None,
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
    if cached is not None:
        state, meta = cached
        model.flexibert.load_state_dict(state)
        return {
            "pretrain_steps": float(fidelity.pretrain_steps),
            "pretrain_loss": float(meta["loss"]),
            "pretrain_seconds": 0.0,
            "pretrain_cached": 1.0,
        }
    mlm = FlexiBertForMaskedLM(config).to(next(model.parameters()).device)
    # Start from the classifier's own random encoder, so the seed alone decides both.
    mlm.flexibert.load_state_dict(model.flexibert.state_dict())
    start = time.perf_counter()
    losses = pretrain_mlm(
        mlm,
        corpus,
        fidelity.pretrain_steps,
        batch_size=recipe["batch_size"],
        learning_rate=recipe["learning_rate"],
        weight_decay=recipe["weight_decay"],
        warmup_ratio=recipe["warmup_ratio"],
        seed=recipe["seed"],
        pad_id=tokenizer.pad_token_id,
        mask_id=tokenizer.mask_token_id,
        special_ids=list(tokenizer.all_special_ids),
        autocast=autocast,
        check=check,
    )
    seconds = time.perf_counter() - start
    tail = losses[-max(1, len(losses) // 10) :]
    loss = float(np.mean(tail))
    model.flexibert.load_state_dict(mlm.flexibert.state_dict())
    cache.put(key, mlm.flexibert.state_dict(), {**fields, "loss": loss, "seconds": seconds})
    return {
        "pretrain_steps": float(fidelity.pretrain_steps),
        "pretrain_loss": loss,
        "pretrain_seconds": seconds,
        "pretrain_cached": 0.0,
    }
