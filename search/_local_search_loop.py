"""Local search (White, Nolen, Ding, Savani and Zela, "Exploring the Loss Landscape in Neural
Architecture Search", UAI 2021), as a search loop.

The paper's Algorithm 1: start from a random architecture, evaluate *all* its neighbours (the
architectures one change away, :class:`~archsearch.spaces.MutableSpace` ``neighbours``), move
to the best of them if it beats the current one, and repeat; at a local optimum (no neighbour
is better) restart from a new random architecture. The paper shows this simple method is
state of the art on tabular NAS benchmarks.

The loop keeps no state: each suggestion of a *run* carries the run's number
(``RUN_ATTR``), and a run's start has the kind ``start``. A run's walk is replayed from its
start on every call: the current architecture moves to the best neighbour once every neighbour
has a result (from any run; a failed one counts as the worst), so the walk depends only on the
scores, and a restarted server finds it where it was.

Several workers: a neighbourhood is evaluated in full before the walk moves, so its
neighbours can all be in flight at once (even while the architecture they are neighbours of
is still being evaluated); a worker that finds every run waiting for results starts a new run
from a random architecture, so no worker idles. The oldest run that has an unevaluated
neighbour is extended first.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from archsearch.search._base import LOOPS, LoopSnapshot, Suggestion
from archsearch.search._mutation import (
    KIND_ATTR,
    MutationHistory,
    MutationLoop,
    arch_key,
    reject_unknown_options,
)
from archsearch.spaces import MutableSpace

#: Trial system attribute: the local-search run (an int) a suggestion belongs to.
RUN_ATTR = "archsearch:local_search_run"
START = "start"
NEIGHBOUR = "neighbour"


@dataclasses.dataclass
class Walk:
    """Where one run stands: ``unknown`` neighbours of its current architecture still to
    suggest, or ``waiting`` for results, or ``ended`` at a local optimum."""

    run: int
    current: dict[str, Any]
    unknown: list[dict[str, Any]]
    ended: bool


@LOOPS.register("local-search")
class LocalSearchLoop(MutationLoop):
    """Local search with random restarts (see the module docstring). No options."""

    name = "local-search"

    def __init__(
        self, seed: int | None, n_objectives: int, options: dict[str, Any] | None = None
    ) -> None:
        super().__init__(seed, n_objectives)
        reject_unknown_options(self.name, dict(options or {}), set())

    def suggest(self, snapshot: LoopSnapshot, count: int = 1) -> list[Suggestion]:
        space, history = self.history(snapshot)
        rng = self.rng_for(snapshot)
        starts: dict[int, dict[str, Any]] = {}
        for t, arch, _ in history.trials:
            run = t.attrs.get(RUN_ATTR)
            if t.attrs.get(KIND_ATTR) == START and isinstance(run, int):
                starts.setdefault(run, arch)
        taken = set(history.known)
        out: list[Suggestion] = []
        for _ in range(count):
            walks = [self._walk(space, history, taken, r, a) for r, a in sorted(starts.items())]
            going = [w for w in walks if w.unknown]
            if going:
                walk = going[0]
                arch, kind, run = walk.unknown[0], NEIGHBOUR, walk.run
            else:
                run = max(starts, default=-1) + 1
                arch, kind = self.fresh(snapshot.space, rng, taken), START
                starts[run] = arch
            taken.add(arch_key(arch))
            out.append(Suggestion(architecture=arch, attrs={KIND_ATTR: kind, RUN_ATTR: run}))
        return out

    def _walk(
        self,
        space: MutableSpace,
        history: MutationHistory,
        taken: set[str],
        run: int,
        start: dict[str, Any],
    ) -> Walk:
        """Replays run ``run`` from ``start`` (see the module docstring)."""
        current = start
        while True:
            neighbours = space.neighbours(current)
            unknown = [n for n in neighbours if arch_key(n) not in taken]
            if unknown:
                # A fixed order per architecture, in which its neighbours are tried.
                random.Random(f"{self.seed}:{arch_key(current)}").shuffle(unknown)
                return Walk(run, current, unknown, False)
            if any(arch_key(a) not in history.values for a in [*neighbours, current]):
                return Walk(run, current, [], False)  # results still to come
            best = max(neighbours, key=lambda n: history.values[arch_key(n)])
            if history.values[arch_key(best)] <= history.values[arch_key(current)]:
                return Walk(run, current, [], True)  # a local optimum: the run ends
            current = best  # strictly better each step: a walk cannot cycle
