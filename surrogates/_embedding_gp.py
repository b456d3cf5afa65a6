"""A BoTorch Gaussian-process baseline over the same library of embeddings as BOSHNAS.

``EmbeddingGPProposer`` fits a ``SingleTaskGP`` (Matérn-5/2 ARD kernel, BoTorch's defaults) on
the observed embeddings, inputs scaled to the unit cube by the library's bounding box, and the
standardised performance; it then picks the batch over the discrete library by
``qLogExpectedImprovement`` with sequential greedy selection (``optimize_acqf_discrete``: each
pick is conditioned on the earlier picks as pending points and removed from the choices, so a
batch has no repeats). By default (``pending="ignore"``) rows in flight are only kept out of the
choices: the model does not know they will be evaluated, so with several workers a pick may
land right beside a row already running. Its initial design is ``n_init`` uniformly random rows
(in flight rows count, see ``LibraryProposer``). Several objectives are scalarised per batch
exactly as ``BoshnasProposer`` does (ParEGO).

With ``pending="believer"`` (a kriging believer, Ginsbourger et al. 2010, as BOSHNAS's option of
the same name) the rows in flight join the GP's data with its own predicted mean, under the
fitted hyperparameters, which shrinks the predicted uncertainty around them; each pick is then
the free row of highest analytic ``LogExpectedImprovement``, and a batch repeats that with each
pick believed in turn.

With ``pending="joint"`` the rows in flight are qLogEI's ``X_pending`` (BoTorch's own treatment
of pending points, as in Wilson et al. 2018): a candidate is scored by the expected improvement
of the joint batch, itself and the rows in flight together, under the GP's joint posterior, so
a candidate that would only repeat what a running row will show adds nothing. It is the exact
counterpart of the greedy batch's own conditioning on its earlier picks.

The performance is standardised before the fit; with ``outcome="power"`` it is then
Yeo-Johnson transformed by maximum likelihood (scikit-learn's ``PowerTransformer``) and
standardised again, as HEBO (Cowen-Rivers et al. 2022) warps its outputs: a long tail of poor
rows then no longer stretches the scale the GP must fit near the best ones. The transform is
monotone, so the best row stays the best.

With ``input_warp`` each input dimension, scaled to the unit interval by the library's bounding
box, is passed through a Kumaraswamy CDF whose two parameters are fitted with the kernel's
(BoTorch's ``Warp``, Snoek et al. 2014, under its default priors): a size that matters on a log
scale, or only near its top, then needs no fixed transform. A 0/1 column stays 0/1.
Its fit is the costly one: run to L-BFGS-B's convergence it took 8,343 iterations (34 s on one
core) at 200 observations of 20 inputs, against 96 without the warp. ``fit_iterations``
caps the iterations of each fit; with ``warm_start`` each capped fit goes on from the last, so
the hyperparameters still follow the data as it grows.

Each call fits the GP on the history; only with ``warm_start`` does the last fit's
hyperparameters start the next one (the only state kept).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.analytic import LogExpectedImprovement
from botorch.acquisition.logei import qLogExpectedImprovement
from botorch.exceptions.warnings import InputDataWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import InputTransform, Normalize, Warp
from botorch.optim import optimize_acqf_discrete
from botorch.sampling import SobolQMCNormalSampler
from gpytorch.mlls import ExactMarginalLogLikelihood

from archsearch.surrogates._library_proposer import N_INIT, LibraryProposer, Observations, Proposal

QLOGEI = "qlogei"
QLOGEI_JOINT = "qlogei-joint"
LOGEI_BELIEVER = "logei-believer"
#: How rows in flight count (``EmbeddingGPProposer.pending``).
GP_PENDING_MODES = ("ignore", "believer", "joint")
#: How the performance is scaled before the fit (``EmbeddingGPProposer.outcome``).
GP_OUTCOMES = ("standardize", "power")


class EmbeddingGPProposer(LibraryProposer):
    """GP + qLogEI over the non-excluded library rows (a baseline for ``BoshnasProposer``).

    Args:
        directions: One ``"maximize"``/``"minimize"`` per objective.
        n_init: Random rows of the initial design (observed or in flight).
        seed: Seeds the quasi-Monte-Carlo sampler of qLogEI (and the GP fit's restarts).
        mc_samples: Quasi-MC samples for qLogEI.
        max_batch_size: Library rows evaluated per acquisition call (bounds memory).
        pending: ``ignore`` (default): rows in flight are only kept out of the proposals.
            ``believer``: they join the GP's data with its predicted mean (module docstring);
            ``joint``: they are qLogEI's ``X_pending``, the batch's improvement counted
            jointly with theirs. With either, a library loop fits once per suggestion.
        warm_start: Start each hyperparameter fit from the previous fit's (same input width).
        outcome: ``standardize`` (default) or ``power`` (then Yeo-Johnson, module docstring).
        input_warp: Fit a Kumaraswamy warp of each input with the kernel (module docstring).
        fit_iterations: At most this many L-BFGS-B iterations per hyperparameter fit
            (``None``, default: until the optimiser converges).
        init: The initial design, ``random`` (default) or ``maximin`` (``LibraryProposer``).
    """

    def __init__(
        self,
        directions: Sequence[str] = ("maximize",),
        n_init: int = N_INIT,
        seed: int = 0,
        mc_samples: int = 128,
        max_batch_size: int = 2048,
        pending: str = "ignore",
        warm_start: bool = False,
        outcome: str = "standardize",
        input_warp: bool = False,
        fit_iterations: int | None = None,
        init: str = "random",
    ) -> None:
        super().__init__(directions, n_init, seed, init)
        if mc_samples < 1 or max_batch_size < 1:
            raise ValueError(
                f"mc_samples and max_batch_size must be >= 1, got {mc_samples}, {max_batch_size}"
            )
        if pending not in GP_PENDING_MODES:
            raise ValueError(
                f"pending must be one of {', '.join(GP_PENDING_MODES)}, got {pending!r}"
            )
        if outcome not in GP_OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(GP_OUTCOMES)}, got {outcome!r}")
        if fit_iterations is not None and (
            isinstance(fit_iterations, bool)
            or not isinstance(fit_iterations, int)
            or fit_iterations < 1
        ):
            raise ValueError(f"fit_iterations must be a whole number >= 1, got {fit_iterations!r}")
        self.fit_iterations = fit_iterations
        self.pending = pending
        self.outcome = outcome
        self.uses_pending = pending in ("believer", "joint")
        self.mc_samples = mc_samples
        self.max_batch_size = max_batch_size
        self.warm_start = warm_start
        self.input_warp = input_warp
        self._hyperparameters: dict[int, dict[str, torch.Tensor]] = {}

    def _gp(
        self, library: np.ndarray, x: np.ndarray | torch.Tensor, y: torch.Tensor
    ) -> SingleTaskGP:
        d = library.shape[1]
        bounds = torch.as_tensor(np.stack([library.min(axis=0), library.max(axis=0)]))
        # A dimension constant over the library would divide by zero in Normalize.
        bounds[1] = torch.where(bounds[1] > bounds[0], bounds[1], bounds[0] + 1.0)
        scaling: InputTransform = (
            Warp(d=d, indices=list(range(d)), bounds=bounds)
            if self.input_warp
            else Normalize(d=d, bounds=bounds)
        )
        return SingleTaskGP(
            torch.as_tensor(x, dtype=torch.float64),
            y,
            input_transform=scaling,
            outcome_transform=None,  # standardised by the caller, as the issue asks
        )

    def fit_model(
        self, library: np.ndarray, x: np.ndarray, performance: np.ndarray
    ) -> SingleTaskGP:
        """The GP on ``(x, standardised performance)``, hyperparameters by maximum likelihood."""
        train_y = self.scale(performance)
        model = self._gp(library, x, train_y)
        warm = self._hyperparameters.get(x.shape[1]) if self.warm_start else None
        if warm is not None:  # the last fit's hyperparameters, as the optimiser's start
            model.load_state_dict(warm, strict=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            mll = ExactMarginalLogLikelihood(model.likelihood, model)
            cap = None if self.fit_iterations is None else {"maxiter": self.fit_iterations}
            fit_gpytorch_mll(mll, optimizer_kwargs=None if cap is None else {"options": cap})
        if self.warm_start:
            self._hyperparameters[x.shape[1]] = {
                k: v.detach().clone() for k, v in model.state_dict().items()
            }
        return model

    def scale(self, performance: np.ndarray) -> torch.Tensor:
        """The GP's targets (a column): ``performance`` standardised (``outcome="power"``: then
        Yeo-Johnson transformed and standardised again, once there are three distinct values)."""
        y = torch.as_tensor(performance, dtype=torch.float64).unsqueeze(-1)
        spread = y.std() if y.shape[0] > 1 and y.std() > 0 else torch.tensor(1.0)
        y = (y - y.mean()) / spread
        if self.outcome == "power" and torch.unique(y).shape[0] > 2:
            from sklearn.preprocessing import PowerTransformer

            warped = PowerTransformer(method="yeo-johnson").fit_transform(y.numpy())
            y = torch.as_tensor(warped, dtype=torch.float64)
            y = y / y.std()  # PowerTransformer divides by the biased spread
        return y

    def believe(
        self, library: np.ndarray, model: SingleTaskGP, observed: np.ndarray, rows: np.ndarray
    ) -> SingleTaskGP:
        """``model`` (fitted on the ``observed`` rows) with ``rows`` added at its predicted
        mean, under its fitted hyperparameters (no refit): the kriging believer."""
        if rows.size == 0:
            return model
        x_new = torch.as_tensor(library[rows], dtype=torch.float64)
        with torch.no_grad():
            believed = model.posterior(x_new).mean.reshape(-1, 1)
        x = torch.cat([torch.as_tensor(library[observed], dtype=torch.float64), x_new])
        y = torch.cat([model.train_targets.reshape(-1, 1), believed])
        with warnings.catch_warnings():  # believed means leave y just off unit variance
            warnings.simplefilter("ignore", InputDataWarning)
            believer = self._gp(library, x, y)
        believer.load_state_dict(model.state_dict(), strict=False)
        believer.eval()
        return believer

    def _propose(
        self,
        obs: Observations,
        performance: np.ndarray,
        count: int,
        rng: np.random.Generator,
        kinds: Sequence[str] | None,
    ) -> list[Proposal]:
        model = self.fit_model(obs.library, obs.library[obs.observed], performance)
        if self.pending == "believer":
            return self._propose_believer(obs, model.eval(), count)
        best = model.train_targets.max()
        sampler = SobolQMCNormalSampler(
            sample_shape=torch.Size([self.mc_samples]), seed=int(rng.integers(2**31 - 1))
        )
        joint = self.pending == "joint" and obs.pending.size > 0
        x_pending = (
            torch.as_tensor(obs.library[obs.pending], dtype=torch.float64) if joint else None
        )
        acquisition = qLogExpectedImprovement(
            model, best_f=best, sampler=sampler, X_pending=x_pending
        )
        rows = self._pick(acquisition, obs.library, np.flatnonzero(obs.free), count)
        return [Proposal(row, QLOGEI_JOINT if joint else QLOGEI) for row in rows]

    def _pick(
        self, acquisition: AcquisitionFunction, library: np.ndarray, free_rows: np.ndarray, q: int
    ) -> list[int]:
        """The ``q`` free rows ``optimize_acqf_discrete`` picks (sequential greedy, no repeats)."""
        choices = torch.as_tensor(library[free_rows], dtype=torch.float64)
        picked, _ = optimize_acqf_discrete(
            acquisition, q=q, choices=choices, max_batch_size=self.max_batch_size, unique=True
        )
        # optimize_acqf_discrete returns rows of ``choices``; map each back to an unused index
        # (two candidates can share an embedding, so match exactly and skip rows already used).
        unused = np.ones(free_rows.shape[0], dtype=bool)
        rows = []
        for candidate in picked:
            matches = np.flatnonzero((choices == candidate).all(dim=-1).numpy() & unused)
            position = int(matches[0])
            unused[position] = False
            rows.append(int(free_rows[position]))
        return rows

    def _propose_believer(
        self, obs: Observations, model: SingleTaskGP, count: int
    ) -> list[Proposal]:
        free = obs.free.copy()
        believed = obs.pending
        proposals: list[Proposal] = []
        for _ in range(count):
            believer = self.believe(obs.library, model, obs.observed, believed)
            # Believed rows count as observed, as in the kriging believer: improving on the
            # best of them is what a pick must promise.
            acquisition = LogExpectedImprovement(believer, best_f=believer.train_targets.max())
            row = self._pick(acquisition, obs.library, np.flatnonzero(free), 1)[0]
            proposals.append(Proposal(row, LOGEI_BELIEVER))
            free[row] = False
            believed = np.append(believed, row)
        return proposals
