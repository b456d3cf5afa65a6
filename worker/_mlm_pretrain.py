"""Masked-language-model pre-training of a FlexiBERT encoder, and the corpus it reads.

:func:`read_text_corpus` tokenises a text file into an :class:`MlmCorpus`; :func:`pretrain_mlm`
trains a ``FlexiBertForMaskedLM`` on it with BERT's masking (:func:`mask_tokens`: 15% of the
non-special tokens, of which 80% become ``[MASK]``, 10% a random token, 10% stay) and the
reference's optimiser settings (pretrain_flexibert.py). A pre-training asked to end saves its
state (:class:`MlmTraining`, through a :class:`~archsearch.worker._progress.ProgressFile`) and a
later one continues it to the weights an uninterrupted run gives.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from archsearch.worker._flexibert_model import FlexiBertForMaskedLM
from archsearch.worker._loop_state import random_state, set_random_state
from archsearch.worker._progress import ProgressFile
from archsearch.worker._trainer import TrainContext, TrialStopped

MASK_PROBABILITY = 0.15
# Adam settings of the reference's pre-training (pretrain_flexibert.py): β₂ 0.98, ε 1e-6.
_ADAM_BETAS = (0.9, 0.98)
_ADAM_EPS = 1e-6
_MAX_GRAD_NORM = 1.0


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
    corpus: MlmCorpus,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    seed: int,
    start: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless padded batches in a fresh seeded order each epoch, from batch ``start`` on (the
    orders of the epochs before it are drawn, their batches not built)."""
    if len(corpus) == 0:
        raise ValueError("the pre-training corpus is empty")
    rng = np.random.default_rng(seed)
    per_epoch = -(-len(corpus) // batch_size)
    epochs, skip = divmod(start, per_epoch)
    for _ in range(epochs):
        rng.permutation(len(corpus))
    while True:
        order = rng.permutation(len(corpus))
        for begin in range(skip * batch_size, len(order), batch_size):
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
        skip = 0


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


@dataclasses.dataclass(frozen=True)
class MlmPretraining:
    """What :func:`pretrain_mlm` did: the loss of every step (earlier attempts' included),
    seconds trained over every attempt, and the step this attempt continued from (None: the
    beginning)."""

    losses: list[float]
    seconds: float
    resumed_from: int | None = None


class MlmTraining:
    """One masked-LM pre-training, a step at a time, and the state a stopped one continues
    from (a :class:`~archsearch.worker._progress.Resumable`): weights, AdamW, the schedule,
    the batches' position, the masking generator, torch's random state (dropout) and the
    losses so far.

    AdamW (β₂ 0.98, ε 1e-6 as the reference; no decay on biases and LayerNorms), linear
    warm-up over ``warmup_ratio`` of the steps then linear decay, gradient clipping at 1.0.
    Masking is drawn from a generator seeded with ``seed``, batches in a seeded order.
    """

    def __init__(
        self,
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
    ) -> None:
        self.model, self.corpus, self.steps = model, corpus, steps
        self.batch_size, self.pad_id, self.seed = batch_size, pad_id, seed
        self.device = next(model.parameters()).device
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=learning_rate,
            betas=_ADAM_BETAS,
            eps=_ADAM_EPS,
        )
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(warmup_ratio * steps), steps
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.batches = _batches(corpus, batch_size, pad_id, self.device, seed)
        self.losses: list[float] = []

    @property
    def step(self) -> int:
        """Optimiser steps done."""
        return len(self.losses)

    @property
    def done(self) -> bool:
        return self.step >= self.steps

    def train_step(
        self,
        specials: torch.Tensor,
        mask_id: int,
        autocast: Callable[[], contextlib.AbstractContextManager[Any]],
    ) -> float:
        """One optimiser step on the next batch (the model in training mode); returns its
        loss.

        Raises:
            ValueError: The loss was not finite.
        """
        model = self.model
        batch = next(self.batches)
        corrupted, labels = mask_tokens(
            batch["input_ids"],
            batch["attention_mask"],
            specials,
            mask_id,
            model.flexibert.config.vocab_size,
            self.generator,
        )
        with autocast():
            loss = model(
                input_ids=corrupted,
                attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"],
                labels=labels,
                masked_only=True,
            ).loss
        if not torch.isfinite(loss):
            step = self.step + 1
            raise ValueError(f"MLM pre-training diverged: loss {loss.item()} at step {step}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), _MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.losses.append(float(loss.item()))
        return self.losses[-1]

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "steps": self.steps,
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "masking": self.generator.get_state(),
            "random": random_state(self.device),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continues from ``state``, saved by a pre-training of the same run. A state that
        does not fit changes nothing.

        Raises:
            ValueError: ``state`` does not fit (another model or step count, or finished).
        """
        step, losses = int(state["step"]), [float(v) for v in state["losses"].tolist()]
        if int(state["steps"]) != self.steps or not 0 < step < self.steps or len(losses) != step:
            raise ValueError(
                f"saved step {step} of {state['steps']} does not fit a {self.steps}-step run"
            )
        # torch loads a module's matching tensors before it reports the others: keep a copy
        before = {
            "model": {k: v.clone() for k, v in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scheduler": copy.deepcopy(self.scheduler.state_dict()),
            "masking": self.generator.get_state(),
            "random": random_state(self.device),
        }
        try:
            self._load(state)
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            self._load(before)
            raise ValueError(f"saved state does not fit this pre-training: {e}") from e
        self.losses = losses
        self.batches = _batches(
            self.corpus, self.batch_size, self.pad_id, self.device, self.seed, start=step
        )

    def _load(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["masking"])
        set_random_state(state["random"], self.device)


def pretrain_mlm(
    run: MlmTraining,
    *,
    mask_id: int,
    special_ids: list[int],
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    context: TrainContext | None = None,
    progress: ProgressFile | None = None,
    share_as: str = "",
) -> MlmPretraining:
    """Trains ``run`` (its model, in place) to its last step.

    Args:
        run: The pre-training (model, corpus, steps, optimisation settings).
        mask_id, special_ids: The tokenizer's mask and special ids.
        autocast: A context manager factory the forward passes run under.
        context: Its ``check`` runs before every step (a trial asked to end stops here).
        progress: Where the run continues from, and is saved every ``save_minutes`` and
            when stopped (also uploaded as ``share_as`` when that is given). The caller
            clears it once the weights are kept; a diverged run clears it here.

    Raises:
        ValueError: A step's loss was not finite.
        TrialStopped: ``context`` asked the run to end (its progress saved first).
    """
    before = progress.restore(run) if progress is not None else {}
    start = time.perf_counter() - before.get("seconds", 0.0)
    specials = torch.tensor(sorted(set(special_ids)), dtype=torch.long, device=run.device)
    run.model.train()
    try:
        while not run.done:
            if context is not None:
                context.check()
            run.train_step(specials, mask_id, autocast)
            if progress is not None and progress.due() and not run.done:
                progress.save(run, time.perf_counter() - start, context)
    except TrialStopped:
        if progress is not None and run.step > 0:
            progress.save(run, time.perf_counter() - start, context)
            if share_as and context is not None:
                progress.share(context, share_as)
        raise
    except ValueError:
        if progress is not None:  # diverged: nothing to continue
            progress.clear()
        raise
    return MlmPretraining(run.losses, time.perf_counter() - start, before.get("step"))
