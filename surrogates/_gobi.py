"""GOBI: gradient-based optimisation of the acquisition w.r.t. the input, snapped to a library.

BOSHNAS (``jha-lab/boshnas: boshnas/boshnas.py:get_queries``) freezes the surrogate, starts from
K library embeddings, runs AdaHessian on the acquisition a(x) with respect to x itself, clamps x
to the library's bounding box after each step, and maps each optimum to the nearest real
architecture (L1, i.e. the mean ``|x − e_j|`` over dimensions). The reference runs one thread
per start; here all K starts are one ``(K, d)`` parameter of one AdaHessian. That is the same
computation: the summed acquisition is separable over rows, so its Hessian is block-diagonal and
AdaHessian's Hutchinson diagonal (and every other per-element statistic) for row k depends only
on row k. A start that has converged is held where it stopped, as if its thread had ended.

Everything here works on plain numbers: a library ``E`` of shape ``(N, d)``, an acquisition
callable mapping a ``(K, d)`` tensor to ``(K,)`` values (lower is better), and a boolean mask of
the library rows that may be returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pytorch_optimizer import AdaHessian

#: Reference constants (``boshnas.py``, ``constants.py``, ``adahessian.py``).
GOBI_STARTS = 10
GOBI_LR = 0.5
GOBI_BETAS = (0.9, 0.999)
GOBI_EPS = 1e-4
GOBI_HESSIAN_POWER = 1.0
GOBI_T_MAX = 2
GOBI_MAX_ITERATIONS = 200
GOBI_TOLERANCE = 1e-5  # ``epsilon`` in constants.py
GOBI_PATIENCE = 5  # stop when the change stayed below tolerance for MORE than this many steps

Acquisition = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GobiResult:
    """What one GOBI run found, one row per start.

    Attributes:
        starts: The starting points, shape ``(K, d)``.
        optima: The optimised points (inside the library's bounding box), shape ``(K, d)``.
        start_values: Acquisition at the starts, shape ``(K,)``.
        values: Acquisition at the optima, shape ``(K,)`` (lower is better).
        iterations: Optimiser steps each start took before it converged or hit the limit.
    """

    starts: np.ndarray
    optima: np.ndarray
    start_values: np.ndarray
    values: np.ndarray
    iterations: np.ndarray


def library_bounds(library: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension ``[min, max]`` of the library: the box GOBI clamps its iterates to."""
    return library.min(axis=0), library.max(axis=0)


def sample_starts(library: np.ndarray, n_starts: int, rng: np.random.Generator) -> np.ndarray:
    """Draws GOBI starts from the library rows: without replacement while there are enough rows.

    The reference draws from the whole design space (``random.choices``), observed or not: a
    start is only where the local search begins.
    """
    if n_starts < 1:
        raise ValueError(f"n_starts must be >= 1, got {n_starts}; pass at least one start")
    n_rows = library.shape[0]
    rows = rng.choice(n_rows, size=n_starts, replace=n_starts > n_rows)
    return np.asarray(library[rows], dtype=np.float64)


def optimise_acquisition(
    acquisition: Acquisition,
    starts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    seed: int = 0,
    lr: float = GOBI_LR,
    betas: tuple[float, float] = GOBI_BETAS,
    eps: float = GOBI_EPS,
    hessian_power: float = GOBI_HESSIAN_POWER,
    t_max: int = GOBI_T_MAX,
    max_iterations: int = GOBI_MAX_ITERATIONS,
    tolerance: float = GOBI_TOLERANCE,
    patience: int = GOBI_PATIENCE,
) -> GobiResult:
    """Minimises ``acquisition`` from every start at once with AdaHessian (the reference's loop).

    Each iteration: evaluate a(x) for the whole batch, backpropagate ``Σ a`` with the graph kept
    (AdaHessian's Hutchinson estimate differentiates the gradient again), step, step the cosine
    schedule (T_max 2, as the reference), clamp to ``[lower, upper]``. Start k stops once
    ``|a_k − a_k,prev| < tolerance`` held for more than ``patience`` consecutive iterations.

    Args:
        acquisition: Differentiable map from a ``(K, d)`` float32 tensor to ``(K,)`` values; row k
            must depend on row k only (true of any per-point acquisition).
        starts: Starting points, shape ``(K, d)``.
        lower: Per-dimension lower bound, shape ``(d,)``.
        upper: Per-dimension upper bound, shape ``(d,)``.
        seed: Seeds AdaHessian's Rademacher probes (drawn from torch's global generator, which
            is forked so the caller's random state is untouched).

    Returns:
        The starts, the optima and their acquisition values.
    """
    starts = np.asarray(starts, dtype=np.float64)
    if starts.ndim != 2 or starts.shape[0] == 0:
        raise ValueError(f"starts must have shape (K, d) with K >= 1, got {starts.shape}")
    low = torch.as_tensor(np.asarray(lower), dtype=torch.float32)
    high = torch.as_tensor(np.asarray(upper), dtype=torch.float32)
    if low.shape != (starts.shape[1],) or high.shape != (starts.shape[1],):
        raise ValueError(
            f"lower/upper must have shape ({starts.shape[1]},) like a start, "
            f"got {tuple(low.shape)} and {tuple(high.shape)}"
        )
    n_starts = starts.shape[0]
    x = torch.nn.Parameter(torch.as_tensor(starts, dtype=torch.float32).clone())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        optimiser = AdaHessian(
            [x], lr=lr, betas=betas, eps=eps, hessian_power=hessian_power, foreach=False
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=t_max)
        with torch.no_grad():
            start_values = acquisition(x).detach().clone()
        previous = torch.full((n_starts,), float("inf"))
        unchanged = torch.zeros(n_starts, dtype=torch.long)
        active = torch.ones(n_starts, dtype=torch.bool)
        iterations = torch.zeros(n_starts, dtype=torch.long)
        for _ in range(max_iterations):
            held = x.detach().clone()
            values = acquisition(x)
            # autograd.grad instead of backward(create_graph=True): same graph for the
            # Hutchinson probe, without the parameter <-> grad reference cycle backward makes.
            (grad,) = torch.autograd.grad(values.sum(), x, create_graph=True)
            x.grad = grad
            optimiser.step()
            scheduler.step()
            x.grad = None
            with torch.no_grad():
                x.copy_(torch.maximum(low, torch.minimum(high, x)))
                x[~active] = held[~active]
            current = values.detach()
            iterations += active.long()
            unchanged = torch.where((current - previous).abs() < tolerance, unchanged + 1, 0)
            previous = current
            active &= unchanged <= patience
            if not bool(active.any()):
                break
        with torch.no_grad():
            final_values = acquisition(x).detach()
    return GobiResult(
        starts=starts,
        optima=x.detach().numpy().astype(np.float64),
        start_values=start_values.numpy().astype(np.float64),
        values=final_values.numpy().astype(np.float64),
        iterations=iterations.numpy(),
    )


def l1_distances(points: np.ndarray, library: np.ndarray) -> np.ndarray:
    """Mean absolute difference between every point and every library row, shape ``(K, N)``."""
    points_t = torch.as_tensor(np.asarray(points), dtype=torch.float64)
    library_t = torch.as_tensor(np.asarray(library), dtype=torch.float64)
    return (torch.cdist(points_t, library_t, p=1) / library_t.shape[1]).numpy()


def nearest_free_rows(
    points: np.ndarray, library: np.ndarray, free: np.ndarray, taken: Sequence[int] = ()
) -> list[int]:
    """Maps each point, in order, to the nearest (L1) library row that is free and not yet taken.

    A point whose nearest row went to an earlier point gets the next nearest free row, so the
    answer has no repeats. Points beyond the number of free rows get nothing: the list is
    ``min(len(points), free rows − taken)`` long.

    Args:
        points: Points in embedding space, shape ``(K, d)``.
        library: The library, shape ``(N, d)``.
        free: Boolean mask of shape ``(N,)``: rows that may be returned.
        taken: Rows already chosen (by an earlier part of the same batch).
    """
    available = np.asarray(free, dtype=bool).copy()
    available[list(taken)] = False
    distances = l1_distances(points, library)
    chosen: list[int] = []
    for row_distances in distances:
        if not available.any():
            break
        row = int(np.argmin(np.where(available, row_distances, np.inf)))
        chosen.append(row)
        available[row] = False
    return chosen


def gobi(
    acquisition: Acquisition,
    library: np.ndarray,
    free: np.ndarray,
    rng: np.random.Generator,
    n_starts: int = GOBI_STARTS,
    **options: Any,
) -> tuple[list[int], GobiResult]:
    """Runs GOBI from ``n_starts`` library starts and snaps the optima to free library rows.

    Optima are snapped best acquisition first, so when two optima share a nearest row the better
    one keeps it and the other moves to its next nearest free row.

    Args:
        acquisition: See ``optimise_acquisition``.
        library: Library embeddings ``(N, d)``; its bounding box bounds the search.
        free: Boolean mask ``(N,)`` of rows that may be proposed (not observed, not in flight).
        rng: Draws the starts and seeds the Hessian probes.
        n_starts: Number of starts K.
        **options: Keyword arguments of ``optimise_acquisition`` (``max_iterations``, ...).

    Returns:
        Distinct free rows, best optimum first (fewer than ``n_starts`` only when fewer rows are
        free), and the raw optimisation result.
    """
    library = np.asarray(library, dtype=np.float64)
    starts = sample_starts(library, n_starts, rng)
    lower, upper = library_bounds(library)
    result = optimise_acquisition(
        acquisition, starts, lower, upper, seed=int(rng.integers(2**31 - 1)), **options
    )
    order = np.argsort(result.values, kind="stable")
    return nearest_free_rows(result.optima[order], library, free), result
