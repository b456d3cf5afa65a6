"""A model's answers on a dev split, and how sure it was of the gold ones
(:func:`predict_scored`): the training loop's evaluations.

Imports torch at module level; ``archsearch.worker`` does not import it eagerly.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from archsearch.spaces import DEV_LOSS
from archsearch.worker._batches import EncodedSplit, collate
from archsearch.worker._metrics import compute_metrics
from archsearch.worker._precision import Precision
from archsearch.worker._task_info import Task


@torch.inference_mode()
def predict_scored(
    model: torch.nn.Module,
    task: Task,
    encoded: EncodedSplit,
    *,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    precision: Precision,
) -> tuple[np.ndarray, float]:
    """Class indices (or scores, for regression) for every example, in split order, and the
    mean loss of the gold labels over the split (cross-entropy of the logits; squared error
    for regression) from the same forward passes: a continuous score that still orders models
    whose predictions tie (every one at the majority class). The loss is NaN when a label is
    not one of the model's classes. The model is left in the mode it was in."""
    was_training = model.training
    model.eval()
    # Length-sorted batches pad far less; predictions are scattered back to split order.
    order = np.argsort(encoded.lengths, kind="stable")
    out = np.empty(len(encoded), dtype=np.float32 if task.is_regression else np.int64)
    total = 0.0
    try:
        for begin in range(0, len(order), batch_size):
            indices = order[begin : begin + batch_size]
            batch = collate(encoded, indices, pad_id, device, with_labels=False)
            with precision.autocast(device):
                logits = model(**batch).logits
            labels = encoded.labels[indices]
            if task.is_regression:
                result = logits.squeeze(-1).float()
                gold = torch.as_tensor(labels, device=logits.device).float()
                total += float(((result - gold) ** 2).sum())
            else:
                result = logits.argmax(-1)
                total += _cross_entropy_sum(logits.float(), labels)
            out[indices] = result.cpu().numpy()
    finally:
        model.train(was_training)
    return out, total / max(len(order), 1)


def dev_metrics(
    task: Task, predictions: np.ndarray, labels: np.ndarray, loss: float
) -> dict[str, float]:
    """The task's metrics of ``predictions`` (:func:`compute_metrics`) and ``dev_loss``."""
    return with_dev_loss(compute_metrics(task, predictions, labels), loss)


def with_dev_loss(metrics: dict[str, float], loss: float) -> dict[str, float]:
    """``metrics`` with ``dev_loss`` added when ``loss`` is finite (trial metrics must be)."""
    if math.isfinite(loss):
        metrics[DEV_LOSS] = loss
    return metrics


def _cross_entropy_sum(logits: torch.Tensor, labels: np.ndarray) -> float:
    """Summed cross-entropy of ``labels`` under ``logits``; NaN for a label outside the
    classes (a custom task's unlabelled dev example) instead of an error. The labels are
    checked on the host, before they go to the device (no wait for the GPU)."""
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[-1]):
        return math.nan
    gold = torch.as_tensor(labels, device=logits.device).long()
    return float(torch.nn.functional.cross_entropy(logits, gold, reduction="sum"))
