"""AutoDistil's weight-sharing supernet: every student is a slice of one teacher-shaped BERT.

AutoDistil (Xu et al. 2022, ``microsoft/autodistil: Code/transformers/modeling_bert.py``) trains
one BERT initialised from the teacher, and runs any student ``(L, A, H, I)`` of its sub-space by
slicing the shared weights (algorithms.md §3.2):

* **layers**, evenly spaced: student layer ``i`` runs teacher layer ``floor(i · L_t / L)``
  (``_extract.teacher_layer_indices``, the same rule as the one-off extraction);
* **hidden**: the first ``H`` units of embeddings, LayerNorms (normalising over those ``H``
  units) and every linear map, pooler included;
* **heads**: the first ``A`` heads *with the teacher's head size kept*, i.e. the first
  ``A · head_dim`` Q/K/V units, independent of ``H``;
* **MLP**: the first ``I`` feed-forward neurons.

Why a functional forward and not transformers' ``BertModel``: a ``BertModel`` has fixed shapes,
while here the active shape changes every step and all students must share (and train) one set
of parameters. :class:`Supernet` therefore holds the teacher's own ``BertModel`` as its
parameters, and :meth:`Supernet.forward` replays BERT's computation (embeddings, post-LN
encoder layers, pooler) with ``torch.nn.functional`` on sliced views of those parameters.
Nothing else is written by hand: the attention itself is ``F.scaled_dot_product_attention`` and
the activation is the config's (``transformers.activations.ACT2FN``).

:func:`extract` copies a student out as a plain ``BertModel`` (reusing ``_extract``'s
AutoDistil extraction); the test checks its output equals :meth:`Supernet.forward` for that
student and that the largest student is the teacher. A plain ``BertModel`` ties its head size to
``H / A``; a student of an untied sub-space (``H != A · head_dim``, the paper's presets) runs in
the supernet and is ranked, but :func:`extract` refuses it with a clear error.

Imports torch and transformers at module level.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel
from transformers.activations import ACT2FN

from archsearch.spaces._students import Student, TeacherShape, is_tied
from archsearch.worker._extract import init_student_from_teacher, teacher_layer_indices
from archsearch.worker._qkv_capture import QKV


@dataclasses.dataclass(frozen=True)
class SupernetOutput:
    """One student's forward pass.

    Attributes:
        last_hidden_state: ``(batch, seq, H)``.
        pooler_output: ``(batch, H)``: tanh of the pooler on ``[CLS]``.
        qkv: The last layer's query/key/value projections (``(batch, seq, A · head_dim)``
            each), for MiniLMv2 relation distillation.
    """

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor
    qkv: QKV


class Supernet(nn.Module):
    """A teacher-shaped ``BertModel`` whose slices are the students (see the module docstring).

    Args:
        bert: The shared weights, usually a copy of the teacher; taken over, not copied. Its
            pooler must exist.
    """

    def __init__(self, bert: BertModel) -> None:
        super().__init__()
        if bert.pooler is None:
            raise ValueError("the supernet needs a BertModel with its pooler")
        self.bert = bert
        self.shape = TeacherShape.from_config(bert.config)
        self._act = ACT2FN[bert.config.hidden_act]

    @classmethod
    def from_teacher(cls, teacher: BertModel) -> Supernet:
        """A trainable supernet initialised from (a deep copy of) ``teacher``, which stays
        untouched (and may be frozen)."""
        return cls(copy.deepcopy(teacher).requires_grad_(True))

    @property
    def config(self) -> BertConfig:
        return self.bert.config

    def teacher_student(self) -> Student:
        """The full shape: the student that *is* the supernet."""
        t = self.shape
        return Student(t.layers, t.heads, t.hidden, t.intermediate)

    def forward(
        self,
        student: Student,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> SupernetOutput:
        """Runs ``student`` (a slice of the shared weights) on a batch.

        Raises:
            SpecError: The student does not fit inside the supernet.
        """
        student.check(self.shape)
        h, w, i = student.hidden, student.heads * self.shape.head_dim, student.intermediate
        cfg = self.bert.config
        eps, p_hidden = cfg.layer_norm_eps, cfg.hidden_dropout_prob if self.training else 0.0
        p_attention = cfg.attention_probs_dropout_prob if self.training else 0.0
        emb = self.bert.embeddings
        seq = input_ids.shape[1]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (
            F.embedding(input_ids, emb.word_embeddings.weight[:, :h])
            + F.embedding(token_type_ids, emb.token_type_embeddings.weight[:, :h])
            + emb.position_embeddings.weight[:seq, :h]
        )
        x = F.dropout(_layer_norm(x, emb.LayerNorm, h, eps), p_hidden, self.training)
        mask = None
        if attention_mask is not None:  # additive mask over keys: (batch, 1, 1, seq)
            keep = attention_mask[:, None, None, :].to(torch.bool)
            mask = torch.zeros(keep.shape, dtype=x.dtype, device=x.device)
            mask = mask.masked_fill(~keep, torch.finfo(x.dtype).min)
        qkv: QKV | None = None
        for index in teacher_layer_indices(student.layers, self.shape.layers):
            layer = self.bert.encoder.layer[index]
            sa, ao = layer.attention.self, layer.attention.output
            q, k, v = (_linear(x, m, w, h) for m in (sa.query, sa.key, sa.value))
            qkv = QKV(q, k, v, student.heads)
            context = F.scaled_dot_product_attention(
                _heads(q, student.heads),
                _heads(k, student.heads),
                _heads(v, student.heads),
                attn_mask=mask,
                dropout_p=p_attention,
                scale=1.0 / math.sqrt(self.shape.head_dim),
            )
            context = context.transpose(1, 2).reshape(x.shape[0], seq, w)
            attended = F.dropout(_linear(context, ao.dense, h, w), p_hidden, self.training)
            x = _layer_norm(attended + x, ao.LayerNorm, h, eps)
            hidden = self._act(_linear(x, layer.intermediate.dense, i, h))
            out = F.dropout(_linear(hidden, layer.output.dense, h, i), p_hidden, self.training)
            x = _layer_norm(out + x, layer.output.LayerNorm, h, eps)
        assert qkv is not None  # a student has at least one layer
        pooler = self.bert.pooler
        assert pooler is not None  # checked in __init__
        pooled = torch.tanh(_linear(x[:, 0], pooler.dense, h, h))
        return SupernetOutput(x, pooled, qkv)


def _linear(x: torch.Tensor, module: nn.Linear, rows: int, columns: int) -> torch.Tensor:
    """``module`` restricted to its first ``rows`` outputs and ``columns`` inputs."""
    return F.linear(x, module.weight[:rows, :columns], module.bias[:rows])


def _layer_norm(x: torch.Tensor, module: nn.LayerNorm, width: int, eps: float) -> torch.Tensor:
    return F.layer_norm(x, (width,), module.weight[:width], module.bias[:width], eps)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, seq, width = x.shape
    return x.view(batch, seq, heads, width // heads).transpose(1, 2)


def student_config(supernet: Supernet, student: Student) -> BertConfig:
    """The ``BertConfig`` of ``student`` as a plain BERT (the teacher's config, resized).

    Raises:
        ValueError: ``H != A · head_dim``: a plain ``BertModel`` ties its head size to
            ``H / A``, so an untied student (the paper's sub-spaces) has no plain-BERT form.
    """
    student.check(supernet.shape)
    if not is_tied(supernet.shape, student):
        raise ValueError(
            f"student {student.key()} has hidden {student.hidden} but {student.heads} heads of "
            f"{supernet.shape.head_dim} ({student.heads * supernet.shape.head_dim} attention "
            "units): a plain BertModel needs hidden = heads x head size; use a sub-space with "
            "'hidden': null (H tied to A)"
        )
    config = BertConfig.from_dict(supernet.config.to_dict())
    config.num_hidden_layers = student.layers
    config.num_attention_heads = student.heads
    config.hidden_size = student.hidden
    config.intermediate_size = student.intermediate
    return config


def extract(supernet: Supernet, student: Student) -> BertModel:
    """``student``'s weights copied out of ``supernet`` as a plain ``BertModel`` (eval mode).

    Raises:
        ValueError: See :func:`student_config`.
    """
    config = student_config(supernet, student)
    model = BertModel(config, add_pooling_layer=True)
    init_student_from_teacher(model, supernet.bert)
    return model.eval()
