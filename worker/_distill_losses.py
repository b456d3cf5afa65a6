"""Distillation losses: Hinton logit KD, MiniLM v1 and MiniLMv2 self-attention distillation.

* :func:`logit_kd_loss`: Hinton et al. (2015): KL between temperature-softened teacher and
  student distributions, scaled by T² so its gradients keep their size as T changes, mixed with
  the hard-label loss; for regression (STS-B) the student regresses onto the teacher's score.
* :func:`minilm_v1_loss`: MiniLM (Wang et al. 2020, arXiv 2002.10957): on the last layer, KL
  between teacher and student self-attention distributions softmax(QKᵀ/√d_k), plus KL between
  their value relations softmax(VVᵀ/√d_k), averaged over heads and positions. Needs the same
  number of heads in both models, as in the paper.
* :func:`minilm_v2_loss`: MiniLMv2 (Wang et al. 2021, arXiv 2012.15828): query-query, key-key and
  value-value relations. Each model's Q (K, V) is concatenated over heads and re-split into the
  same number of *relation heads* R, so any widths and head counts can be compared; the loss is
  Σ_{X∈{Q,K,V}} mean KL(teacher ‖ student) of softmax(X_r X_rᵀ/√d_r). AutoDistil uses this form
  on the last layer. Its released code uses MSE between the masked pre-softmax relation logits;
  we follow the papers (KL of softmax-normalised relations), which is scale-free and zero
  exactly when the relation distributions agree.

Q, K and V are read (``_qkv_capture.py``) with forward hooks on
``encoder.layer[i].attention.self.{query,key,value}`` (the ``nn.Linear`` projections of
transformers' ``BertSelfAttention``; their outputs are the concatenated heads, before the
per-head reshape). Attention distributions are recomputed from them instead of asking for
``output_attentions``, so the losses work under any attention implementation (under SDPA,
transformers returns no attention maps) and see the distributions before attention dropout.
Padding is excluded: padded keys get no probability mass and padded query rows are left out of
the average.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from archsearch.worker._qkv_capture import PROJECTIONS, QKV

# ----------------------------------------------------------------------------- logit KD


def logit_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float = 1.0,
    alpha: float = 0.5,
    is_regression: bool = False,
) -> torch.Tensor:
    """Hinton knowledge distillation mixed with the hard-label loss.

    Classification: ``alpha * T² * KL(softmax(t/T) ‖ softmax(s/T)) + (1 - alpha) * CE(s, y)``,
    the KL summed over classes and averaged over the batch. Regression: ``alpha * MSE(s, t) +
    (1 - alpha) * MSE(s, y)`` (the temperature does not apply). Without labels only the
    distillation term is returned, unweighted. The teacher's logits are treated as constants.

    Args:
        student_logits, teacher_logits: ``(batch, classes)``; ``(batch,)`` or ``(batch, 1)``
            for regression.
        labels: Class indices, or target scores for regression; None for unlabelled data.
        temperature: T > 0; softens both distributions.
        alpha: Weight of the distillation term, in [0, 1].
        is_regression: Whether the task is a regression (STS-B).

    Raises:
        ValueError: ``temperature <= 0``, ``alpha`` outside [0, 1], or mismatched shapes.
    """
    kd, hard = _logit_terms(
        student_logits, teacher_logits, labels, temperature, alpha, is_regression
    )
    if hard is None:
        return kd
    return alpha * kd + (1.0 - alpha) * hard


def hard_label_loss(
    logits: torch.Tensor, labels: torch.Tensor, is_regression: bool
) -> torch.Tensor:
    """Cross-entropy on class indices, or MSE on scores (as ``BertForSequenceClassification``)."""
    if is_regression:
        return F.mse_loss(_scores(logits), labels.to(logits.dtype).reshape(-1))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def _logit_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
    is_regression: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ: the two heads must predict the same classes"
        )
    teacher_logits = teacher_logits.detach()
    if is_regression:
        kd = F.mse_loss(_scores(student_logits), _scores(teacher_logits).to(student_logits.dtype))
    else:
        log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
        log_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
        kl = F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)
        kd = kl * temperature**2
    hard = None if labels is None else hard_label_loss(student_logits, labels, is_regression)
    return kd, hard


def _scores(logits: torch.Tensor) -> torch.Tensor:
    return logits.reshape(-1) if logits.ndim <= 1 or logits.shape[-1] == 1 else logits


# ----------------------------------------------------------------------------- MiniLM


def minilm_v1_loss(
    student: QKV, teacher: QKV, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """MiniLM v1: attention-distribution KL plus value-relation KL, per head.

    ``L = mean KL(A_t ‖ A_s) + mean KL(VR_t ‖ VR_s)`` with ``A = softmax(Q Kᵀ/√d_k)`` and
    ``VR = softmax(V Vᵀ/√d_k)`` per head, each model using its own head size d_k; means over
    heads and (non-padding) query positions.

    Args:
        student, teacher: The distilled layers' projections (usually the last layers).
        attention_mask: ``(batch, seq)``, 1 for tokens and 0 for padding; None: no padding.

    Raises:
        ValueError: The head counts differ (MiniLM v1 compares head by head; use
            :func:`minilm_v2_loss`, whose relation heads lift this restriction), or the batch
            shapes differ.
    """
    if student.num_heads != teacher.num_heads:
        raise ValueError(
            f"MiniLM v1 needs the student's attention heads ({student.num_heads}) to equal the "
            f"teacher's ({teacher.num_heads}): it distils each head's attention distribution. "
            "Use mode 'minilmv2', which re-splits Q/K/V into any number of relation heads."
        )
    _check_same_tokens(student, teacher)
    heads = student.num_heads
    attention = _relation_kl(
        _scores_between(teacher.query, teacher.key, heads),
        _scores_between(student.query, student.key, heads),
        attention_mask,
    )
    values = _relation_kl(
        _scores_between(teacher.value, teacher.value, heads),
        _scores_between(student.value, student.value, heads),
        attention_mask,
    )
    return attention + values


def minilm_v2_loss(
    student_qkv: QKV,
    teacher_qkv: QKV,
    num_relation_heads: int,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """MiniLMv2: Σ over Q-Q, K-K, V-V of the mean KL(teacher ‖ student) of relation heads.

    Each of Q, K, V (heads concatenated) is split into ``num_relation_heads`` relation heads of
    width ``d_r = width / R`` (R the same for both models, d_r each model's own), and the
    relation of head r is ``softmax(X_r X_rᵀ / √d_r)`` over key positions.

    Args:
        student_qkv, teacher_qkv: The distilled layers' projections.
        num_relation_heads: R; must divide both models' Q/K/V widths
            (see :func:`default_relation_heads`).
        attention_mask: ``(batch, seq)``, 1 for tokens and 0 for padding; None: no padding.

    Raises:
        ValueError: R does not divide a width, or the batch shapes differ.
    """
    if num_relation_heads <= 0:
        raise ValueError(f"num_relation_heads must be > 0, got {num_relation_heads}")
    for role, qkv in (("student", student_qkv), ("teacher", teacher_qkv)):
        if qkv.width % num_relation_heads:
            raise ValueError(
                f"{num_relation_heads} relation heads do not divide the {role}'s Q/K/V width "
                f"{qkv.width}; choose a common divisor of {student_qkv.width} and "
                f"{teacher_qkv.width}"
            )
    _check_same_tokens(student_qkv, teacher_qkv)
    total = student_qkv.query.new_zeros((), dtype=torch.float32)
    for name in PROJECTIONS:
        s, t = getattr(student_qkv, name), getattr(teacher_qkv, name)
        total = total + _relation_kl(
            _scores_between(t, t, num_relation_heads),
            _scores_between(s, s, num_relation_heads),
            attention_mask,
        )
    return total


def default_relation_heads(teacher_width: int, student_width: int, teacher_heads: int) -> int:
    """The relation-head count closest to (not above) the teacher's heads that divides both
    widths: the teacher's head count itself, as in AutoDistil, whenever the widths allow it.

    For example a 384-wide, 12-head teacher gives 12 for 384-, 192- or 96-wide students, and 8
    for 128- or 256-wide ones (12 does not divide them).
    """
    common = math.gcd(teacher_width, student_width)
    return max(r for r in range(1, max(teacher_heads, 1) + 1) if common % r == 0)


def _scores_between(x: torch.Tensor, y: torch.Tensor, heads: int) -> torch.Tensor:
    """Per-head scaled dot products ``x_h y_hᵀ / √d``: ``(batch, heads, seq, seq)`` in float32."""
    batch, seq, width = x.shape
    d = width // heads
    xh = x.float().view(batch, seq, heads, d).transpose(1, 2)
    yh = y.float().view(batch, seq, heads, d).transpose(1, 2)
    return torch.matmul(xh, yh.transpose(-1, -2)) / math.sqrt(d)


def _relation_kl(
    teacher_scores: torch.Tensor,
    student_scores: torch.Tensor,
    attention_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Mean over heads and query rows of KL(softmax(teacher) ‖ softmax(student)) over keys.

    Padded keys are removed from both softmaxes (filled with the dtype's minimum rather than
    -inf, so no row becomes NaN), and padded query rows are excluded from the mean.
    """
    if attention_mask is None:
        log_t = F.log_softmax(teacher_scores, dim=-1)
        log_s = F.log_softmax(student_scores, dim=-1)
        return (log_t.exp() * (log_t - log_s)).sum(-1).mean()
    valid = attention_mask.to(torch.bool)
    padded_key = ~valid[:, None, None, :]
    lowest = torch.finfo(teacher_scores.dtype).min
    log_t = F.log_softmax(teacher_scores.masked_fill(padded_key, lowest), dim=-1)
    log_s = F.log_softmax(student_scores.masked_fill(padded_key, lowest), dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).masked_fill(padded_key, 0.0).sum(-1)  # (b, h, q)
    query = valid[:, None, :].to(kl.dtype)
    rows = query.sum() * kl.shape[1]
    return (kl * query).sum() / rows.clamp_min(1.0)


def _check_same_tokens(student: QKV, teacher: QKV) -> None:
    if student.query.shape[:2] != teacher.query.shape[:2]:
        raise ValueError(
            f"student and teacher saw different batches: (batch, seq) "
            f"{tuple(student.query.shape[:2])} vs {tuple(teacher.query.shape[:2])}"
        )
