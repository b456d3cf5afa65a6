"""BOSHNAS's surrogate: a heteroscedastic neural model of performance on fixed-size embeddings.

The surrogate (``jha-lab/boshnas: boshnas/models.py, npn.py, boshnas.py``) is three small nets on
the embedding x of a candidate:

* teacher f: an MLP with MC dropout fitted to the target y;
* student g: an MLP fitted to the standard deviation of 10 MC-dropout passes of the teacher, a
  cheap and differentiable epistemic uncertainty ξ(x);
* NPN h: a natural-parameter network giving the mean μ(x) and the aleatoric variance s(x),
  fitted with the heteroscedastic Gaussian NLL.

Targets. The public API takes *performance, higher is better* (a GLUE score, say). Inside, as in
the reference, the target is a normalised loss ``y = (bound − performance) / max_loss`` with
``bound`` the best achievable performance (1 for scores in [0, 1], which gives the reference's
``1 − performance``) and ``max_loss`` the largest loss in the data fitted, so y lies in [0, 1]
with 0 = perfect, matching the nets' sigmoid outputs. (The reference takes ``max_loss`` over the
initial set only; over all fitted data no target can leave [0, 1].) Predictions, uncertainties
and the acquisition are in these y units: lower is better.

Training deviates from the reference for speed (the goal is a suggestion in about a second with
500 observations): minibatches instead of per-sample updates; a fixed 80/20 train/validation
split per ``fit`` call with the reference's early-stopping rule and the best-validation weights
kept; the nets are kept between calls, so a ``fit`` with a few new points continues training
(warm start) instead of starting over; and, because minibatches take ~batch-size fewer steps
than per-sample updates, every net uses AdamW at ``lr`` 2e-3 (the reference: teacher AdamW 2e-3,
student SGD 2e-3, NPN AdamW 5e-5). The student's targets (std of 10 MC-dropout passes) are
drawn once per fit, after the teacher has been trained.

Minibatches hold at most ``batch_size`` (128) rows and an epoch has at least 8 steps, so small
data sets train almost per-sample as the reference does, and up to 1,024 training rows an epoch
is 8 steps (a warm fit at 500 observations took 35% less time than with 32-row batches, at
the same teacher validation loss; below 256 observations the two are identical). Early
stopping uses the reference's numbers (more than 10 validation losses, 7 of patience) against
the best loss so far, see ``early_stop`` (``_boshnas_nets.py``, with the nets and their training
loop); warm fits stop after ``WARM_MAX_EPOCHS`` (20).

A caveat measured while testing, true of the reference design too: the MC-dropout spread of the
teacher (which the student distils, and only at the observed points) is dominated by dropout
noise and grows only mildly away from the data; beyond the data's hull, where the teacher's
sigmoid saturates, it can even shrink. ξ is therefore a weak novelty signal; GOBI's clamp to the
library's box keeps the search where it is least misleading.

``BoshnasProposer`` (``_boshnas.py``) turns this surrogate into batch proposals.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from archsearch.surrogates._boshnas_nets import student_net, teacher_net, train_net
from archsearch.surrogates._npn import NPNRegressor, heteroscedastic_nll

#: Reference constants (constants.py).
MC_DROPOUT_PASSES = 10  # Teacher_student_cycles
TRAIN_FRACTION = 0.8  # Train_test_split
MAX_EPOCHS = 200  # EPOCHS
EXPLORATION_WEIGHT = 0.5  # k1 = k2 in a(x) = μ − 0.5·ξ (− 0.5·s)
#: Epoch cap of a warm fit (not the reference's: it keeps suggestions under a second).
WARM_MAX_EPOCHS = 20


@dataclass(frozen=True)
class FitReport:
    """What one ``BoshnasSurrogate.fit`` did.

    Attributes:
        n: Number of points fitted.
        epochs: Epochs run per net (teacher, student, npn).
        validation_loss: Best validation loss per net.
        warm: Whether the nets continued from an earlier fit.
        seconds: Wall time of the fit.
    """

    n: int
    epochs: dict[str, int]
    validation_loss: dict[str, float]
    warm: bool
    seconds: float


class BoshnasSurrogate:
    """The BOSHNAS teacher/student/NPN surrogate on fixed-size embeddings.

    Args:
        input_dim: Embedding dimension d.
        seed: Seeds the initial weights, the splits, shuffles and dropout masks; two surrogates
            with the same seed given the same sequence of ``fit`` calls are identical.
        performance_bound: The best achievable performance (1.0 for scores in [0, 1], as the
            reference). None derives it from each fit's data as
            ``max + 0.5·(max − min)``, which makes the targets invariant to affine rescaling
            of the performance and leaves room below the best observed loss.
        input_center: Subtracted from inputs before the nets (per dimension); None takes the
            mean of the first fit's inputs. Pass the library's statistics when there is one.
        input_scale: Inputs are divided by it after centring; None takes the first fit's std.
        aleatoric: Use the NPN for μ and s (the reference default); False takes μ from the
            teacher (dropout off) and has no aleatoric term.
        batch_size: Minibatch size.
        max_epochs: Epoch limit per net and fit (early stopping usually ends sooner).
        warm_max_epochs: Epoch limit of a warm fit (nets already fitted on all but the newest
            points), default ``WARM_MAX_EPOCHS`` (20); None: ``max_epochs``. The student's
            target (the teacher's MC-dropout spread) moves with every teacher fit, so its early
            stop rarely fires and an uncapped warm fit at 500 points spent ~180 student epochs
            (1.11 s per suggestion; capped: 0.53 s, benchmarks/suggest_time.py). On the
            FlexiBERT-small table the cap found the top 1% in 26.5 median evaluations against
            27.5 uncapped (20 seeds each, benchmarks/nas_table.py).
        lr: AdamW learning rate of all three nets.
    """

    def __init__(
        self,
        input_dim: int = 16,
        *,
        seed: int = 0,
        performance_bound: float | None = 1.0,
        input_center: np.ndarray | None = None,
        input_scale: np.ndarray | None = None,
        aleatoric: bool = True,
        batch_size: int = 128,
        max_epochs: int = MAX_EPOCHS,
        warm_max_epochs: int | None = WARM_MAX_EPOCHS,
        lr: float = 2e-3,
    ) -> None:
        if input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, got {input_dim}")
        if batch_size < 1 or max_epochs < 1:
            raise ValueError(
                f"batch_size and max_epochs must be >= 1, got {batch_size} and {max_epochs}"
            )
        if warm_max_epochs is not None and warm_max_epochs < 1:
            raise ValueError(f"warm_max_epochs must be >= 1 or None, got {warm_max_epochs}")
        self.warm_max_epochs = warm_max_epochs
        if performance_bound is not None and not math.isfinite(performance_bound):
            raise ValueError(f"performance_bound must be finite or None, got {performance_bound}")
        self.input_dim = input_dim
        self.seed = seed
        self.performance_bound = performance_bound
        self.aleatoric = aleatoric
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self._center: torch.Tensor | None = None
        self._scale: torch.Tensor | None = None
        if input_center is not None or input_scale is not None:
            self._set_normalisation(
                np.zeros(input_dim) if input_center is None else input_center,
                np.ones(input_dim) if input_scale is None else input_scale,
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.teacher = teacher_net(input_dim)
            self.student = student_net(input_dim)
            self.npn = NPNRegressor(input_dim)
        self._optimisers = {
            name: torch.optim.AdamW(net.parameters(), lr=lr) for name, net in self._nets().items()
        }
        self.n_fits = 0
        #: Bound and max_loss of the last fit (the target transform), None before a fit.
        self.target_transform: tuple[float, float] | None = None

    def _nets(self) -> dict[str, nn.Module]:
        nets: dict[str, nn.Module] = {"teacher": self.teacher, "student": self.student}
        if self.aleatoric:
            nets["npn"] = self.npn
        return nets

    def _set_normalisation(self, center: np.ndarray, scale: np.ndarray) -> None:
        center = np.asarray(center, dtype=np.float64).reshape(-1)
        scale = np.asarray(scale, dtype=np.float64).reshape(-1)
        if center.shape != (self.input_dim,) or scale.shape != (self.input_dim,):
            raise ValueError(
                f"input_center and input_scale must have shape ({self.input_dim},), got "
                f"{center.shape} and {scale.shape}"
            )
        # A constant dimension carries no information; scale 1 keeps it finite.
        scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
        self._center = torch.as_tensor(center, dtype=torch.float32)
        self._scale = torch.as_tensor(scale, dtype=torch.float32)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        assert self._center is not None and self._scale is not None
        return (x - self._center) / self._scale

    # ------------------------------------------------------------------ targets
    def targets(self, performance: np.ndarray) -> np.ndarray:
        """The normalised losses y in [0, 1] that ``fit`` trains on (and sets the transform)."""
        perf = np.asarray(performance, dtype=np.float64)
        best, worst = float(perf.max()), float(perf.min())
        if self.performance_bound is None:
            spread = best - worst if best > worst else max(1.0, abs(best))
            bound = best + 0.5 * spread
        else:
            bound = self.performance_bound
            if best > bound:
                raise ValueError(
                    f"performance {best} is above performance_bound {bound}; pass the best "
                    "achievable value as performance_bound (or None to derive it from the data)"
                )
        loss = bound - perf
        max_loss = float(loss.max())
        self.target_transform = (bound, max_loss)
        if max_loss <= 0:  # every point is perfect
            return np.zeros_like(loss)
        return loss / max_loss

    def to_performance(self, y: np.ndarray) -> np.ndarray:
        """Maps predicted normalised losses back to performance units (after a fit)."""
        if self.target_transform is None:
            raise ValueError("the surrogate has not been fitted; call fit first")
        bound, max_loss = self.target_transform
        return bound - np.asarray(y) * max_loss

    # ------------------------------------------------------------------ training
    def fit(self, x: np.ndarray, performance: np.ndarray) -> FitReport:
        """Fits (or, after an earlier fit, continues training) all nets on ``(x, performance)``.

        Args:
            x: Embeddings, shape ``(n, d)``, n >= 2.
            performance: Performance per row, higher is better, shape ``(n,)``.
        """
        features = np.asarray(x, dtype=np.float64)
        perf = np.asarray(performance, dtype=np.float64).reshape(-1)
        if features.ndim != 2 or features.shape[1] != self.input_dim:
            raise ValueError(
                f"x must have shape (n, {self.input_dim}), got {features.shape}; "
                "pass one embedding per row"
            )
        if features.shape[0] != perf.shape[0]:
            raise ValueError(
                f"x has {features.shape[0]} rows but performance has {perf.shape[0]} values; "
                "pass one performance per row"
            )
        if features.shape[0] < 2:
            raise ValueError(f"fit needs at least 2 points, got {features.shape[0]}")
        if not (np.isfinite(features).all() and np.isfinite(perf).all()):
            raise ValueError("x and performance must be finite; drop failed (NaN/inf) trials")
        started = time.perf_counter()
        if self._center is None:
            self._set_normalisation(features.mean(axis=0), features.std(axis=0))
        y = torch.as_tensor(self.targets(perf), dtype=torch.float32)
        inputs = torch.as_tensor(features, dtype=torch.float32)
        n = inputs.shape[0]
        warm = self.n_fits > 0
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + 7919 * n + self.n_fits)
        order = torch.randperm(n, generator=generator)
        n_train = max(1, min(n - 1, round(TRAIN_FRACTION * n)))
        train, val = order[:n_train], order[n_train:]
        epochs: dict[str, int] = {}
        best_losses: dict[str, float] = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
            xn = self._normalise(inputs)
            epochs["teacher"], best_losses["teacher"] = self._train(
                self.teacher, "teacher", xn, y, train, val, generator, self._mse_loss(self.teacher)
            )
            with torch.no_grad():
                self.teacher.train()
                passes = self.teacher(xn.repeat(MC_DROPOUT_PASSES, 1)).reshape(MC_DROPOUT_PASSES, n)
                spread = passes.std(dim=0)
            epochs["student"], best_losses["student"] = self._train(
                self.student,
                "student",
                xn,
                spread,
                train,
                val,
                generator,
                self._mse_loss(self.student),
            )
            if self.aleatoric:
                epochs["npn"], best_losses["npn"] = self._train(
                    self.npn, "npn", xn, y, train, val, generator, self._npn_loss
                )
        self.n_fits += 1
        return FitReport(
            n=n,
            epochs=epochs,
            validation_loss=best_losses,
            warm=warm,
            seconds=time.perf_counter() - started,
        )

    @staticmethod
    def _mse_loss(net: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        def loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return torch.mean((net(x).squeeze(-1) - target) ** 2)

        return loss

    def _npn_loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mean, var = self.npn(x)
        return heteroscedastic_nll(mean, var, target)

    def _train(
        self,
        net: nn.Module,
        name: str,
        x: torch.Tensor,
        target: torch.Tensor,
        train: torch.Tensor,
        val: torch.Tensor,
        generator: torch.Generator,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> tuple[int, float]:
        limit = self.max_epochs
        if self.n_fits > 0 and self.warm_max_epochs is not None:
            limit = min(limit, self.warm_max_epochs)
        return train_net(
            net,
            self._optimisers[name],
            x,
            target,
            train,
            val,
            generator,
            loss_fn,
            batch_size=self.batch_size,
            max_epochs=limit,
        )

    # ------------------------------------------------------------------ inference
    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Weights frozen and the teacher's dropout off: for optimising the acquisition's input."""
        nets = self._nets()
        flags = {name: [p.requires_grad for p in net.parameters()] for name, net in nets.items()}
        modes = {name: net.training for name, net in nets.items()}
        try:
            for net in nets.values():
                net.eval()
                net.requires_grad_(False)
            yield
        finally:
            for name, net in nets.items():
                for param, flag in zip(net.parameters(), flags[name], strict=True):
                    param.requires_grad_(flag)
                net.train(modes[name])

    def _moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xn = self._normalise(x)
        epistemic = self.student(xn).squeeze(-1)
        if self.aleatoric:
            mean, aleatoric = self.npn(xn)
        else:
            mean, aleatoric = self.teacher(xn).squeeze(-1), torch.zeros_like(epistemic)
        return mean, epistemic, aleatoric

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicted normalised loss μ, epistemic ξ (std) and aleatoric s (variance) per row.

        All three are in target units (see the module docstring); lower μ is better.
        """
        if self.n_fits == 0:
            raise ValueError("the surrogate has not been fitted; call fit first")
        inputs = torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=torch.float32)
        if inputs.ndim != 2 or inputs.shape[1] != self.input_dim:
            raise ValueError(f"x must have shape (n, {self.input_dim}), got {tuple(inputs.shape)}")
        with self.frozen(), torch.no_grad():
            mean, epistemic, aleatoric = self._moments(inputs)
        return mean.double().numpy(), epistemic.double().numpy(), aleatoric.double().numpy()

    def acquisition(self, x: torch.Tensor, use_aleatoric: bool = False) -> torch.Tensor:
        """The reference acquisition ``a = μ − 0.5·ξ`` (``− 0.5·s`` too when ``use_aleatoric``).

        Differentiable w.r.t. ``x`` (shape ``(B, d)``, float32); returns ``(B,)``; lower is
        better. Call inside ``frozen()`` when optimising x so no weight gradients accumulate.
        """
        mean, epistemic, aleatoric = self._moments(x)
        uncertainty = epistemic + aleatoric if use_aleatoric and self.aleatoric else epistemic
        return mean - EXPLORATION_WEIGHT * uncertainty
