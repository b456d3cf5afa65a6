"""Student initialisation from a teacher by AutoDistil's extraction rule.

AutoDistil (Xu et al. 2022; ``microsoft/autodistil: Code/transformers/modeling_bert.py``) trains
one weight-sharing supernet initialised from the teacher; a student of that supernet *is* a
sub-tensor of every teacher weight. This module performs the same extraction once, copying the
sub-tensors into a stand-alone transformers model:

* **Layers, evenly spaced.** Student layer ``i`` (of ``L_s``) takes teacher layer
  ``floor(i * L_t / L_s)`` (of ``L_t``), see :func:`teacher_layer_indices`. This is the code's
  ``kept_layers_index = floor(i / depth_mult)`` with ``depth_mult = L_s / L_t``, computed in
  integers so no rounding can pick a neighbouring layer. The first teacher layer is always
  kept; the last one only when ``L_s == L_t``. For a 6-layer teacher: 1 → [0], 2 → [0, 3],
  3 → [0, 2, 4], 4 → [0, 1, 3, 4], 5 → [0, 1, 2, 3, 4]; for 12 → 6: [0, 2, 4, 6, 8, 10].
* **Hidden size: leading entries.** Embeddings keep their first ``H_s`` columns, LayerNorms
  their first ``H_s`` entries, and every linear map its first ``H_s`` input and/or output units
  (pooler included; the classifier keeps its first ``H_s`` input columns).
* **Feed-forward: leading units.** ``intermediate.dense`` keeps its first ``I_s`` output
  units, ``output.dense`` the matching first ``I_s`` input columns.
* **Attention: leading heads, each with its leading dimensions.** The student keeps the first
  ``A_s`` teacher heads; of each, the first ``d_s`` of its ``d_t`` dimensions, where
  ``d = hidden_size / num_attention_heads``. Query/key/value output unit ``a * d_s + j`` of the
  student is teacher unit ``a * d_t + j`` (``a < A_s``, ``j < d_s``), and the attention output
  projection's input columns follow the same map. AutoDistil keeps the head size at 64 and
  varies only the head count, where this is simply "the first ``64 * A_s`` units"; Hugging Face
  BERT ties the head size to ``H / A``, so a student may have narrower heads than its teacher,
  and slicing per head keeps every student head a piece of one teacher head instead of
  straddling two. A student head wider than the teacher's (``d_s > d_t``) cannot be made of
  teacher weights and is refused.
* Vocabulary rows are never sliced (the student must share the teacher's vocabulary and
  tokenizer); position and token-type tables keep their leading rows.

With the teacher's full shape the extraction is an exact copy, so the student reproduces the
teacher bit for bit in eval mode (given the same attention implementation).

Imports torch and transformers at module level; import it as
``from archsearch.worker._extract import init_student_from_teacher``.
"""

from __future__ import annotations

import re

import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

_LAYER_PARAM = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
# Parameters (inside one encoder layer) whose dimension 0 / dimension 1 is indexed by attention
# unit (head * head_dim + j) rather than by hidden or feed-forward unit.
_HEAD_ROWS = (
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
)
_HEAD_COLUMNS = ("attention.output.dense.weight",)

BertLike = BertModel | BertForSequenceClassification


def teacher_layer_indices(num_student_layers: int, num_teacher_layers: int) -> list[int]:
    """The teacher layer each student layer is copied from: ``floor(i * L_t / L_s)``.

    Raises:
        ValueError: Not ``1 <= num_student_layers <= num_teacher_layers``.
    """
    if not 1 <= num_student_layers <= num_teacher_layers:
        raise ValueError(
            f"cannot extract {num_student_layers} layers from a {num_teacher_layers}-layer "
            "teacher: a student needs between 1 and the teacher's number of layers"
        )
    return [i * num_teacher_layers // num_student_layers for i in range(num_student_layers)]


def head_unit_indices(num_heads: int, student_head_dim: int, teacher_head_dim: int) -> torch.Tensor:
    """Teacher attention units the student's units come from: ``a * d_t + j`` for unit
    ``a * d_s + j`` (first ``num_heads`` heads, first ``d_s`` dimensions of each)."""
    heads = torch.arange(num_heads).unsqueeze(1) * teacher_head_dim
    return (heads + torch.arange(student_head_dim).unsqueeze(0)).reshape(-1)


def check_extractable(student: BertConfig, teacher: BertConfig) -> None:
    """Raises ValueError naming every way ``student`` is not a sub-network of ``teacher``."""
    problems = []
    for field in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size"):
        s, t = getattr(student, field), getattr(teacher, field)
        if s > t:
            problems.append(f"{field} {s} > teacher's {t}")
    d_s = student.hidden_size // student.num_attention_heads
    d_t = teacher.hidden_size // teacher.num_attention_heads
    if d_s > d_t:
        problems.append(
            f"head size {d_s} (hidden {student.hidden_size} / {student.num_attention_heads} "
            f"heads) > teacher's {d_t}: each student head is the leading part of one teacher "
            "head, so it cannot be wider; use more heads"
        )
    if student.vocab_size != teacher.vocab_size:
        problems.append(
            f"vocab_size {student.vocab_size} != teacher's {teacher.vocab_size} (the student "
            "must share the teacher's tokenizer)"
        )
    for field in ("max_position_embeddings", "type_vocab_size"):
        s, t = getattr(student, field), getattr(teacher, field)
        if s > t:
            problems.append(f"{field} {s} > teacher's {t}")
    if problems:
        raise ValueError("student cannot be extracted from the teacher: " + "; ".join(problems))


def init_student_from_teacher(student: BertLike, teacher: BertLike) -> None:
    """Overwrites ``student``'s weights with the AutoDistil extraction of ``teacher``'s.

    See the module docstring for the rule. Both models may be a ``BertModel`` or a
    ``BertForSequenceClassification``. The classifier head is copied (its first ``H_s`` input
    columns) when both models have one; a student classifier whose teacher has none keeps its
    initialisation. A student pooler whose teacher has none keeps its initialisation too.

    Raises:
        TypeError: A model that is neither a ``BertModel`` nor a
            ``BertForSequenceClassification``.
        ValueError: The student is larger than the teacher in some dimension (see
            :func:`check_extractable`), or the two classifiers have different widths.
    """
    s_bert, t_bert = _encoder(student, "student"), _encoder(teacher, "teacher")
    s_cfg, t_cfg = s_bert.config, t_bert.config
    check_extractable(s_cfg, t_cfg)
    s_cls = getattr(student, "classifier", None)
    t_cls = getattr(teacher, "classifier", None)
    if s_cls is not None and t_cls is not None and s_cls.out_features != t_cls.out_features:
        raise ValueError(
            f"student classifier has {s_cls.out_features} outputs, the teacher's "
            f"{t_cls.out_features}: extract from a teacher fine-tuned on the same task, or "
            "from the bare encoder"
        )

    layers = teacher_layer_indices(s_cfg.num_hidden_layers, t_cfg.num_hidden_layers)
    heads = head_unit_indices(
        s_cfg.num_attention_heads,
        s_cfg.hidden_size // s_cfg.num_attention_heads,
        t_cfg.hidden_size // t_cfg.num_attention_heads,
    )
    teacher_params = dict(t_bert.named_parameters())
    with torch.no_grad():
        for name, param in s_bert.named_parameters():
            teacher_name, suffix = name, name
            match = _LAYER_PARAM.match(name)
            if match:
                suffix = match.group(2)
                teacher_name = f"encoder.layer.{layers[int(match.group(1))]}.{suffix}"
            source = teacher_params.get(teacher_name)
            if source is None:
                if name.startswith("pooler."):  # the teacher was built without a pooler
                    continue
                raise ValueError(f"teacher has no parameter {teacher_name!r} for student {name!r}")
            index_rows = suffix in _HEAD_ROWS
            index_columns = suffix in _HEAD_COLUMNS
            param.copy_(_leading(source, param.shape, heads, index_rows, index_columns))
        if s_cls is not None and t_cls is not None:
            s_cls.weight.copy_(t_cls.weight[:, : s_cfg.hidden_size])
            if s_cls.bias is not None and t_cls.bias is not None:
                s_cls.bias.copy_(t_cls.bias)


def _leading(
    source: torch.Tensor,
    shape: torch.Size,
    heads: torch.Tensor,
    index_rows: bool,
    index_columns: bool,
) -> torch.Tensor:
    """The leading ``shape`` block of ``source``, attention dimensions taken head by head."""
    out = source
    if index_rows:
        out = out.index_select(0, heads.to(out.device))
    if index_columns:
        out = out.index_select(1, heads.to(out.device))
    out = out[tuple(slice(0, n) for n in shape)]
    if out.shape != shape:  # check_extractable should make this unreachable
        raise ValueError(f"teacher tensor {tuple(source.shape)} is smaller than {tuple(shape)}")
    return out


def _encoder(model: BertLike, role: str) -> BertModel:
    if isinstance(model, BertModel):
        return model
    if isinstance(model, BertForSequenceClassification):
        return model.bert
    raise TypeError(
        f"{role} must be a BertModel or a BertForSequenceClassification, got {type(model).__name__}"
    )
