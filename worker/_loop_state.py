"""What a :class:`~archsearch.worker._loop.TrainingLoop` run saves so it can continue later.

:class:`LoopState` is the run's :class:`~archsearch.worker._progress.Resumable`: the weights,
AdamW, the schedule, the loss scaler, the batches' position, the random states, the stateful
hooks (``TrainingHooks.stateful``), the best-weights copy, the intermediate values reported
and the hooks' metrics, all as they were after the last whole optimiser step. A run restored
from it draws the same batches, dropout masks and DyLoRA ranks as one that was never stopped.

The step boundary is marked after every optimiser step (:meth:`LoopState.mark`), so a stop
that lands inside a step (between its micro-batches) saves the state before that step: its
weights and optimiser have not moved yet, and what was drawn for it is drawn again.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import torch

from archsearch.worker._batches import EpochBatches

if TYPE_CHECKING:
    from archsearch.worker._loop import TrainingLoop


class Stateful(Protocol):
    """A hook object whose state a resumed training saves and restores."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


def random_state(device: torch.device) -> dict[str, Any]:
    """torch's random state (the device's too): dropout draws from it.

    Python's and NumPy's global generators are not kept: nothing in the loop or its hooks
    draws from them (the batches and a curriculum have their own generators, kept as their
    state), and taking NumPy's costs some 85 microseconds, at every optimiser step.
    """
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_random_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Puts back what :func:`random_state` took."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class LoopState:
    """One :meth:`TrainingLoop.run`'s resumable state.

    Args:
        loop: The loop (its model, hooks, best-weights copy and last values).
        optimizer, scheduler, scaler: The run's (``scaler`` None without loss scaling).
        batches: The run's micro-batches.
    """

    def __init__(
        self,
        loop: TrainingLoop,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler | None,
        batches: EpochBatches,
    ) -> None:
        self.loop, self.optimizer, self.scheduler = loop, optimizer, scheduler
        self.scaler, self.batches = scaler, batches
        #: Optimiser steps done at the last mark.
        self.step = 0
        self._marked: dict[str, Any] = {}

    def mark(self, step: int) -> None:
        """Notes that ``step`` optimiser steps are done: what the next one will draw from (the
        batches, the random states, the stateful hooks) is taken now."""
        self.step = step
        self._marked = {
            "batches": self.batches.state_dict(),
            "random": random_state(self.loop.device),
            "hooks": [h.state_dict() for h in self.loop.hooks.stateful],
        }

    def state_dict(self) -> dict[str, Any]:
        """The state at the last :meth:`mark`."""
        loop = self.loop
        return {
            "step": self.step,
            "max_steps": int(loop.recipe["max_steps"]),
            **self._marked,
            "model": loop.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "best": {
                "value": loop.best_value,
                "step": loop.best_step,
                "state": loop.best_state,
            },
            "last_values": dict(loop._last_values),
            "reports": [[step, value] for step, value in loop.reported],
            "metrics": dict(loop.hooks.metrics),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continues from ``state``, saved by a run of the same job. A state that does not fit
        changes nothing.

        Raises:
            ValueError: ``state`` does not fit (another model or recipe, or it is finished).
        """
        loop = self.loop
        step, max_steps = int(state["step"]), int(loop.recipe["max_steps"])
        if int(state["max_steps"]) != max_steps or not 0 < step < max_steps:
            raise ValueError(
                f"saved step {step} of {state['max_steps']} does not fit a {max_steps}-step run"
            )
        hooks = loop.hooks.stateful
        if len(state["hooks"]) != len(hooks):
            raise ValueError(f"saved {len(state['hooks'])} hook states, this run has {len(hooks)}")
        try:  # what the loop keeps, read before anything is loaded
            best = state["best"]
            best_value, best_step = float(best["value"]), int(best["step"])
            last_values = {k: float(v) for k, v in state["last_values"].items()}
            metrics = {k: float(v) for k, v in state["metrics"].items()}
            reported = [(int(s), float(v)) for s, v in state["reports"]]
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"saved state is incomplete: {e}") from e
        # torch loads a module's matching tensors before it reports the others, and any part
        # below may not fit: keep what each part had, to put it all back
        before = {
            "model": {k: v.clone() for k, v in loop.model.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scheduler": copy.deepcopy(self.scheduler.state_dict()),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "batches": self.batches.state_dict(),
            "hooks": [h.state_dict() for h in hooks],
            "random": random_state(loop.device),
        }
        try:
            self._load(state, hooks)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            self._load(before, hooks)
            raise ValueError(f"saved state does not fit this training: {e}") from e
        loop.best_value, loop.best_step, loop.best_state = best_value, best_step, best["state"]
        loop._last_values, loop.reported = last_values, reported
        loop.hooks.metrics.update(metrics)
        self.mark(step)

    def _load(self, state: Mapping[str, Any], hooks: tuple[Stateful, ...]) -> None:
        """Loads the model, optimiser, schedule, scaler, batches, hooks and random state."""
        self.loop.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.batches.load_state_dict(state["batches"])
        for hook, saved in zip(hooks, state["hooks"], strict=True):
            hook.load_state_dict(saved)
        set_random_state(state["random"], self.loop.device)
