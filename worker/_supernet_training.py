"""AutoDistil supernet training: the sandwich rule and task-agnostic relation distillation.

Per step (algorithms.md §3.3, ``run_wiki_plus_book_NoAssist_RndSampl.py``): the frozen teacher's
last-layer Q/K/V on one batch of unlabeled text; then for the *sandwich* of students — the
largest and the smallest of the sub-space (by parameters) and ``sandwich - 2`` others drawn by
``random.Random(step)`` — each student's forward pass, its MiniLMv2 relation loss on the last
layer against the teacher's (``_relation_loss``, ``R`` = the teacher's heads; KL by default,
MSE on scaled logits as the released code), and ``backward``; gradients accumulate over the
sandwich and one AdamW step follows (lr 4e-5 and weight decay 0.01 in the paper).

Unlabeled text: the study's tasks' train sentences (a sentence pair is one text) from
``glue_data``, or any text file (one text per line, or JSONL ``"text"``). Ranking holds out text
the supernet never saw: the tasks' dev sentences, or the last lines of the text file
(:func:`held_out_texts`).
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from archsearch.spaces._errors import SpecError
from archsearch.spaces._students import Student
from archsearch.worker._mlm_pretrain import _batches, text_corpus
from archsearch.worker._relation_loss import RELATION_LOSSES, relation_loss
from archsearch.worker._supernet import Supernet
from archsearch.worker._text_pools import file_texts, glue_texts

Batch = dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class SupernetRecipe:
    """``candidate.recipe["supernet"]`` (every field optional).

    Defaults follow next-capabilities.md §1's CPU setting (max_seq 64, batch 32, sandwich of
    4) with the paper's lr 4e-5 and weight decay 0.01.
    """

    steps: int = 2000
    batch_size: int = 32
    max_seq_length: int = 64
    lr: float = 4e-5
    weight_decay: float = 0.01
    loss: str = "kl"
    seed: int = 0
    sandwich: int = 4

    @classmethod
    def from_dict(cls, data: Any, field: str = "recipe.supernet") -> SupernetRecipe:
        """Raises SpecError naming an unknown field or a bad value."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise SpecError(field, f"must be a mapping, got {data!r}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SpecError(field, f"unknown fields {unknown}", f"known: {known}")
        out = cls(**data)
        for name in ("steps", "batch_size", "max_seq_length", "sandwich"):
            v = getattr(out, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, int)
                or v < (2 if name == "sandwich" else 1)
            ):
                raise SpecError(f"{field}.{name}", f"must be a positive integer, got {v!r}")
        if isinstance(out.seed, bool) or not isinstance(out.seed, int):
            raise SpecError(f"{field}.seed", f"must be an integer, got {out.seed!r}")
        for name in ("lr", "weight_decay"):
            v = getattr(out, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or v < 0
                or (name == "lr" and v == 0)
            ):
                raise SpecError(f"{field}.{name}", f"must be a positive number, got {v!r}")
        if out.loss not in RELATION_LOSSES:
            raise SpecError(f"{field}.loss", f"unknown {out.loss!r}", f"known: {RELATION_LOSSES}")
        return out


def sandwich_students(students: Sequence[Student], step: int, count: int = 4) -> list[Student]:
    """The sandwich of one step: largest, smallest, then ``count - 2`` random others.

    ``students`` must be sorted by parameters (``SubSpace.students`` is); the random ones are
    drawn without replacement by ``random.Random(step)``, so a step's choice is reproducible.
    Fewer than ``count`` students: all of them, largest first.
    """
    if not students:
        raise ValueError("no students to train")
    if len(students) <= count:
        return list(reversed(students))
    middle = list(students[1:-1])
    others = random.Random(step).sample(middle, count - 2)
    return [students[-1], students[0], *others]


# ----------------------------------------------------------------------------- text


def unlabeled_texts(
    tasks: Sequence[str], glue_dir: str | Path | None, text_file: str | None = None
) -> list[str]:
    """Training text: ``text_file`` without its held-out tail, else the tasks' train text."""
    if text_file:
        texts = file_texts(text_file)
        return texts[: len(texts) - held_out_count(len(texts))]
    return [t for task in tasks for t in glue_texts(task, "train", _glue(glue_dir))]


def held_out_texts(
    tasks: Sequence[str], glue_dir: str | Path | None, text_file: str | None = None
) -> list[str]:
    """Text the supernet never trained on: the file's tail, else the tasks' dev text."""
    if text_file:
        texts = file_texts(text_file)
        return texts[len(texts) - held_out_count(len(texts)) :]
    from archsearch.spaces import get_task

    return [
        t for task in tasks for t in glue_texts(task, get_task(task).dev_splits[0], _glue(glue_dir))
    ]


def held_out_count(n: int) -> int:
    """Held-out lines of an ``n``-line text file: 10%, at most 2,000, at least 1 when n > 1."""
    return min(2000, max(1 if n > 1 else 0, n // 10))


def _glue(glue_dir: str | Path | None) -> str:
    from archsearch.worker._glue_dir import resolve_glue_dir

    return resolve_glue_dir(None if glue_dir is None else str(glue_dir))[0]


def text_batches(
    texts: Sequence[str],
    tokenizer: Any,
    max_length: int,
    batch_size: int,
    seed: int,
    device: torch.device | str = "cpu",
) -> Iterator[Batch]:
    """Endless padded batches of ``texts`` in a fresh seeded order each epoch."""
    if not texts:
        raise ValueError("no unlabeled text to train on")
    corpus = text_corpus(list(texts), tokenizer, max_length)
    return _batches(corpus, batch_size, tokenizer.pad_token_id or 0, torch.device(device), seed)


# ----------------------------------------------------------------------------- training


def teacher_qkv(teacher: Supernet, batch: Batch) -> Any:
    """The frozen teacher's last-layer Q/K/V (no graph)."""
    with torch.no_grad():
        return teacher(teacher.teacher_student(), **batch).qkv


def student_relation_loss(
    supernet: Supernet, teacher: Supernet, student: Student, batch: Batch, target: Any, loss: str
) -> torch.Tensor:
    """One student's last-layer relation loss against ``target`` (the teacher's Q/K/V)."""
    out = supernet(student, **batch)
    return relation_loss(out.qkv, target, teacher.shape.heads, batch["attention_mask"], loss)


class SupernetTraining:
    """One supernet's sandwich training, a step at a time, with a state that can be saved and
    restored: a restored training continues exactly as the uninterrupted one would (the same
    batches, sandwiches, dropout draws and optimiser state; bit for bit on the CPU).

    Args:
        supernet: The shared weights (trained in place, in train mode).
        teacher: The frozen teacher as a supernet (its full shape is used), usually
            ``Supernet.from_teacher(teacher_bert)`` before training starts.
        students: The sub-space's students, sorted by parameters.
        batches: Unlabeled batches (:func:`text_batches`), a seeded endless stream: a restore
            draws and drops the batches the saved steps used.
    """

    def __init__(
        self,
        supernet: Supernet,
        teacher: Supernet,
        students: Sequence[Student],
        batches: Iterator[Batch],
        recipe: SupernetRecipe,
    ) -> None:
        torch.manual_seed(recipe.seed)
        self.supernet, self.teacher, self.students = supernet, teacher, list(students)
        self.batches, self.recipe = batches, recipe
        teacher.eval()
        supernet.train()
        self.optimizer = torch.optim.AdamW(
            supernet.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
        )
        self.step = 0  # optimiser steps done
        self.losses: list[float] = []  # each step's mean loss over its sandwich

    @property
    def done(self) -> bool:
        return self.step >= self.recipe.steps

    def train_step(self) -> float:
        """Trains one sandwich step; returns its mean loss."""
        batch = next(self.batches)
        target = teacher_qkv(self.teacher, batch)
        total = 0.0
        sandwich = sandwich_students(self.students, self.step, self.recipe.sandwich)
        for student in sandwich:
            loss = student_relation_loss(
                self.supernet, self.teacher, student, batch, target, self.recipe.loss
            )
            loss.backward()
            total += float(loss.detach())
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.losses.append(total / len(sandwich))
        self.step += 1
        if self.done:
            self.supernet.eval()
        return self.losses[-1]

    def state_dict(self) -> dict[str, Any]:
        """Everything a restore needs: weights, optimiser, step, losses, random states."""
        state: dict[str, Any] = {
            "step": self.step,
            "losses": list(self.losses),
            "supernet": self.supernet.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        device = next(self.supernet.parameters()).device
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continues from ``state`` (of a training of the same candidate); draws and drops the
        ``state["step"]`` batches already used. A state that does not fit changes nothing.

        Raises:
            ValueError: ``state`` does not fit (another shape, more steps than the recipe's).
        """
        step = int(state["step"])
        if not 0 <= step <= self.recipe.steps or len(state["losses"]) != step:
            raise ValueError(f"saved step {step} does not fit a {self.recipe.steps}-step recipe")
        # torch loads a module's matching tensors before it reports the others: keep a copy
        weights = {k: v.clone() for k, v in self.supernet.state_dict().items()}
        optimizer, rng = copy.deepcopy(self.optimizer.state_dict()), torch.get_rng_state()
        device = next(self.supernet.parameters()).device
        try:
            self.supernet.load_state_dict(state["supernet"])
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            if device.type == "cuda" and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"], device)
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            self.supernet.load_state_dict(weights)
            self.optimizer.load_state_dict(optimizer)
            torch.set_rng_state(rng)
            raise ValueError(f"saved state does not fit this supernet: {e}") from e
        for _ in range(step):
            next(self.batches)
        self.step, self.losses = step, [float(v) for v in state["losses"]]
        if self.done:
            self.supernet.eval()
