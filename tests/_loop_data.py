"""A tiny TrainingLoop setting shared by the loop's tests: the unit tests' 1 x 32 BERT on
synthetic token data where each batch says which examples it holds."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from _tiny import TINY_BERT

from archsearch.spaces import get_task
from archsearch.worker._batches import EncodedSplit
from archsearch.worker._models import model_factory

TASK = get_task("sst2")
VOCAB = 120
N_TRAIN = 64


class _Tokenizer:
    """What a model factory reads of a tokenizer."""

    pad_token_id = 0

    def __len__(self) -> int:
        return VOCAB


def split(n: int, seed: int) -> EncodedSplit:
    """``n`` six-token examples; example ``i`` carries token ``2 + i`` second, so a batch says
    which examples it holds; the label is that of a learnable random token rule."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(2, VOCAB, size=(n, 6))
    rows[:, 0] = 1
    rows[:, 1] = 2 + np.arange(n)
    labels = (rows[:, 2] % 2).astype(np.int64)
    return EncodedSplit(
        input_ids=rows.reshape(-1).astype(np.int32),
        token_type_ids=np.zeros(n * 6, dtype=np.int8),
        offsets=np.arange(0, n * 6 + 1, 6, dtype=np.int64),
        labels=labels,
    )


TRAIN, DEV = split(N_TRAIN, 0), split(32, 1)


def model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return model_factory("bert").build(TINY_BERT, TASK, _Tokenizer())


def recipe(**changes: Any) -> dict[str, Any]:
    return {
        "max_steps": 4,
        "eval_every": 4,
        "batch_size": 4,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "warmup_ratio": 0.0,
        "seed": 3,
        "progress": False,
        **changes,
    }
