"""Regularised evolution (Real, Aggarwal, Huang and Le, AAAI 2019), as a search loop.

Aging evolution: the population is the ``population`` most recently evaluated architectures
(the oldest leaves as a new one arrives, whatever its score); each child is a one-change
mutation (:class:`~archsearch.spaces.MutableSpace` ``neighbours``) of the best of ``sample``
members drawn at random from the population. The first ``population`` candidates are random.

Constants. The paper's search used P = 100 and S = 25 (S = P/4) for 20,000 evaluations of
image classifiers. A NAS table of a few hundred rows is searched in about 100 evaluations, where
a random population of 100 would be the whole search, so the population is scaled down with
the paper's S ~ P/4. P = 10, S = 3 was chosen on the FlexiBERT-small SST-2 table (the
project's tuning table), one evaluation at a time, seeds 100-139, among P = 10, 20, 30 (S = 3,
5, 8): median evaluations to the top 1% 28.0, 30.5 and 37.0 (P = 30: the first 32 seeds;
benchmarks/nas_table.py, 100 evaluations; the machine was shared).

Several workers: the population is the completed trials only; each suggestion of a call, and
every trial in flight, is an architecture no later suggestion repeats, so idle workers get
different children of (possibly) the same parents. Unlike the paper, a mutation never yields a
known architecture: the child is a random *unknown* neighbour of the parent; a parent whose
neighbours are all known is replaced by the next tournament's winner (a few tries), then by a
random architecture.
"""

from __future__ import annotations

from typing import Any

from archsearch.search._base import LOOPS, LoopSnapshot, Suggestion
from archsearch.search._mutation import (
    KIND_ATTR,
    MutationLoop,
    arch_key,
    positive_int_option,
    reject_unknown_options,
)
from archsearch.spaces import SpecError

#: Defaults (see the module docstring).
POPULATION = 10
SAMPLE = 3
#: Tournaments tried for a parent with an unknown neighbour before a random child.
TOURNAMENTS = 10


@LOOPS.register("evolution")
class RegularisedEvolutionLoop(MutationLoop):
    """Regularised (aging) evolution (see the module docstring).

    Options:
        population (int, default 10): P, the most recent evaluations that form the
            population (and the random candidates that start it).
        sample (int, default 3): S, the tournament size (at most P).
    """

    name = "evolution"

    def __init__(
        self, seed: int | None, n_objectives: int, options: dict[str, Any] | None = None
    ) -> None:
        super().__init__(seed, n_objectives)
        opts = dict(options or {})
        reject_unknown_options(self.name, opts, {"population", "sample"})
        self.population = positive_int_option(opts, "population", POPULATION)
        self.sample = positive_int_option(opts, "sample", SAMPLE)
        if self.sample > self.population:
            raise SpecError(
                "loop_options.sample",
                f"{self.sample} is more than the population ({self.population})",
                "choose sample <= population",
            )

    def suggest(self, snapshot: LoopSnapshot, count: int = 1) -> list[Suggestion]:
        space, history = self.history(snapshot)
        rng = self.rng_for(snapshot)
        taken = set(history.known)
        population = history.observed[-self.population :]  # aging: the most recent P results
        started = len(history.trials)
        out: list[Suggestion] = []
        for _ in range(count):
            child, kind = None, "random"
            if started + len(out) >= self.population and population:
                for _ in range(TOURNAMENTS):
                    contenders = rng.sample(population, min(self.sample, len(population)))
                    parent = max(contenders, key=lambda o: o.value)
                    free = [
                        n for n in space.neighbours(parent.architecture) if arch_key(n) not in taken
                    ]
                    if free:
                        child, kind = rng.choice(free), "mutation"
                        break
            if child is None:
                child = self.fresh(snapshot.space, rng, taken)
            taken.add(arch_key(child))
            out.append(Suggestion(architecture=child, attrs={KIND_ATTR: kind}))
        return out
