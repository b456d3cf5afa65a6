"""The embedding-GP loop, a BoTorch GP over the library loops' embeddings (a baseline), and
``numeric-gp``, the same GP on the rows' parameters with numbers kept as numbers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from archsearch.search._base import LOOPS
from archsearch.search._library_loops import LibraryLoop
from archsearch.spaces import SpecError

if TYPE_CHECKING:  # surrogates import torch: loaded only when the loop is built
    from archsearch.surrogates import LibraryProposer


@LOOPS.register("embedding-gp")
class EmbeddingGPLoop(LibraryLoop):
    """A BoTorch GP (``SingleTaskGP``, qLogEI over the discrete library) on the embeddings.

    Options (besides :class:`LibraryLoop`'s), passed to ``surrogates.EmbeddingGPProposer``:
    ``n_init`` (random rows of the initial design, default 10), ``mc_samples``,
    ``max_batch_size``, ``pending`` (``ignore``, default: rows in flight are only kept out;
    ``believer``: a kriging believer, they join the GP at its predicted mean and each pick
    maximises analytic LogEI, one row per fit; ``joint``: they are qLogEI's ``X_pending``, a
    pick scored by the improvement of itself and the rows in flight together, one fit per
    suggestion, of whose batch only the first row is used: ``batch_size: 1`` computes no more),
    ``warm_start`` (default false: each fit starts from BoTorch's initial hyperparameters;
    true: from the previous fit's, which saves about 40% of a fit on large libraries),
    ``outcome`` (``standardize``, default; ``power``: the standardised performance then
    Yeo-Johnson transformed, as HEBO warps its outputs),
    ``input_warp`` (default false; true: a Kumaraswamy warp of each scaled input, fitted with
    the kernel), ``fit_iterations`` (default none: each hyperparameter fit runs to convergence;
    a number: at most that many L-BFGS-B iterations, which bounds the warp's fit cost),
    ``init`` (the initial design: ``random``, default, or ``maximin``: each row the farthest
    from those already observed or running).
    """

    OWN = frozenset(
        {
            "n_init",
            "mc_samples",
            "max_batch_size",
            "pending",
            "warm_start",
            "outcome",
            "input_warp",
            "fit_iterations",
            "init",
        }
    )
    DEFAULT_FEATURES = "embedding"  # the baseline of the issue: a GP on the embeddings
    LOOP_NAME = "embedding-gp"
    #: Options this loop sets when the study's do not.
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {}

    def __init__(
        self, seed: int | None, n_objectives: int, options: dict[str, Any] | None = None
    ) -> None:
        opts = {**self.DEFAULT_OPTIONS, **(options or {})}
        super().__init__(self.LOOP_NAME, seed, n_objectives, opts, self.OWN)
        self.make_proposer(["maximize"] * n_objectives)

    def make_proposer(self, directions: Sequence[str]) -> LibraryProposer:
        from archsearch.search._optuna_loops import check_option_types
        from archsearch.surrogates import EmbeddingGPProposer

        check_option_types(EmbeddingGPProposer, self.name, self.own_options, skip=("seed",))
        try:
            return EmbeddingGPProposer(directions, seed=self.seed, **self.own_options)
        except (TypeError, ValueError) as e:
            raise SpecError("loop_options", f"not accepted by the {self.name} loop: {e}") from e


@LOOPS.register("numeric-gp")
class NumericGPLoop(EmbeddingGPLoop):
    """The embedding-GP loop with the defaults the leave-one-out protocol chose
    (``benchmarks/loo_tables.py``): ``features: numeric`` (the rows' parameters, numbers as
    scaled numbers), ``warm_start: true``, ``outcome: power`` (the standardised scores
    Yeo-Johnson warped before each fit) and ``input_warp: true`` (a Kumaraswamy warp of each
    input, candidate ``embedding-gp@warp``, chosen in every fold), with each fit capped at 100
    L-BFGS-B iterations (``fit_iterations: 100``, candidate ``embedding-gp@warp-bounded``,
    which measured the same as the uncapped warp on the tuning seeds at a fraction of its fit
    cost: run to convergence, a warm fit at 200 observations took 9-34 s on one core). Rows
    in flight are qLogEI's ``X_pending`` (``pending: joint``, candidate ``embedding-gp@joint8``,
    chosen in every fold on 2026-12-05 over the same GP with rows in flight only kept out;
    one at a time the two are the same search). The batch stays 8 rows per fit, as measured;
    ``batch_size: 1`` is the same search in distribution at a fraction of the cost of a
    suggestion with workers running. The initial design is greedy maximin (``init: maximin``,
    candidate ``embedding-gp@maximin8``, chosen on 2026-12-06 by its geometric mean over all
    four tables' tuning seeds 0-19, the rule fixed before seeds 10-19 ran; ``init: random`` is
    the design before). Any of them can still be set in the loop options."""

    DEFAULT_FEATURES = "numeric"
    LOOP_NAME = "numeric-gp"
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "warm_start": True,
        "outcome": "power",
        "input_warp": True,
        "fit_iterations": 100,
        "pending": "joint",
        "init": "maximin",
    }
