"""The ``Distiller``: teacher, student and one distillation objective, one loss per batch.

The losses it combines are in ``_distill_losses.py`` (Hinton logit KD, MiniLM v1, MiniLMv2);
the Q/K/V they compare are captured by ``_qkv_capture.py``.

Imports torch and transformers at module level; import it as
``from archsearch.worker._distill import Distiller``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal, get_args

import torch
from torch import nn
from transformers import BertForSequenceClassification

from archsearch.worker._distill_losses import (
    _logit_terms,
    default_relation_heads,
    hard_label_loss,
    minilm_v1_loss,
    minilm_v2_loss,
)
from archsearch.worker._qkv_capture import QKV, QKVCapture, bert_encoder

#: What the :class:`Distiller` optimises besides (or instead of) the labels.
DistillMode = Literal["none", "logits", "minilm", "minilmv2"]
DISTILL_MODES: tuple[str, ...] = get_args(DistillMode)
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


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
