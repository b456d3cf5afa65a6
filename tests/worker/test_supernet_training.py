"""AutoDistil sandwich training and the relation loss (worker/_supernet_training.py)."""

from __future__ import annotations

import pytest
import torch
from _tiny_supernet import STUDENTS, random_batches, tiny_teacher

from archsearch.spaces._errors import SpecError
from archsearch.worker._qkv_capture import QKV
from archsearch.worker._relation_loss import relation_logits, relation_loss
from archsearch.worker._supernet import Supernet
from archsearch.worker._supernet_training import (
    SupernetRecipe,
    SupernetTraining,
    sandwich_students,
)


def test_sandwich_is_largest_smallest_and_two_seeded_others() -> None:
    first = sandwich_students(STUDENTS, step=7)
    assert first[:2] == [STUDENTS[-1], STUDENTS[0]]
    assert len(first) == 4 and len(set(first)) == 4
    assert sandwich_students(STUDENTS, step=7) == first
    draws = {tuple(sandwich_students(STUDENTS, step=s)[2:]) for s in range(20)}
    assert len(draws) > 3  # the step changes the random pair
    assert sandwich_students(STUDENTS[:3], step=0) == list(reversed(STUDENTS[:3]))


@pytest.mark.parametrize("loss", ["kl", "mse"])
def test_sandwich_training_lowers_the_relation_loss(loss: str) -> None:
    teacher_bert = tiny_teacher()
    teacher = Supernet.from_teacher(teacher_bert)
    supernet = Supernet.from_teacher(teacher_bert)
    recipe = SupernetRecipe(steps=15, lr=3e-3, loss=loss, seed=0)
    fixed = next(random_batches(99))

    def held_out() -> float:
        with torch.no_grad():
            target = teacher(teacher.teacher_student(), **fixed).qkv
            values = [
                relation_loss(supernet(s, **fixed).qkv, target, 4, fixed["attention_mask"], loss)
                for s in STUDENTS[:-1]
            ]
        return float(sum(values))

    supernet.eval()
    before = held_out()
    run = SupernetTraining(supernet, teacher, STUDENTS, random_batches(), recipe)
    steps: list[int] = []
    while not run.done:
        run.train_step()
        steps.append(run.step - 1)
    assert steps == list(range(15)) and len(run.losses) == 15
    assert not supernet.training  # eval mode once done
    assert held_out() < 0.8 * before
    # The teacher's own slice stays (nearly) lossless while the students move towards it.
    for p, q in zip(teacher.parameters(), teacher_bert.parameters(), strict=True):
        assert torch.equal(p, q)


def test_relation_loss_is_zero_for_the_teacher_and_splits_any_width() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 40, generator=g)
    qkv = QKV(x, x * 2, -x, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    for loss in ("kl", "mse"):
        assert float(relation_loss(qkv, qkv, 12, mask, loss)) == pytest.approx(0.0, abs=1e-6)
    logits = relation_logits(x, 12)  # 40 units in 12 relation heads of 4 or 3
    assert logits.shape == (2, 12, 5, 5)
    first = x[..., :4]
    torch.testing.assert_close(logits[:, 0], first @ first.transpose(-1, -2) / 2.0)
    other = QKV(torch.randn(2, 5, 24, generator=g), x[..., :24], x[..., :24], 2)
    assert float(relation_loss(other, qkv, 12, mask, "kl")) > 0
    with pytest.raises(ValueError, match="unknown relation loss 'l1'"):
        relation_loss(qkv, qkv, 12, mask, "l1")


def test_recipe_validation() -> None:
    assert SupernetRecipe.from_dict(None) == SupernetRecipe()
    assert SupernetRecipe.from_dict({"steps": 5, "loss": "mse"}).steps == 5
    with pytest.raises(SpecError, match="unknown fields"):
        SupernetRecipe.from_dict({"step": 5})
    with pytest.raises(SpecError, match=r"recipe\.supernet\.loss"):
        SupernetRecipe.from_dict({"loss": "l2"})
    with pytest.raises(SpecError, match=r"recipe\.supernet\.sandwich"):
        SupernetRecipe.from_dict({"sandwich": 1})
    with pytest.raises(SpecError, match=r"recipe\.supernet\.lr"):
        SupernetRecipe.from_dict({"lr": 0})
