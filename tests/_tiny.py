"""Tiny models the worker tests share: the 1 x 32 BERT student, a tiny local teacher, and the
three-layer FlexiBERT classifier with its padded random batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from archsearch.spaces import Candidate
from archsearch.worker._flexibert_config import FlexiBertConfig
from archsearch.worker._flexibert_model import FlexiBertForSequenceClassification

#: The unit tests' BERT student: one layer, width 32, two heads (a few ms per step).
TINY_BERT = {
    "num_hidden_layers": 1,
    "hidden_size": 32,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}

#: Vocabulary and positions of the FlexiBERT test models.
#: A bert study over two candidates and two objectives: a loop proposes the same two again
#: and again (a third never comes: repeats do).
TWO_CANDIDATES: dict[str, Any] = {
    "name": "tiny",
    "space": "bert",
    "loop": "random",
    "n_trials": 3,
    "space_options": {
        "num_hidden_layers": [1],
        "hidden_size": [32, 64],
        "num_attention_heads": [2],
        "intermediate_ratio": [2],
    },
    "objectives": ["accuracy:max", "params:min"],
}
VOCAB = 50
POSITIONS = 32


def save_tiny_teacher(folder: Path) -> str:
    """A 2-layer, 64-wide BERT (head size 16) saved as a local teacher folder; its path."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
    )
    BertModel(config).save_pretrained(folder)
    return str(folder)


def distill_candidate(teacher: str, **recipe: Any) -> Candidate:
    """The tiny BERT student on a WNLI slice with ``teacher`` (8 steps), plus ``recipe``."""
    return Candidate.from_dict(
        {
            "space": "bert",
            "architecture": TINY_BERT,
            "recipe": {
                "max_steps": 8,
                "eval_every": 4,
                "batch_size": 16,
                "max_seq_length": 32,
                "teacher": teacher,
                "measure_latency": False,
                **recipe,
            },
            "data": {"task": "wnli", "train_subset": 64, "eval_subset": 32},
        }
    )


def arch_with(op: str, param: str, hidden: list[int] | None = None) -> dict[str, Any]:
    """Three layers of widths 128, 256, 128 (two projections); the middle one runs ``op``."""
    hidden = hidden or [128, 256, 128]
    layers = len(hidden)
    return {
        "l": layers,
        "o": ["sa", op, "c"][:layers],
        "p": ["sdp", param, "5"][:layers],
        "h": hidden,
        "n": [2, 4, 2][:layers],
        "f": [[256], [128, 64, 256], [128]][:layers],
    }


def build(
    arch: dict[str, Any], labels: int = 2, seed: int = 0
) -> FlexiBertForSequenceClassification:
    """A FlexiBERT classifier with seeded initial weights."""
    torch.manual_seed(seed)
    config = FlexiBertConfig(arch, vocab_size=VOCAB, max_positions=POSITIONS, num_labels=labels)
    return FlexiBertForSequenceClassification(config)


def batch(lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ids padded to the longest length (pad id 0, [CLS]-like id 1 first)."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(2, VOCAB, (len(lengths), width), generator=generator)
    ids[:, 0] = 1
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return {
        "input_ids": ids.masked_fill(~mask, 0),
        "attention_mask": mask.long(),
        "token_type_ids": (torch.arange(width)[None, :] >= width // 2).long().expand_as(ids),
    }
