"""MiniLMv2 self-attention relation loss with a fixed relation-head count (for AutoDistil).

AutoDistil (algorithms.md §3.3, §7) distils the teacher's last layer into every student with
MiniLMv2's Q-Q, K-K and V-V relations, re-splitting each model's concatenated Q (K, V) into
``R`` = *the teacher's head count* relation heads. ``_distill_losses.minilm_v2_loss`` needs ``R``
to divide both widths; AutoDistil's students do not allow that (a MiniLM student of 4 heads of 32
is 128 wide, a paper student of 7 heads of 64 is 448 wide, and ``R = 12``). Here the width is
split with ``torch.tensor_split`` into ``R`` near-equal parts (sizes differing by at most one),
each relation scaled by its own ``√d_r``; when ``R`` divides the width this *is* MiniLMv2's
split. Keeping ``R`` fixed for every student keeps the losses of different students comparable,
which ranking them by this loss needs.

Two forms (``loss``):

* ``"kl"`` (default, the MiniLMv2 and AutoDistil papers): Σ_X mean KL(teacher ‖ student) of the
  relation distributions ``softmax(X_r X_rᵀ / √d_r)`` (``_distill_losses._relation_kl``:
  padded keys removed, padded query rows left out of the mean).
* ``"mse"`` (AutoDistil's released code): Σ_X mean squared difference of the scaled relation
  logits ``X_r X_rᵀ / √d_r`` over valid (query, key) pairs.
"""

from __future__ import annotations

import math

import torch

from archsearch.worker._distill_losses import _relation_kl
from archsearch.worker._qkv_capture import PROJECTIONS, QKV

#: Accepted ``loss`` values; the first is the default.
RELATION_LOSSES = ("kl", "mse")


def relation_logits(x: torch.Tensor, relation_heads: int) -> torch.Tensor:
    """``(batch, R, seq, seq)`` float32 scaled relation logits of ``x`` (``(batch, seq, width)``).

    Raises:
        ValueError: More relation heads than width units.
    """
    width = x.shape[-1]
    if not 1 <= relation_heads <= width:
        raise ValueError(f"{relation_heads} relation heads need 1..{width} (the width) units")
    parts = torch.tensor_split(x.float(), relation_heads, dim=-1)
    return torch.stack([p @ p.transpose(-1, -2) / math.sqrt(p.shape[-1]) for p in parts], dim=1)


def relation_loss(
    student: QKV,
    teacher: QKV,
    relation_heads: int,
    attention_mask: torch.Tensor | None = None,
    loss: str = "kl",
) -> torch.Tensor:
    """The MiniLMv2 relation loss between two layers' Q/K/V (see the module docstring).

    Args:
        student, teacher: The distilled layers' projections, same batch.
        relation_heads: R, the same for both models (AutoDistil: the teacher's heads).
        attention_mask: ``(batch, seq)``, 1 for tokens; None: no padding.
        loss: ``"kl"`` or ``"mse"``.

    Raises:
        ValueError: Unknown ``loss``, different batches, or too many relation heads.
    """
    if loss not in RELATION_LOSSES:
        raise ValueError(f"unknown relation loss {loss!r}; known: {', '.join(RELATION_LOSSES)}")
    if student.query.shape[:2] != teacher.query.shape[:2]:
        raise ValueError(
            f"student and teacher saw different batches: {tuple(student.query.shape[:2])} vs "
            f"{tuple(teacher.query.shape[:2])}"
        )
    total = student.query.new_zeros((), dtype=torch.float32)
    for name in PROJECTIONS:
        t = relation_logits(getattr(teacher, name).detach(), relation_heads)
        s = relation_logits(getattr(student, name), relation_heads)
        if loss == "kl":
            total = total + _relation_kl(t, s, attention_mask)
        else:
            total = total + _masked_mse(t, s, attention_mask)
    return total


def _masked_mse(
    teacher: torch.Tensor, student: torch.Tensor, attention_mask: torch.Tensor | None
) -> torch.Tensor:
    squared = (student - teacher) ** 2
    if attention_mask is None:
        return squared.mean()
    valid = attention_mask.to(squared.dtype)
    pairs = valid[:, None, :, None] * valid[:, None, None, :]  # (batch, 1, query, key)
    return (squared * pairs).sum() / (pairs.sum() * squared.shape[1]).clamp_min(1.0)
