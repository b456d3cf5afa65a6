"""AutoDistil's weight-sharing supernet (worker/_supernet.py)."""

from __future__ import annotations

import pytest
import torch
from _tiny_supernet import batch, tiny_teacher

from archsearch.spaces._errors import SpecError
from archsearch.spaces._students import Student
from archsearch.worker._supernet import Supernet, extract


def test_largest_student_is_the_teacher() -> None:
    teacher = tiny_teacher()
    supernet = Supernet.from_teacher(teacher).eval()
    inputs = batch()
    with torch.no_grad():
        ours = supernet(supernet.teacher_student(), **inputs)
        theirs = teacher(**inputs)
    valid = inputs["attention_mask"].bool()
    torch.testing.assert_close(
        ours.last_hidden_state[valid], theirs.last_hidden_state[valid], atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, atol=1e-5, rtol=1e-5)
    assert ours.qkv.width == 64


@pytest.mark.parametrize(
    "student", [Student(2, 2, 32, 48), Student(3, 3, 48, 100), Student(1, 4, 64, 128)]
)
def test_extracted_student_equals_its_supernet_slice(student: Student) -> None:
    supernet = Supernet.from_teacher(tiny_teacher()).eval()
    with torch.no_grad():  # perturb the shared weights: the supernet is no longer the teacher
        for p in supernet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model = extract(supernet, student)
    assert model.config.num_hidden_layers == student.layers
    assert model.config.hidden_size == student.hidden
    inputs = batch()
    with torch.no_grad():
        ours = supernet(student, **inputs)
        theirs = model(**inputs)
    valid = inputs["attention_mask"].bool()
    torch.testing.assert_close(
        ours.last_hidden_state[valid], theirs.last_hidden_state[valid], atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, atol=1e-5, rtol=1e-5)


def test_untied_students_run_but_are_not_plain_berts() -> None:
    supernet = Supernet.from_teacher(tiny_teacher()).eval()
    untied = Student(2, 3, 40, 80)  # 3 heads of 16 = 48 attention units, hidden 40
    out = supernet(untied, **batch())
    assert out.last_hidden_state.shape == (3, 9, 40)
    assert out.qkv.width == 48
    with pytest.raises(ValueError, match="hidden = heads x head size"):
        extract(supernet, untied)
    with pytest.raises(SpecError, match=r"student\.layers"):
        supernet(Student(5, 4, 64, 128), **batch())


def test_training_a_student_changes_only_its_slice() -> None:
    supernet = Supernet.from_teacher(tiny_teacher())
    student = Student(2, 2, 32, 48)
    supernet(student, **batch()).last_hidden_state.sum().backward()
    dense = supernet.bert.encoder.layer[0].intermediate.dense.weight.grad
    assert dense is not None
    assert dense[:48, :32].abs().sum() > 0 and dense[48:].abs().sum() == 0
    assert supernet.bert.encoder.layer[1].intermediate.dense.weight.grad is None  # layers 0, 2
