"""Curricula: which training examples each epoch sees (the training loop's ``data_schedule``).

A candidate's ``data.curriculum`` (checked by :func:`archsearch.spaces.validate_curriculum`)
picks one; :class:`Curriculum` is the schedule, called by the loop at the start of every pass
over the data with the epoch index and returning that epoch's example indices.

* ``pudf`` (DDS-MAE, Lalor & Yu's DDaCLAE as PUDF runs it): a seeded ``val_fraction`` of the
  training split is held out (never trained on). At the start of each epoch the model answers
  ``num_obs`` of those items (sampled with replacement) and its ability θ̂ is their MAP
  estimate (:func:`~archsearch.worker._irt.estimate_ability`). The bound is θ̂ when θ̂ beats
  the best ability so far, else the last bound plus ``stall_step`` (the reference code's
  stall rule: at every epoch without progress). The epoch trains on the items whose IRT
  difficulty is at most the bound, and on at least the ``min_examples`` easiest.
* ``competency`` (Platanios et al., NAACL 2019): competency c(t) = min(1, t(1 − c0)/T + c0)
  (``linear``) or min(1, sqrt(t(1 − c0²)/T + c0²)) (``root``), t the optimiser steps taken
  before the epoch and T = ``duration`` × ``max_steps``; the epoch trains on the c(t) share
  of easiest items (at least ``min_examples``). Difficulty ``length``, ``rarity`` or ``irt``.

Every epoch's step, ability, bound and selected-set size is kept in :attr:`Curriculum.trace`:
the trial's info ``curriculum_trace`` (JSON, thinned to fit an info value's 2,000 characters),
and the last values as the metrics ``curriculum_ability`` and ``curriculum_examples`` (with
``curriculum_epochs`` and ``crowd_seconds``); each epoch is also logged. The study's
intermediate values stay its objective's (the service's report carries one metric), so the
curriculum is read from these, and on a worker connected to a server seen as a picture: the
trial's ``curriculum.png`` artifact on its optuna-dashboard page (info ``curriculum_plot``;
:mod:`~archsearch.worker._curriculum_plot`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from archsearch.worker._difficulty import Difficulties
from archsearch.worker._difficulty_sharing import shared_item_difficulties
from archsearch.worker._example import GlueExample
from archsearch.worker._irt import estimate_ability
from archsearch.worker._task_info import Task
from archsearch.worker._trainer import CandidateError, TrainContext
from archsearch.worker._trial_crowd import answers_name, items_key

__all__ = ["Answer", "Curriculum", "competency", "make_curriculum"]

log = logging.getLogger("archsearch.worker.curriculum")

#: ``answer(indices) -> correct``: whether the model (as trained so far) answers each of the
#: training split's items ``indices`` correctly.
Answer = Callable[[np.ndarray], np.ndarray]

#: A trial's info values are at most 2,000 characters (the server refuses longer ones).
TRACE_CHARS = 1900

# DDS-MAE's starting point in the reference code: the best ability so far, and the bound.
_START_ABILITY, _START_BOUND = -5.0, 0.0


def competency(step: float, total: float, c0: float, scheduler: str) -> float:
    """The share of the easiest items an epoch starting after ``step`` optimiser steps sees."""
    if total <= 0:
        return 1.0
    t = step / total
    if scheduler == "linear":
        return min(1.0, t * (1 - c0) + c0)
    return min(1.0, math.sqrt(t * (1 - c0**2) + c0**2))


class Curriculum:
    """A ``data.curriculum``'s schedule over one task's training split.

    Args:
        options: The checked curriculum (``method`` ``pudf`` or ``competency``).
        difficulties: One difficulty per training item.
        recipe: Reads ``max_steps``, ``batch_size``, ``gradient_accumulation_steps`` and
            ``seed``.
        answer: How the model answers training items; needed by ``pudf`` before the first
            epoch (set :attr:`answer` once the loop exists).
    """

    def __init__(
        self,
        options: Mapping[str, Any],
        difficulties: Difficulties,
        recipe: Mapping[str, Any],
        answer: Answer | None = None,
    ) -> None:
        self.options = dict(options)
        #: The artifact name under which the trained model's answers on the training items
        #: are uploaded (``crowd_trials`` on a worker with a server; :mod:`._trial_crowd`);
        #: empty: none are recorded.
        self.answers_name = ""
        self.difficulties = difficulties
        self.answer = answer
        self.method = str(options["method"])
        self.scheduler = str(options["scheduler"])
        values = np.asarray(difficulties.values, dtype=np.float64)
        n = len(values)
        self._rng = np.random.default_rng(int(recipe["seed"]) + 7919)
        if self.method == "pudf":
            held = max(1, round(float(options["val_fraction"]) * n))
            if held >= n:
                raise ValueError(f"{n} training items leave none to train on after the val split")
            order = self._rng.permutation(n)
            self.val_indices = np.sort(order[:held])
            self.train_indices = np.sort(order[held:])
        else:
            self.val_indices = np.empty(0, dtype=np.int64)
            self.train_indices = np.arange(n)
        # the training items, easiest first (ties in index order)
        train_values = values[self.train_indices]
        self._easiest = self.train_indices[np.argsort(train_values, kind="stable")]
        self._sorted_values = np.sort(train_values, kind="stable")
        self._values = values
        self.min_examples = min(int(options["min_examples"]), len(self.train_indices))
        #: Set when min_examples covers every training item: each epoch then sees them all.
        self.no_effect = ""
        if self.method != "none" and self.min_examples >= len(self.train_indices):
            self.no_effect = (
                f"min_examples {int(options['min_examples'])} >= the {len(self.train_indices)} "
                "training items: every epoch sees all of them, so the curriculum changes nothing "
                "(lower data.curriculum.min_examples, or train on more data)"
            )
            log.warning("curriculum %s: %s", self.method, self.no_effect)
        self._batch = int(recipe["batch_size"])
        self._accumulation = int(recipe.get("gradient_accumulation_steps", 1))
        self._total = float(options.get("duration", 1.0)) * int(recipe["max_steps"])
        self._micro_batches = 0
        self._best = _START_ABILITY
        self._bound = _START_BOUND
        #: One entry per epoch started: ``epoch``, ``step``, ``examples`` and, per method,
        #: ``ability`` and ``bound`` (pudf) or ``competency``.
        self.trace: list[dict[str, float]] = []

    def __call__(self, epoch: int) -> np.ndarray:
        """The indices of epoch ``epoch``'s training items (the loop's ``data_schedule``)."""
        step = self._micro_batches / self._accumulation
        entry: dict[str, float] = {"epoch": epoch, "step": round(step, 2)}
        if self.method == "pudf":
            ability = self._ability()
            self._bound = ability if ability > self._best else self._bound + self.stall_step
            self._best = max(self._best, ability)
            count = int(np.searchsorted(self._sorted_values, self._bound, side="right"))
            entry.update(ability=round(ability, 4), bound=round(self._bound, 4))
        else:
            share = competency(step, self._total, float(self.options["c0"]), self.scheduler)
            count = math.ceil(share * len(self._easiest))
            entry["competency"] = round(share, 4)
        chosen = np.sort(self._easiest[: max(count, self.min_examples)])
        entry["examples"] = len(chosen)
        self.trace.append(entry)
        self._micro_batches += -(-len(chosen) // self._batch)
        log.info("curriculum epoch %s", json.dumps(entry))
        return chosen

    def state_dict(self) -> dict[str, Any]:
        """What changes while training (the generator, the steps counted, PUDF's ability and
        bound, the trace), for a resumed training (``TrainingHooks.stateful``)."""
        return {
            "rng": self._rng.bit_generator.state,
            "micro_batches": self._micro_batches,
            "best": self._best,
            "bound": self._bound,
            "trace": list(self.trace),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continues from :meth:`state_dict` of the same curriculum."""
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        trace = [dict(entry) for entry in state["trace"]]
        self._rng, self._micro_batches = rng, int(state["micro_batches"])
        self._best, self._bound = float(state["best"]), float(state["bound"])
        self.trace = trace

    @property
    def stall_step(self) -> float:
        return float(self.options["stall_step"])

    def _ability(self) -> float:
        if self.answer is None:
            raise RuntimeError("the pudf curriculum needs Curriculum.answer before epoch 0")
        size = int(self.options["num_obs"])
        sample = self._rng.choice(self.val_indices, size=size, replace=True)
        asked = np.unique(sample)  # answer each item once, count it as often as sampled
        correct = dict(
            zip(asked.tolist(), np.asarray(self.answer(asked), bool).tolist(), strict=True)
        )
        answers = np.array([correct[i] for i in sample.tolist()])
        return estimate_ability(self._values[sample], answers)

    def metrics(self) -> dict[str, float]:
        """The last epoch's ability (pudf) and set size, the epochs started and the crowd's
        seconds in this process (0 when its difficulties were cached)."""
        out = {
            "curriculum_epochs": float(len(self.trace)),
            "curriculum_examples": float(self.trace[-1]["examples"]) if self.trace else 0.0,
            "crowd_seconds": self.difficulties.seconds,
        }
        if self.method == "pudf" and self.trace:
            out["curriculum_ability"] = float(self.trace[-1]["ability"])
        return out

    def info(self) -> dict[str, str]:
        """Provenance entries: method, scheduler, difficulty (and its cache key), the
        per-epoch trace as JSON, and the held-out items (pudf)."""
        out = {
            "curriculum": self.method,
            "curriculum_scheduler": self.scheduler,
            **self.difficulties.info(),
            "curriculum_trace": bounded_trace(self.trace),
        }
        if self.method == "pudf":
            out["curriculum_val_items"] = str(len(self.val_indices))
        if self.no_effect:
            out["curriculum_warning"] = self.no_effect
        return out


def make_curriculum(
    data: Mapping[str, Any],
    task: Task,
    examples: Sequence[GlueExample],
    recipe: Mapping[str, Any],
    context: TrainContext | None = None,
) -> Curriculum | None:
    """The curriculum a candidate's checked ``data`` asks for on ``task``'s training
    ``examples`` (as encoded, in order); None for none. With a ``context`` that has a server,
    IRT difficulties are shared by the study's trials (:mod:`._difficulty_sharing`).

    Raises:
        CandidateError: IRT difficulty on a regression task (a crowd's answers are right or
            wrong), or a training split too small for the folds or the held-out items.
    """
    options = data.get("curriculum") or {"method": "none"}
    if options["method"] == "none":
        return None
    if options["difficulty"] == "irt" and task.is_regression:
        raise CandidateError(
            f"data.curriculum: difficulty 'irt' needs a classification task, not {task.id!r} "
            "(use difficulty length or rarity with method competency)"
        )
    texts = [" ".join(e.texts) for e in examples]
    labels = [int(e.label) for e in examples]
    try:
        difficulties = shared_item_difficulties(
            texts, labels, options, task=task.id, context=context
        )
        curriculum = Curriculum(options, difficulties, recipe)
    except ValueError as e:
        raise CandidateError(f"data.curriculum: {e}") from e
    if options.get("crowd_trials") and context is not None and context.has_server:
        # the trained model's answers on these items join later trials' crowds
        curriculum.answers_name = answers_name(items_key(task.id, texts, labels))
    return curriculum


def bounded_trace(trace: Sequence[Mapping[str, float]], limit: int = TRACE_CHARS) -> str:
    """``trace`` as compact JSON of at most ``limit`` characters: when every epoch does not
    fit, evenly spaced epochs, always with the first and the last."""
    entries = list(trace)
    while True:
        text = json.dumps(entries, separators=(",", ":"))
        if len(text) <= limit or len(entries) <= 2:
            return text
        keep = np.unique(np.linspace(0, len(entries) - 1, max(2, len(entries) * 3 // 4)).round())
        entries = [entries[int(i)] for i in keep]
