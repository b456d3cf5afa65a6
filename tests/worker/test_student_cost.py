"""The shared cost model (spaces/_students.py) against real torch models."""

from __future__ import annotations

import pytest
from transformers import BertConfig, BertModel

from archsearch.spaces._students import Student, TeacherShape, params

#: MiniLM's shape with a small vocabulary, so the models build in milliseconds.
TEACHER = TeacherShape(6, 384, 12, 1536, vocab_size=100, max_positions=64)


def _bert(student: Student) -> BertModel:
    config = BertConfig(
        vocab_size=TEACHER.vocab_size,
        hidden_size=student.hidden,
        num_hidden_layers=student.layers,
        num_attention_heads=student.heads,
        intermediate_size=student.intermediate,
        max_position_embeddings=TEACHER.max_positions,
        type_vocab_size=TEACHER.type_vocab_size,
    )
    return BertModel(config)


@pytest.mark.parametrize(
    "student", [Student(2, 4, 128, 256), Student(3, 6, 192, 576), Student(1, 12, 384, 1536)]
)
def test_params_equal_the_bert_models_parameter_count(student: Student) -> None:
    model = _bert(student)
    assert params(TEACHER, student) == sum(p.numel() for p in model.parameters())
