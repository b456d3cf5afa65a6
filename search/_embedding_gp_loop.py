"""The embedding-GP loop: a BoTorch GP over the library loops' embeddings (a baseline)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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
    maximises analytic LogEI, one row per fit),
    ``warm_start`` (default false: each fit starts from BoTorch's initial hyperparameters;
    true: from the previous fit's, which saves about 40% of a fit on large libraries).
    """

    OWN = frozenset({"n_init", "mc_samples", "max_batch_size", "pending", "warm_start"})
    DEFAULT_FEATURES = "embedding"  # the baseline of the issue: a GP on the embeddings

    def __init__(
        self, seed: int | None, n_objectives: int, options: dict[str, Any] | None = None
    ) -> None:
        super().__init__("embedding-gp", seed, n_objectives, options, self.OWN)
        self.make_proposer(["maximize"] * n_objectives)

    def make_proposer(self, directions: Sequence[str]) -> LibraryProposer:
        from archsearch.surrogates import EmbeddingGPProposer

        try:
            return EmbeddingGPProposer(directions, seed=self.seed, **self.own_options)
        except (TypeError, ValueError) as e:
            raise SpecError("loop_options", f"not accepted by the embedding-gp loop: {e}") from e
