"""A tiny stand-in teacher, input batch and students for the AutoDistil supernet tests."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from transformers import BertConfig, BertModel

from archsearch.spaces._students import Student


def tiny_teacher(seed: int = 0) -> BertModel:
    """A random 4-layer, 64-wide, 4-head (head size 16) BERT standing in for the teacher."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=100,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=32,
    )
    return BertModel(config).eval()


def batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # one padded sequence
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


STUDENTS = [
    Student(1, 1, 16, 32),
    Student(2, 1, 16, 32),
    Student(1, 2, 32, 64),
    Student(2, 2, 32, 64),
    Student(3, 3, 48, 96),
    Student(4, 4, 64, 128),
]


def random_batches(seed: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """An endless seeded stream of 4 x 12 token batches (the first sequence padded)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        ids = torch.randint(5, 100, (4, 12), generator=g)
        mask = torch.ones_like(ids)
        mask[0, 8:] = 0
        yield {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
