"""An archsearch plugin: a search space and a trainer of one's own (README "Your own trainer
and search space").

A scikit-learn MLP on the digits data bundled with scikit-learn: the ``mlp`` space searches
its depth, width and learning rate; the ``mlp`` trainer trains one epoch per step, reports the
test accuracy after each (the server's pruner reads it), uploads the fitted model, and returns
the accuracy and the parameter count. ``pip install -e examples/mlp_plugin`` publishes the
trainer's description as an ``archsearch.trainers`` entry point: the server imports this
module at start (which registers the space too), and ``archsearch worker --trainer mlp``
imports it for the trainer. ``test_mlp_plugin.py`` beside it runs archsearch's conformance
suites on both (README: ``PYTHONPATH=<archsearch checkout>/tests pytest examples/mlp_plugin``).
"""

from __future__ import annotations

import math
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

from archsearch.spaces import SPACES, Candidate, DesignSpace, SpecError, TrainerInfo
from archsearch.worker import (
    CandidateError,
    TrainContext,
    Trainer,
    TrainResult,
    register_trainer,
)

METRICS = ("accuracy", "params")


@SPACES.register("mlp")
class MlpSpace(DesignSpace):
    """Depth, width and learning rate of an MLP; options narrow the choices."""

    name = "mlp"

    def __init__(
        self,
        layers: list[int] | None = None,
        width: list[int] | None = None,
        lr: list[float] | None = None,
    ) -> None:
        self.layers = list(layers or [1, 2, 3])
        self.width = list(width or [8, 16, 64])
        self.lr = list(lr or [1e-4, 1e-1])
        if len(self.lr) != 2 or not 0 < self.lr[0] < self.lr[1]:
            raise SpecError("space_options.lr", f"must be [low, high], 0 < low < high, got {lr}")

    def options(self) -> dict[str, Any]:
        return {"layers": self.layers, "width": self.width, "lr": self.lr}

    def suggest(self, trial: Any) -> dict[str, Any]:
        return {
            "layers": trial.suggest_categorical("layers", self.layers),
            "width": trial.suggest_categorical("width", self.width),
            "lr": trial.suggest_float("lr", self.lr[0], self.lr[1], log=True),
        }

    def sample(self, rng: random.Random) -> dict[str, Any]:
        low, high = (math.log(v) for v in self.lr)
        return {
            "layers": rng.choice(self.layers),
            "width": rng.choice(self.width),
            "lr": math.exp(rng.uniform(low, high)),
        }

    def validate(self, architecture: Any) -> dict[str, Any]:
        if not isinstance(architecture, dict) or set(architecture) != {"layers", "width", "lr"}:
            raise SpecError("architecture", f"not an mlp architecture: {architecture!r}")
        for key, choices in (("layers", self.layers), ("width", self.width)):
            if architecture[key] not in choices or isinstance(architecture[key], bool):
                raise SpecError(
                    f"architecture.{key}", f"{architecture[key]!r} is not one of {choices}"
                )
        lr = architecture["lr"]
        if (
            isinstance(lr, bool)
            or not isinstance(lr, int | float)
            or not (self.lr[0] <= lr <= self.lr[1])
        ):
            raise SpecError("architecture.lr", f"{lr!r} is not in {self.lr}")
        return {**architecture, "lr": float(lr)}

    def to_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        return dict(architecture)

    def describe(self, architecture: dict[str, Any]) -> str:
        return f"{architecture['layers']}x{architecture['width']} lr={architecture['lr']:.2g}"


@register_trainer
class MlpTrainer(Trainer):
    """One epoch per step on scikit-learn's digits; ``recipe.max_steps`` epochs."""

    name = "mlp"
    info = TrainerInfo(
        name="mlp",
        description="a scikit-learn MLP on the digits data (an example plugin)",
        spaces=("mlp",),
        metrics=METRICS,
    )

    def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
        # what cannot be trained is the candidate's failure (not retried), said before any work
        unknown = [m for m in context.objective_metrics if m not in METRICS]
        if unknown:
            raise CandidateError(f"the mlp trainer reports {METRICS}, not {unknown}")
        arch = candidate.architecture
        for key, kind in (("layers", int), ("width", int), ("lr", float)):
            value = arch.get(key)
            if isinstance(value, bool) or not isinstance(value, kind | int) or not value > 0:
                raise CandidateError(f"architecture.{key} must be a number > 0, got {value!r}")
        import numpy as np
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from sklearn.neural_network import MLPClassifier

        x, y = load_digits(return_X_y=True)
        x_train, x_test, y_train, y_test = train_test_split(
            x / 16.0, y, test_size=0.3, random_state=0
        )
        model = MLPClassifier(
            hidden_layer_sizes=(arch["width"],) * arch["layers"],
            learning_rate_init=arch["lr"],
            random_state=candidate.recipe["seed"],
        )
        accuracy = 0.0
        for epoch in range(1, candidate.recipe["max_steps"] + 1):
            context.check()  # ends the trial when it is cancelled or the worker stops
            model.partial_fit(x_train, y_train, classes=np.arange(10))
            accuracy = float(model.score(x_test, y_test))
            context.report(epoch, accuracy)  # raises TrialPruned when the server prunes it
        if context.has_server:  # `archsearch fetch STUDY N --artifact model.pkl`
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "model.pkl"
                path.write_bytes(pickle.dumps(model))
                context.upload(path, "model.pkl")
        params = sum(w.size for w in model.coefs_) + sum(b.size for b in model.intercepts_)
        return TrainResult(
            metrics={"accuracy": accuracy, "params": float(params)},
            info={"epochs": str(candidate.recipe["max_steps"])},
        )
