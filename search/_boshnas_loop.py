"""The BOSHNAS loop: FlexiBERT's search over a library of embedded candidates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from archsearch.search._base import LOOPS
from archsearch.search._library_loops import LibraryLoop
from archsearch.spaces import SpecError

if TYPE_CHECKING:  # surrogates import torch: loaded only when the loop is built
    from archsearch.surrogates import LibraryProposer


@LOOPS.register("boshnas")
class BoshnasLoop(LibraryLoop):
    """BOSHNAS (Tuli et al.): heteroscedastic neural surrogate + GOBI over the library.

    Options (besides :class:`LibraryLoop`'s), passed to ``surrogates.BoshnasProposer``:
    ``n_init`` (random rows of the initial design, in flight ones included, default 5; the
    paper: 10),
    ``n_starts`` (GOBI starts, default 10), ``performance_bound`` (the best achievable score,
    e.g. 1.0; default derived from the data), ``surrogate_options`` and ``gobi_options`` (dicts),
    ``acquisition_search`` (``scan``, default: rank every free row; ``gobi``: the paper's
    gradient search), ``pending`` (``ignore``, default, the paper's: rows in flight are only
    kept out; ``believer``: each fit takes them with their predicted score, a kriging believer),
    ``init`` (the initial design: ``random``, default, or ``maximin``: each row the farthest
    from those already observed or running).

    The paper's setting: ``{"features": "embedding", "acquisition_search": "gobi", "n_init":
    10}``. ``{"features": "auto", "pending": "believer"}`` adapts to the table: the surrogate's
    features chosen by cross-validated rank correlation as results arrive, and several
    workers' candidates kept apart.
    """

    OWN = frozenset(
        {
            "n_init",
            "n_starts",
            "performance_bound",
            "surrogate_options",
            "gobi_options",
            "acquisition_search",
            "pending",
            "init",
        }
    )

    def __init__(
        self, seed: int | None, n_objectives: int, options: dict[str, Any] | None = None
    ) -> None:
        super().__init__("boshnas", seed, n_objectives, options, self.OWN)
        self.make_proposer(["maximize"] * n_objectives)  # validates the options at launch

    def make_proposer(self, directions: Sequence[str]) -> LibraryProposer:
        from archsearch.search._optuna_loops import check_option_types
        from archsearch.surrogates import BoshnasProposer

        check_option_types(BoshnasProposer, "boshnas", self.own_options, skip=("seed",))
        try:
            return BoshnasProposer(directions, seed=self.seed, **self.own_options)
        except (TypeError, ValueError) as e:
            raise SpecError("loop_options", f"not accepted by the boshnas loop: {e}") from e
