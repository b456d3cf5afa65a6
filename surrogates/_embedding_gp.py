"""A BoTorch Gaussian-process baseline over the same library of embeddings as BOSHNAS.

``EmbeddingGPProposer`` fits a ``SingleTaskGP`` (Matérn-5/2 ARD kernel, BoTorch's defaults) on
the observed embeddings, inputs scaled to the unit cube by the library's bounding box, and the
standardised performance; it then picks the batch over the discrete library by
``qLogExpectedImprovement`` with sequential greedy selection (``optimize_acqf_discrete``: each
pick is conditioned on the earlier picks as pending points and removed from the choices, so a
batch has no repeats). Its initial design is ``n_init`` uniformly random rows (in flight rows
count, see ``LibraryProposer``). Several
objectives are scalarised per batch exactly as ``BoshnasProposer`` does (ParEGO).

Nothing is cached: each call fits the GP from scratch on the history, so it keeps no state.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from botorch.acquisition.logei import qLogExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.optim import optimize_acqf_discrete
from botorch.sampling import SobolQMCNormalSampler
from gpytorch.mlls import ExactMarginalLogLikelihood

from archsearch.surrogates._library_proposer import N_INIT, LibraryProposer, Observations, Proposal

QLOGEI = "qlogei"


class EmbeddingGPProposer(LibraryProposer):
    """GP + qLogEI over the non-excluded library rows (a baseline for ``BoshnasProposer``).

    Args:
        directions: One ``"maximize"``/``"minimize"`` per objective.
        n_init: Random rows of the initial design (observed or in flight).
        seed: Seeds the quasi-Monte-Carlo sampler of qLogEI (and the GP fit's restarts).
        mc_samples: Quasi-MC samples for qLogEI.
        max_batch_size: Library rows evaluated per acquisition call (bounds memory).
    """

    def __init__(
        self,
        directions: Sequence[str] = ("maximize",),
        n_init: int = N_INIT,
        seed: int = 0,
        mc_samples: int = 128,
        max_batch_size: int = 2048,
    ) -> None:
        super().__init__(directions, n_init, seed)
        if mc_samples < 1 or max_batch_size < 1:
            raise ValueError(
                f"mc_samples and max_batch_size must be >= 1, got {mc_samples}, {max_batch_size}"
            )
        self.mc_samples = mc_samples
        self.max_batch_size = max_batch_size

    def fit_model(
        self, library: np.ndarray, x: np.ndarray, performance: np.ndarray
    ) -> SingleTaskGP:
        """The GP on ``(x, standardised performance)``, hyperparameters by maximum likelihood."""
        bounds = torch.as_tensor(np.stack([library.min(axis=0), library.max(axis=0)]))
        # A dimension constant over the library would divide by zero in Normalize.
        bounds[1] = torch.where(bounds[1] > bounds[0], bounds[1], bounds[0] + 1.0)
        train_y = torch.as_tensor(performance, dtype=torch.float64).unsqueeze(-1)
        spread = train_y.std() if train_y.shape[0] > 1 and train_y.std() > 0 else 1.0
        train_y = (train_y - train_y.mean()) / spread
        model = SingleTaskGP(
            torch.as_tensor(x, dtype=torch.float64),
            train_y,
            input_transform=Normalize(d=library.shape[1], bounds=bounds),
            outcome_transform=None,  # standardised above, as the issue asks
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        return model

    def _propose(
        self,
        obs: Observations,
        performance: np.ndarray,
        count: int,
        rng: np.random.Generator,
        kinds: Sequence[str] | None,
    ) -> list[Proposal]:
        model = self.fit_model(obs.library, obs.library[obs.observed], performance)
        best = model.train_targets.max()
        sampler = SobolQMCNormalSampler(
            sample_shape=torch.Size([self.mc_samples]), seed=int(rng.integers(2**31 - 1))
        )
        acquisition = qLogExpectedImprovement(model, best_f=best, sampler=sampler)
        free_rows = np.flatnonzero(obs.free)
        choices = torch.as_tensor(obs.library[free_rows], dtype=torch.float64)
        picked, _ = optimize_acqf_discrete(
            acquisition, q=count, choices=choices, max_batch_size=self.max_batch_size, unique=True
        )
        # optimize_acqf_discrete returns rows of ``choices``; map each back to an unused index
        # (two candidates can share an embedding, so match exactly and skip rows already used).
        unused = np.ones(free_rows.shape[0], dtype=bool)
        proposals = []
        for candidate in picked:
            matches = np.flatnonzero((choices == candidate).all(dim=-1).numpy() & unused)
            position = int(matches[0])
            unused[position] = False
            proposals.append(Proposal(int(free_rows[position]), QLOGEI))
        return proposals
