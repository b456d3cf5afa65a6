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

Q, K and V are read with forward hooks on ``encoder.layer[i].attention.self.{query,key,value}``
(the ``nn.Linear`` projections of transformers' ``BertSelfAttention``; their outputs are the
concatenated heads, before the per-head reshape). Attention distributions are recomputed from
them instead of asking for ``output_attentions``, so the losses work under any attention
implementation (under SDPA, transformers returns no attention maps) and see the distributions
before attention dropout. Padding is excluded: padded keys get no probability mass and padded
query rows are left out of the average.

Imports torch and transformers at module level; import it as
``from archsearch.worker._distill import Distiller``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertForSequenceClassification, BertModel

#: What the :class:`Distiller` optimises besides (or instead of) the labels.
DistillMode = Literal["none", "logits", "minilm", "minilmv2"]
DISTILL_MODES: tuple[str, ...] = get_args(DistillMode)
_PROJECTIONS = ("query", "key", "value")
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


@dataclasses.dataclass(frozen=True)
class QKV:
    """One self-attention layer's projections, heads concatenated: each ``(batch, seq, width)``.

    Attributes:
        query, key, value: Outputs of the layer's query/key/value ``nn.Linear`` modules;
            ``width = num_heads * head_dim``.
        num_heads: The layer's attention heads (for per-head views, MiniLM v1).
    """

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    num_heads: int

    @property
    def width(self) -> int:
        return int(self.query.shape[-1])


class QKVCapture:
    """Captures Q, K and V of one encoder layer during a forward pass (a context manager).

    Example::

        with QKVCapture(model, layer=-1) as capture:
            model(**inputs)
        qkv = capture.qkv

    Gradients flow through the captured tensors when the forward pass builds a graph.

    Args:
        model: A ``BertModel``, or a model holding one as ``.bert``
            (``BertForSequenceClassification``).
        layer: The encoder layer, Python-style (``-1`` is the last one).

    Raises:
        TypeError: No BERT encoder in ``model``.
        IndexError: No such layer.
    """

    def __init__(self, model: nn.Module, layer: int = -1) -> None:
        encoder = bert_encoder(model)
        layers = encoder.encoder.layer
        if not -len(layers) <= layer < len(layers):
            raise IndexError(f"layer {layer} out of range for a {len(layers)}-layer encoder")
        attention: Any = layers[layer].attention
        self.attention: nn.Module = attention.self
        self.num_heads = int(encoder.config.num_attention_heads)
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> QKVCapture:
        self._outputs.clear()
        for name in _PROJECTIONS:
            module = getattr(self.attention, name)
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()

    def remove(self) -> None:
        """Unregisters the hooks (the captured tensors stay readable)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def qkv(self) -> QKV:
        """The tensors of the last forward pass.

        Raises:
            RuntimeError: No forward pass ran through the layer while capturing.
        """
        missing = [name for name in _PROJECTIONS if name not in self._outputs]
        if missing:
            raise RuntimeError(f"no {'/'.join(missing)} captured: run a forward pass first")
        return QKV(
            self._outputs["query"], self._outputs["key"], self._outputs["value"], self.num_heads
        )

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            self._outputs[name] = output

        return hook


def bert_encoder(model: nn.Module) -> BertModel:
    """The ``BertModel`` inside ``model`` (itself, or its ``.bert``)."""
    if isinstance(model, BertModel):
        return model
    inner = getattr(model, "bert", None)
    if isinstance(inner, BertModel):
        return inner
    raise TypeError(f"expected a BERT model (BertModel or one with .bert), got {type(model)}")


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
    for name in _PROJECTIONS:
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


# ----------------------------------------------------------------------------- Distiller


@dataclasses.dataclass
class DistillOutput:
    """What one :meth:`Distiller.__call__` returns.

    Attributes:
        loss: The combined loss to back-propagate.
        logits: The student's logits (None for a bare ``BertModel`` student).
        parts: Each term before weighting, detached, for logging (``hard``, ``kd``,
            ``relation``), present when computed.
    """

    loss: torch.Tensor
    logits: torch.Tensor | None
    parts: dict[str, torch.Tensor]


class Distiller:
    """Teacher + student + one distillation objective: one call per batch gives the loss.

    The combined loss is ``logit_weight * task_term + relation_weight * relation_term``:

    * ``"none"``: the hard-label loss only (the teacher is not run and may be None).
    * ``"logits"``: ``task_term = logit_kd_loss(..., temperature, alpha)``.
    * ``"minilm"`` / ``"minilmv2"``: ``relation_term`` is :func:`minilm_v1_loss` /
      :func:`minilm_v2_loss` between ``student_layer`` and ``teacher_layer`` (default: the last
      layers); ``task_term`` is ``logit_kd_loss`` as in "logits" (with ``alpha=0`` the hard
      labels alone, so a bare-encoder teacher suffices). Set ``logit_weight=0`` for pure
      self-attention distillation (AutoDistil's supernet objective; labels are then unused).

    The teacher runs in eval mode under ``torch.no_grad`` (put back in eval mode on every call,
    in case something switched it); it must sit on the batch's device.

    Args:
        student: The model being trained; a ``BertForSequenceClassification``, or a bare
            ``BertModel`` for relation-only distillation.
        teacher: The frozen teacher; a ``BertForSequenceClassification`` with the student's
            number of outputs whenever its logits are used, else also a ``BertModel``.
        mode: One of :data:`DISTILL_MODES`.
        temperature: Softmax temperature of the logit term (default 2.0, DistilBERT's).
        alpha: Weight of distillation within the logit term, in [0, 1].
        logit_weight: Weight of the task (logit) term.
        relation_weight: Weight of the MiniLM term.
        num_relation_heads: MiniLMv2 relation heads; default :func:`default_relation_heads`.
        student_layer, teacher_layer: Layers whose Q/K/V are distilled (Python indices).
        is_regression: Default: from the student's config (``problem_type`` or one output).

    Raises:
        ValueError: Unknown mode, a missing or unsuitable teacher, bad weights.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        mode: DistillMode = "logits",
        *,
        temperature: float = 2.0,
        alpha: float = 0.5,
        logit_weight: float = 1.0,
        relation_weight: float = 1.0,
        num_relation_heads: int | None = None,
        student_layer: int = -1,
        teacher_layer: int = -1,
        is_regression: bool | None = None,
    ) -> None:
        if mode not in DISTILL_MODES:
            raise ValueError(f"unknown distillation mode {mode!r}; known: {DISTILL_MODES}")
        for name, value in (("logit_weight", logit_weight), ("relation_weight", relation_weight)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.student, self.teacher, self.mode = student, teacher, mode
        self.temperature, self.alpha = temperature, alpha
        self.logit_weight, self.relation_weight = logit_weight, relation_weight
        self.student_layer, self.teacher_layer = student_layer, teacher_layer
        s_config = bert_encoder(student).config
        if is_regression is None:
            is_regression = s_config.problem_type == "regression" or (
                isinstance(student, BertForSequenceClassification) and s_config.num_labels == 1
            )
        self.is_regression = is_regression
        if mode == "logits" and logit_weight == 0:
            raise ValueError("mode 'logits' with logit_weight 0 would optimise nothing")
        self.uses_relations = mode in ("minilm", "minilmv2")
        # The teacher's logits are needed for the KD part of the task term (alpha > 0).
        self.uses_teacher_logits = logit_weight > 0 and (
            mode == "logits" or (self.uses_relations and alpha > 0)
        )
        self.num_relation_heads = 0
        self._check_models(num_relation_heads)

    def _check_models(self, num_relation_heads: int | None) -> None:
        student, teacher, mode = self.student, self.teacher, self.mode
        student_logits = isinstance(student, BertForSequenceClassification)
        if mode in ("none", "logits") and not student_logits:
            raise ValueError(f"mode {mode!r} needs a BertForSequenceClassification student")
        if self.uses_relations and self.logit_weight > 0 and not student_logits:
            raise ValueError(
                "a bare BertModel student has no logits: set logit_weight=0 for pure "
                "self-attention distillation"
            )
        if mode == "none":
            return
        if teacher is None:
            raise ValueError(f"mode {mode!r} needs a teacher")
        t_bert = bert_encoder(teacher)
        if self.uses_teacher_logits:
            if not isinstance(teacher, BertForSequenceClassification):
                raise ValueError(
                    f"mode {mode!r} with alpha > 0 distils logits: the teacher must be a "
                    "BertForSequenceClassification (fine-tuned on the task)"
                )
            assert isinstance(student, BertForSequenceClassification)
            if teacher.config.num_labels != student.config.num_labels:
                raise ValueError(
                    f"teacher predicts {teacher.config.num_labels} outputs, the student "
                    f"{student.config.num_labels}: they must be trained on the same task"
                )
        if self.uses_relations:
            # Validate the layer indices now rather than on the first batch.
            QKVCapture(student, self.student_layer)
            QKVCapture(teacher, self.teacher_layer)
            s_cfg, t_cfg = bert_encoder(student).config, t_bert.config
            if mode == "minilm" and s_cfg.num_attention_heads != t_cfg.num_attention_heads:
                raise ValueError(
                    f"MiniLM v1 needs the student's attention heads ({s_cfg.num_attention_heads})"
                    f" to equal the teacher's ({t_cfg.num_attention_heads}); use mode 'minilmv2'"
                )
            if mode == "minilmv2":
                s_width, t_width = _attention_width(s_cfg), _attention_width(t_cfg)
                r = num_relation_heads or default_relation_heads(
                    t_width, s_width, t_cfg.num_attention_heads
                )
                if s_width % r or t_width % r:
                    raise ValueError(
                        f"{r} relation heads do not divide the student's Q/K/V width {s_width} "
                        f"and the teacher's {t_width}"
                    )
                self.num_relation_heads = r

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> DistillOutput:
        """The combined loss on ``batch`` (the model inputs, plus ``labels`` when labelled)."""
        inputs = {k: batch[k] for k in _MODEL_INPUTS if k in batch}
        labels = batch.get("labels")
        mask = inputs.get("attention_mask")
        parts: dict[str, torch.Tensor] = {}

        teacher_logits, teacher_qkv = None, None
        if self.uses_teacher_logits or self.uses_relations:
            teacher_logits, teacher_qkv = self._run_teacher(inputs)

        student_qkv = None
        if self.uses_relations:
            with QKVCapture(self.student, self.student_layer) as capture:
                output = self.student(**inputs)
            student_qkv = capture.qkv
        else:
            output = self.student(**inputs)
        logits = getattr(output, "logits", None)

        loss = torch.zeros((), device=_device_of(self.student))
        if self.logit_weight > 0 and logits is not None:
            task_term = self._task_term(logits, teacher_logits, labels, parts)
            if task_term is not None:
                loss = loss + self.logit_weight * task_term
        if self.uses_relations:
            assert student_qkv is not None and teacher_qkv is not None
            if self.mode == "minilm":
                relation = minilm_v1_loss(student_qkv, teacher_qkv, mask)
            else:
                relation = minilm_v2_loss(student_qkv, teacher_qkv, self.num_relation_heads, mask)
            parts["relation"] = relation.detach()
            loss = loss + self.relation_weight * relation
        return DistillOutput(loss=loss, logits=logits, parts=parts)

    def _run_teacher(
        self, inputs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor | None, QKV | None]:
        teacher = self.teacher
        assert teacher is not None
        if teacher.training:
            teacher.eval()
        with torch.no_grad():
            if self.uses_relations:
                with QKVCapture(teacher, self.teacher_layer) as capture:
                    output = teacher(**inputs)
                qkv: QKV | None = capture.qkv
            else:
                output, qkv = teacher(**inputs), None
        logits = getattr(output, "logits", None) if self.uses_teacher_logits else None
        return logits, qkv

    def _task_term(
        self,
        logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        labels: torch.Tensor | None,
        parts: dict[str, torch.Tensor],
    ) -> torch.Tensor | None:
        if teacher_logits is None:  # "none", or a MiniLM mode with alpha = 0
            if labels is None:
                if self.mode == "none":
                    raise ValueError("mode 'none' trains on labels: the batch has no 'labels'")
                return None
            hard = hard_label_loss(logits, labels, self.is_regression)
            parts["hard"] = hard.detach()
            return hard
        kd, hard_or_none = _logit_terms(
            logits, teacher_logits, labels, self.temperature, self.alpha, self.is_regression
        )
        parts["kd"] = kd.detach()
        if hard_or_none is None:
            return kd
        parts["hard"] = hard_or_none.detach()
        return self.alpha * kd + (1.0 - self.alpha) * hard_or_none


def _attention_width(config: Any) -> int:
    heads = int(config.num_attention_heads)
    return heads * (int(config.hidden_size) // heads)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
