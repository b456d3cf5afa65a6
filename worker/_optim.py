"""What every training loop here shares, outside the loop itself: the model's own loss,
AdamW with BERT's weight-decay groups, and seeding every generator (the teacher's, a
supernet's and a student's training, and the benchmarks, use the same three)."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["adamw", "model_loss", "seed_everything"]


def model_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's own loss of ``batch`` (Hugging Face classifiers: cross-entropy or MSE)."""
    loss: torch.Tensor = model(**batch).loss
    return loss


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, with BERT's weight-decay groups."""
    # As in BERT: no weight decay on biases and LayerNorm weights (the 1-d parameters), since
    # shrinking them towards zero does not regularise, it only shifts activations.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's generators (every CUDA device too)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
