"""The last stage of a trial: task metrics (:class:`Evaluator`) and costs (:class:`CostMeter`).

Imports torch at module level; ``archsearch.worker`` does not import it eagerly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from archsearch.worker._batches import EncodedSplit
from archsearch.worker._cost import latency_metrics, size_metrics
from archsearch.worker._memory_meter import PeakMemoryMeter
from archsearch.worker._metrics import compute_metrics
from archsearch.worker._precision import Precision
from archsearch.worker._task_info import Task

#: ``predict(split) -> predictions``: class indices (or scores) in split order.
Predict = Callable[[EncodedSplit], np.ndarray]


class Evaluator:
    """A task's metrics on every one of its dev splits.

    The primary dev split's metrics are unsuffixed; an extra split's carry its suffix (MNLI:
    ``accuracy`` is matched, ``accuracy_mismatched`` mismatched).

    Args:
        task: The task.
        dev_sets: Its dev splits by name (``task.dev_splits``), tokenised.
    """

    def __init__(self, task: Task, dev_sets: Mapping[str, EncodedSplit]) -> None:
        self.task = task
        self.dev_sets = {s: dev_sets[s] for s in task.dev_splits}

    @property
    def primary(self) -> EncodedSplit:
        """The split intermediate reports and checkpoints are chosen on."""
        return self.dev_sets[self.task.dev_splits[0]]

    @property
    def extra_splits(self) -> dict[str, EncodedSplit]:
        """The other dev splits by name (MNLI's ``dev_mismatched``), scored with suffixes."""
        return {s: self.dev_sets[s] for s in self.task.dev_splits[1:]}

    def metrics(
        self, predict: Predict, primary_predictions: np.ndarray | None = None
    ) -> dict[str, float]:
        """Every dev split's task metrics.

        Args:
            predict: Predicts a split with the trained model.
            primary_predictions: The primary split's predictions when already made (the
                loop's final evaluation); None predicts it too.
        """
        primary = self.primary
        if primary_predictions is None:
            primary_predictions = predict(primary)
        metrics = compute_metrics(self.task, primary_predictions, primary.labels)
        for split in self.task.dev_splits[1:]:
            dev = self.dev_sets[split]
            values = compute_metrics(self.task, predict(dev), dev.labels)
            suffix = split.removeprefix("dev_")
            metrics.update({f"{name}_{suffix}": value for name, value in values.items()})
        return metrics


class CostMeter:
    """A trained model's costs: ``params``, ``params_no_embeddings``, ``flops``, the latency
    pair (unless switched off) and ``peak_train_memory_mb`` (see :mod:`._cost`).

    Args:
        device: The training device.
        seq_len: The sequence length FLOPs are counted at.
        measure_latency: Whether to measure ``latency_ms_b1`` and ``latency_ms_b32``.
        precision: Latency is measured under the training precision's autocast.
    """

    def __init__(
        self, device: str | torch.device, seq_len: int, measure_latency: bool, precision: Precision
    ) -> None:
        self.seq_len = seq_len
        self.measure_latency = measure_latency
        self.precision = precision
        #: Wrap building and training in it; its ``sample`` goes to the loop.
        self.memory = PeakMemoryMeter(device)

    def metrics(self, model: torch.nn.Module) -> dict[str, float]:
        """The costs of ``model``; call after the ``memory`` block has closed."""
        metrics = size_metrics(model, self.seq_len)
        if self.measure_latency:
            metrics.update(latency_metrics(model, autocast_dtype=self.precision.dtype))
        metrics["peak_train_memory_mb"] = self.memory.peak_mb
        return metrics
