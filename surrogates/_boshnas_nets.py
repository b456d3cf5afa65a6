"""BOSHNAS's teacher and student nets, and the early-stopped minibatch loop that trains each net."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

#: Fewest optimiser steps per epoch (not the reference's, which updates per sample).
MIN_STEPS_PER_EPOCH = 8


def teacher_net(input_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(input_dim, 64),
        nn.Softplus(),
        nn.Dropout(0.3),
        nn.Linear(64, 32),
        nn.Softplus(),
        nn.Dropout(0.3),
        nn.Linear(32, 1),
        nn.Sigmoid(),
    )


def student_net(input_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(input_dim, 64),
        nn.Softplus(),
        nn.Linear(64, 32),
        nn.Softplus(),
        nn.Linear(32, 1),
        nn.Sigmoid(),
    )


def early_stop(validation_losses: Sequence[float], patience: int = 7) -> bool:
    """More than 10 validation losses and the last ``patience`` (7) did not beat the best before.

    The reference (``utils.early_stop``) stops when each of the last 7 losses is no lower than
    the one before it; with minibatch noise that almost never holds, so every fit ran the full
    200 epochs. Comparing with the best so far is the usual patience rule with the same numbers.
    """
    if len(validation_losses) <= 10:
        return False
    return min(validation_losses[-patience:]) >= min(validation_losses[:-patience])


def train_net(
    net: nn.Module,
    optimiser: torch.optim.Optimizer,
    x: torch.Tensor,
    target: torch.Tensor,
    train: torch.Tensor,
    val: torch.Tensor,
    generator: torch.Generator,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    batch_size: int,
    max_epochs: int,
) -> tuple[int, float]:
    """Trains ``net`` on the rows ``train`` until :func:`early_stop` on the rows ``val`` or
    ``max_epochs``, and keeps the weights of the best validation loss; (epochs, best loss)."""
    # Small data sets still get MIN_STEPS_PER_EPOCH updates per epoch: per-sample updates
    # (the reference) are what small data needs, minibatches what large data needs.
    batch_size = max(1, min(batch_size, math.ceil(train.shape[0] / MIN_STEPS_PER_EPOCH)))
    net.train()
    validation: list[float] = []
    best = math.inf
    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    epoch = 0
    for epoch in range(1, max_epochs + 1):  # noqa: B007 - epoch is reported
        shuffled = train[torch.randperm(train.shape[0], generator=generator)]
        for start in range(0, shuffled.shape[0], batch_size):
            batch = shuffled[start : start + batch_size]
            optimiser.zero_grad()
            loss_fn(x[batch], target[batch]).backward()
            optimiser.step()
        with torch.no_grad():
            net.eval()  # validation of the teacher's mean, not of one dropout mask
            value = float(loss_fn(x[val], target[val]))
            net.train()
        validation.append(value)
        if value < best:
            best = value
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if early_stop(validation):
            break
    net.load_state_dict(best_state)
    return epoch, best
