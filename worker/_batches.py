"""Tokenised splits and the batches the training loop draws from them.

* :class:`EncodedSplit`: a tokenised split, stored flat (one int array plus offsets).
* :func:`tokenize_examples`: examples to an :class:`EncodedSplit`.
* :func:`epoch_batches`: the micro-batches of indices, a fresh seeded permutation each epoch,
  of the examples a data schedule chose for that epoch (all of them without one); its
  position can be saved and restored.
* :func:`take`: some examples of a split, as a split (a curriculum's held-out items).
* :func:`collate`: one batch, padded to its own longest example, on the device.

Imports torch at module level; ``archsearch.worker`` does not import it eagerly.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from archsearch.spaces._recipe import MIN_PAIR_SEQ_LENGTH
from archsearch.worker._example import GlueExample
from archsearch.worker._trainer import CandidateError

# Tokenise in chunks so the tokenizer's per-example Python lists never hold a whole large
# split (QQP/MNLI train) at once.
_TOKENIZE_CHUNK = 8192

#: ``schedule(epoch) -> indices``: the training examples (indices into the training split) of
#: epoch ``epoch`` (0 for the first pass); None means every example.
DataSchedule = Callable[[int], "Sequence[int] | np.ndarray | None"]


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


def tokenize_examples(
    tokenizer: Any, examples: list[GlueExample], seq_len: int, regression: bool
) -> EncodedSplit:
    """Tokenises ``examples`` (single texts or pairs), truncated to ``seq_len`` tokens."""
    ids: list[np.ndarray] = []
    types: list[np.ndarray] = []
    lengths: list[int] = []
    for begin in range(0, len(examples), _TOKENIZE_CHUNK):
        chunk = examples[begin : begin + _TOKENIZE_CHUNK]
        first = [e.texts[0] for e in chunk]
        second = [e.texts[1] for e in chunk] if len(chunk[0].texts) > 1 else None
        if second is not None and seq_len < MIN_PAIR_SEQ_LENGTH:  # kept whole, silently
            raise CandidateError(
                f"recipe.max_seq_length {seq_len} cannot hold a sentence pair: must be >= "
                f"{MIN_PAIR_SEQ_LENGTH} ([CLS], a token of each text, two [SEP])"
            )
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


def take(encoded: EncodedSplit, indices: np.ndarray) -> EncodedSplit:
    """The examples ``indices`` of ``encoded``, in that order, as a split of their own."""
    indices = np.asarray(indices, dtype=np.int64)
    starts, ends = encoded.offsets[indices], encoded.offsets[indices + 1]
    spans = [np.arange(a, b, dtype=np.int64) for a, b in zip(starts, ends, strict=True)]
    positions = np.concatenate(spans) if spans else np.empty(0, np.int64)
    offsets = np.zeros(len(indices) + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=offsets[1:])
    return EncodedSplit(
        input_ids=encoded.input_ids[positions],
        token_type_ids=encoded.token_type_ids[positions],
        offsets=offsets,
        labels=encoded.labels[indices],
    )


def epoch_batches(
    n: int, batch_size: int, seed: int, schedule: DataSchedule | None = None
) -> EpochBatches:
    """Endless micro-batches of indices into a split of ``n`` examples: a fresh seeded
    permutation each epoch, of the indices ``schedule(epoch)`` returns (all without one).

    Without a schedule the order is exactly that of earlier versions (one ``permutation(n)``
    per epoch), so seeded runs reproduce.

    Raises:
        CandidateError: The split is empty, or (when drawn) the schedule gave an epoch no
            examples.
        ValueError: (When drawn) the schedule returned an index outside ``[0, n)``.
    """
    return EpochBatches(n, batch_size, seed, schedule)


class EpochBatches(Iterator[np.ndarray]):
    """The iterator :func:`epoch_batches` returns; its position can be saved and restored
    (:meth:`state_dict`), so a resumed training draws the batches it would have drawn."""

    def __init__(
        self, n: int, batch_size: int, seed: int, schedule: DataSchedule | None = None
    ) -> None:
        if n == 0:
            raise CandidateError("the training split is empty")
        self.n, self.batch_size, self.schedule = n, batch_size, schedule
        self._rng = np.random.default_rng(seed)
        #: The epoch being drawn from (-1 before the first).
        self.epoch = -1
        self._order = np.empty(0, dtype=np.int64)
        self._begin = 0

    def __iter__(self) -> EpochBatches:
        return self

    def __next__(self) -> np.ndarray:
        if self._begin >= len(self._order):
            self._next_epoch()
        batch = self._order[self._begin : self._begin + self.batch_size]
        self._begin += self.batch_size
        return batch

    def _next_epoch(self) -> None:
        epoch = self.epoch + 1
        chosen = self.schedule(epoch) if self.schedule is not None else None
        if chosen is None:
            order = self._rng.permutation(self.n)
        else:
            indices = np.asarray(chosen, dtype=np.int64)
            if indices.size == 0:
                raise CandidateError(f"the data schedule gave epoch {epoch} no examples")
            if indices.min() < 0 or indices.max() >= self.n:
                raise ValueError(
                    f"the data schedule gave epoch {epoch} indices outside [0, {self.n}): "
                    f"{int(indices.min())}..{int(indices.max())}"
                )
            order = indices[self._rng.permutation(len(indices))]
        self.epoch, self._order, self._begin = epoch, order, 0

    def state_dict(self) -> dict[str, Any]:
        """The position: epoch, its order, the next batch's start and the generator's state
        (the order is shared, not copied: it is never changed in place)."""
        return {
            "epoch": self.epoch,
            "order": torch.from_numpy(self._order),
            "begin": self._begin,
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues from ``state`` (of the same split and seed) without asking the schedule
        again for the epochs already drawn.

        Raises:
            ValueError: ``state`` does not fit a split of ``n`` examples.
        """
        order = np.asarray(state["order"], dtype=np.int64)
        if order.size and (order.min() < 0 or order.max() >= self.n):
            raise ValueError(f"saved batches index outside a split of {self.n} examples")
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        self.epoch, self._order = int(state["epoch"]), order.copy()
        self._begin, self._rng = int(state["begin"]), rng


def collate(
    encoded: EncodedSplit,
    indices: np.ndarray,
    pad_id: int,
    device: torch.device,
    with_labels: bool = True,
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
    np.copyto(packed[0], np.where(mask, encoded.input_ids[positions], pad_id))
    np.copyto(packed[1], np.where(mask, encoded.token_type_ids[positions], 0))
    np.copyto(packed[2], mask)
    tensors = torch.from_numpy(packed)
    labels = torch.from_numpy(encoded.labels[indices]) if with_labels else None
    if device.type == "cuda":
        tensors = tensors.pin_memory().to(device, non_blocking=True)
        if labels is not None:
            labels = labels.pin_memory().to(device, non_blocking=True)
    batch = {
        "input_ids": tensors[0],
        "token_type_ids": tensors[1],
        "attention_mask": tensors[2],
    }
    if labels is not None:
        batch["labels"] = labels
    return batch
