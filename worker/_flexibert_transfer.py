"""FlexiBERT checkpoints read back, and ordered weight transfer from a trained neighbour
(FlexiBERT's knowledge transfer; the overlap rule itself is torch-free in
``spaces/_flexibert_overlap.py``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from archsearch.spaces._flexibert_overlap import transferable
from archsearch.worker._flexibert_config import FlexiBertConfig
from archsearch.worker._flexibert_model import _FlexiBertHeadModel
from archsearch.worker._flexibert_model import load_checkpoint as read_checkpoint

__all__ = ["load_checkpoint", "transfer_weights"]


def load_checkpoint(folder: str | Path) -> tuple[FlexiBertConfig, dict[str, torch.Tensor]]:
    """The config and weights of a folder written by ``save_pretrained`` (on the CPU).

    Raises:
        FileNotFoundError: The folder lacks the weights or the config.
    """
    config, state, _ = read_checkpoint(folder)
    return config, state


def transfer_weights(
    source_state: Mapping[str, torch.Tensor],
    source_architecture: Mapping[str, Any],
    target: _FlexiBertHeadModel,
    apply: bool = True,
) -> float:
    """Ordered (OD) weight transfer from a trained neighbour into ``target``, in place.

    Every parameter of ``target`` whose name the source has receives the source's leading
    ``min`` slice along each axis (the rest keeps its initialisation); a layer's
    token-mixing block only when the two layers' operation types match (see
    :func:`archsearch.spaces._flexibert_overlap.weight_overlap`, which predicts the returned
    value from the architectures alone).

    Args:
        source_state: The neighbour's ``state_dict`` (names as in ``target``).
        source_architecture: The neighbour's architecture.
        target: The freshly built model to fill.
        apply: False only measures the share (nothing is copied).

    Returns:
        The share of ``target``'s parameters that received (or would receive) weights, in
        [0, 1].
    """
    target_architecture = target.architecture
    copied = total = 0
    params = dict(target.named_parameters())  # a tied tensor once, under its first name
    with torch.no_grad():
        for name, param in params.items():
            total += param.numel()
            source = source_state.get(name)
            if source is None or not transferable(name, source_architecture, target_architecture):
                continue
            if source.ndim != param.ndim:
                continue
            sizes = [min(a, b) for a, b in zip(param.shape, source.shape, strict=True)]
            if apply:
                region = tuple(slice(0, size) for size in sizes)
                param[region] = source[region].to(param.device, param.dtype)
            copied += math.prod(sizes)
    return copied / total
