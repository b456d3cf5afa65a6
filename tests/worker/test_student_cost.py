"""The shared cost model (spaces/_students.py) against real torch models."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from archsearch.spaces._students import Student, TeacherShape, flops, params

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


@pytest.mark.parametrize(
    "student", [Student(2, 4, 128, 256), Student(1, 3, 100, 200), Student(6, 12, 384, 1536)]
)
def test_flops_equal_the_flop_counter_of_the_supernet_and_the_extracted_model(
    student: Student,
) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from archsearch.worker._supernet import Supernet, extract

    supernet = Supernet(_bert(Student(6, 12, 384, 1536))).eval()
    ids = torch.randint(0, TEACHER.vocab_size, (1, 24))
    models = [lambda: supernet(student, ids)]
    if student.hidden == student.heads * TEACHER.head_dim:  # a plain BertModel exists
        model = extract(supernet, student)
        models.append(lambda: model(input_ids=ids))
    for run in models:
        # The counter has no formula for the CPU's fused attention kernel; the math one is
        # matmuls, which it counts.
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as c:
            run()
        assert c.get_total_flops() == flops(TEACHER, student, seq_len=24)
