"""Scoring every student of an AutoDistil sub-space without retraining it.

next-capabilities.md §1 ("How to show it works here") and algorithms.md §3.4 name the proxies:

* **P1, task-agnostic** (:func:`relation_scores`): each student's last-layer relation loss
  against the teacher on held-out unlabeled text, sliced from the trained supernet (lower is
  better).
* **P2, task-proxy** (:class:`SupernetClassifier`, :func:`proxy_hooks`): the supernet under one
  shared classifier head fine-tuned on a proxy task with every student sharing weights, as
  ``finetune_plus_search_TaskProxy_glue.py`` does: per batch every student's task loss, summed
  (the same gradient as AutoDistil's one ``backward`` per student with accumulated gradients;
  one graph per batch holds every student's activations, fine for the 8–125 small students
  here), then one optimiser step; afterwards each student's dev metrics. ``proxy_students``
  (default: all) trains a step-seeded sandwich instead, for large sub-spaces — the default is
  the released code's choice; no measurement here says a subset ranks as well.
* **P3/P4**: params and FLOPs from the shared cost model (``spaces/_students.py``).
* **P5** (:func:`relation_scores` with the untrained teacher as the supernet): the relation
  loss of the student extracted directly from the teacher, no supernet training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from archsearch.spaces._students import Student, TeacherShape, flops, params
from archsearch.worker._distill_losses import hard_label_loss
from archsearch.worker._loop import TrainingHooks
from archsearch.worker._supernet import Supernet
from archsearch.worker._supernet_training import (
    Batch,
    sandwich_students,
    student_relation_loss,
    teacher_qkv,
)
from archsearch.worker._task_info import Task


def relation_scores(
    supernet: Supernet,
    teacher: Supernet,
    students: Sequence[Student],
    batches: Sequence[Batch],
    loss: str = "kl",
) -> dict[str, float]:
    """Each student's mean relation loss over ``batches``, by ``Student.key()`` (P1; P5 when
    ``supernet`` is the untrained teacher)."""
    supernet.eval()
    teacher.eval()
    totals = dict.fromkeys((s.key() for s in students), 0.0)
    with torch.no_grad():
        for batch in batches:
            target = teacher_qkv(teacher, batch)
            for s in students:
                value = student_relation_loss(supernet, teacher, s, batch, target, loss)
                totals[s.key()] += float(value)
    return {k: v / max(len(batches), 1) for k, v in totals.items()}


def cost_metrics(
    teacher: TeacherShape, students: Sequence[Student], seq_len: int = 128
) -> dict[str, float]:
    """``params@<key>`` and ``flops@<key>`` of every student (the shared cost model)."""
    out: dict[str, float] = {}
    for s in students:
        out[f"params@{s.key()}"] = float(params(teacher, s))
        out[f"flops@{s.key()}"] = float(flops(teacher, s, seq_len))
    return out


#: The measured costs a trained student's own ``params``/``flops`` move to (its classifier:
#: task head included, FLOPs at the recipe's ``max_seq_length``).
CLASSIFIER_PREFIX = "classifier_"


def trained_student_costs(
    metrics: dict[str, float], teacher: TeacherShape, student: Student, seq_len: int
) -> dict[str, float]:
    """A trained student's metrics with its ``params`` and ``flops`` (and each task's
    ``<task>.params``, ``<task>.flops``) from the shared cost model, as its rank job reported
    them for its proxy row, so that the two rows compare (the same student counts the same);
    the bert pipeline's measured values stay as ``classifier_params``/``classifier_flops``."""
    model = {
        "params": float(params(teacher, student)),
        "flops": float(flops(teacher, student, seq_len)),
    }
    out = dict(metrics)
    for key, value in metrics.items():
        prefix, _, name = key.rpartition(".")
        if name in model:
            out[f"{prefix}{'.' if prefix else ''}{CLASSIFIER_PREFIX}{name}"] = value
            out[key] = model[name]
    return out


class SupernetClassifier(nn.Module):
    """The supernet under one classification (or regression) head shared by all students.

    The head is ``Linear(H_teacher, labels)`` on the pooled ``[CLS]``; a student uses its first
    ``H`` input columns (the extraction rule). ``forward`` runs :attr:`active`, or — in
    training with :attr:`train_students` set — every one of those students, returning the sum
    of their losses (and the first one's logits).
    """

    def __init__(self, supernet: Supernet, task: Task) -> None:
        super().__init__()
        self.supernet = supernet
        self.task = task
        labels = 1 if task.is_regression else task.num_labels
        self.classifier = nn.Linear(supernet.shape.hidden, labels)
        self.dropout = nn.Dropout(supernet.config.hidden_dropout_prob)
        self.active: Student = supernet.teacher_student()
        self.train_students: Sequence[Student] = ()

    def logits(self, student: Student, **inputs: torch.Tensor | None) -> torch.Tensor:
        pooled = self.supernet(student, **inputs).pooler_output
        h = student.hidden
        return nn.functional.linear(
            self.dropout(pooled), self.classifier.weight[:, :h], self.classifier.bias
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
        }
        students = self.train_students if self.training and self.train_students else [self.active]
        total: torch.Tensor | None = None
        first: torch.Tensor | None = None
        for s in students:
            logits = self.logits(s, **inputs)
            first = logits if first is None else first
            if labels is not None:
                loss = hard_label_loss(logits, labels, self.task.is_regression)
                total = loss if total is None else total + loss
        return SequenceClassifierOutput(loss=total, logits=first)


def proxy_hooks(students: Sequence[Student], proxy_students: int | None = None) -> TrainingHooks:
    """Training hooks for P2 on a :class:`SupernetClassifier` in ``TrainingLoop``.

    Before each step the students trained that step are set (all, or a ``proxy_students``
    sandwich drawn by step); after training, ``evaluate_many`` scores every student on dev,
    labelled ``Student.key()`` (the trainer reports ``<metric>@<key>``).
    """
    holder: dict[str, SupernetClassifier] = {}

    def init(model: nn.Module) -> None:
        assert isinstance(model, SupernetClassifier)
        holder["model"] = model
        model.train_students = list(students)

    def before(step: int) -> None:
        if proxy_students is not None and proxy_students < len(students):
            holder["model"].train_students = sandwich_students(students, step, proxy_students)

    def evaluate_many(model: nn.Module) -> Iterator[tuple[str, Any]]:
        assert isinstance(model, SupernetClassifier)
        for s in students:
            yield s.key(), _activate(s)

    return TrainingHooks(init_fn=init, before_step=before, evaluate_many=evaluate_many)


def _activate(student: Student) -> Any:
    @contextlib.contextmanager
    def configure(model: nn.Module) -> Iterator[None]:
        assert isinstance(model, SupernetClassifier)
        previous = model.active
        model.active = student
        try:
            yield
        finally:
            model.active = previous

    return configure
