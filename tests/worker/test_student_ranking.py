"""Scoring students without retraining (worker/_student_ranking.py)."""

from __future__ import annotations

import pytest
import torch
from _tiny_supernet import STUDENTS, batch, tiny_teacher

from archsearch.spaces import get_task
from archsearch.spaces._students import Student
from archsearch.worker._student_ranking import SupernetClassifier, proxy_hooks, relation_scores
from archsearch.worker._supernet import Supernet


def test_all_student_loss_is_the_sum_of_each_students_loss() -> None:
    model = SupernetClassifier(Supernet.from_teacher(tiny_teacher()), get_task("sst2"))
    inputs = batch()
    labels = torch.tensor([0, 1, 1])
    hooks = proxy_hooks(STUDENTS)
    assert hooks.init_fn is not None and hooks.evaluate_many is not None
    hooks.init_fn(model)
    model.dropout.p = 0.0
    model.supernet.bert.config.hidden_dropout_prob = 0.0
    model.supernet.bert.config.attention_probs_dropout_prob = 0.0
    total = model(**inputs, labels=labels).loss
    singles = []
    for key, configure in hooks.evaluate_many(model):
        with configure(model):
            model.eval()
            singles.append(float(model(**inputs, labels=labels).loss))
            model.train()
        assert key == STUDENTS[len(singles) - 1].key()
    assert float(total) == pytest.approx(sum(singles), rel=1e-5)


def test_a_proxy_subset_is_a_sandwich_per_step() -> None:
    model = SupernetClassifier(Supernet.from_teacher(tiny_teacher()), get_task("sst2"))
    hooks = proxy_hooks(STUDENTS, proxy_students=3)
    assert hooks.init_fn is not None and hooks.before_step is not None
    hooks.init_fn(model)
    hooks.before_step(1)
    first = list(model.train_students)
    assert len(first) == 3 and first[:2] == [STUDENTS[-1], STUDENTS[0]]
    hooks.before_step(1)
    assert list(model.train_students) == first


def test_relation_scores_of_the_teacher_slice_are_zero() -> None:
    teacher = Supernet.from_teacher(tiny_teacher())
    scores = relation_scores(teacher, teacher, [Student(4, 4, 64, 128), STUDENTS[0]], [batch()])
    assert scores["L4_A4_H64_I128"] == 0.0 or abs(scores["L4_A4_H64_I128"]) < 1e-6
    assert scores[STUDENTS[0].key()] > 0
