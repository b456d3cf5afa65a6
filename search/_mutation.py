"""What the mutation loops (regularised evolution, local search) share.

Both loops keep no state of their own: each ``suggest`` rebuilds what it needs from the
snapshot's trials (the architectures they hold, the scores of the completed ones, and the
attributes the loop stored with its own suggestions), so a restarted server continues a study
where it was. :class:`MutationHistory` is that view; :class:`MutationLoop` is the common base:
single objective, a :class:`~archsearch.spaces.MutableSpace`, never a known architecture
(``avoids_known``), and a fresh random architecture when the loop needs one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Mapping
from typing import Any

import optuna

from archsearch.search._base import LoopSnapshot, SearchLoop, TrialView
from archsearch.spaces import DesignSpace, EnumerableSpace, MutableSpace, SpecError

#: Trial system attribute: why a mutation loop proposed the trial (``random``, ``mutation``,
#: ``start``, ``neighbour``), the same key the library loops use.
KIND_ATTR = "archsearch:proposal_kind"
#: Random draws tried for an architecture no trial holds before giving up (spaces without an
#: enumeration).
SAMPLE_ATTEMPTS = 2000


def arch_key(architecture: Mapping[str, Any]) -> str:
    """A canonical string for an architecture (sorted-key JSON)."""
    return json.dumps(dict(architecture), sort_keys=True, separators=(",", ":"))


@dataclasses.dataclass(frozen=True)
class Observed:
    """A completed trial: its architecture and score (oriented: higher is better)."""

    architecture: dict[str, Any]
    key: str
    value: float
    trial: TrialView


@dataclasses.dataclass
class MutationHistory:
    """The snapshot as a mutation loop sees it.

    Attributes:
        known: Key of every architecture a trial holds (completed, in flight, failed).
        active: Keys of the architectures in flight.
        values: Key -> best score (oriented) of the completed ones; a failed or pruned
            architecture that never completed scores -inf (it was tried).
        observed: Completed trials in the order their results arrived (first result per
            architecture).
        trials: ``(trial, architecture, key)`` of every trial with an architecture, in storage
            order.
    """

    known: set[str]
    active: set[str]
    values: dict[str, float]
    observed: list[Observed]
    trials: list[tuple[TrialView, dict[str, Any], str]]

    @classmethod
    def of(
        cls, snapshot: LoopSnapshot, cache: dict[str, tuple[dict[str, Any], str] | None]
    ) -> MutationHistory:
        """The history of ``snapshot``; ``cache`` maps a trial's parameters to its
        architecture and key (a pure function of the space: rebuilding each trial's
        architecture on every call would cost more than the loop itself)."""
        sign = 1.0 if snapshot.directions[0] == "maximize" else -1.0
        space = snapshot.space
        h = cls(set(), set(), {}, [], [])
        done = []
        for t in snapshot.trials:
            found = _cached_architecture(t, space, cache)
            if found is None:
                continue
            arch, key = found
            h.known.add(key)
            h.trials.append((t, arch, key))
            if t.active:
                h.active.add(key)
            elif t.state == "COMPLETE" and t.values and math.isfinite(t.values[0]):
                done.append((t, arch, key, sign * float(t.values[0])))
            else:
                h.values.setdefault(key, -math.inf)
        done.sort(key=lambda d: (d[0].completed_at is None, d[0].completed_at or 0, d[0].number))
        for t, arch, key, value in done:
            if h.values.get(key, -math.inf) == -math.inf:
                h.observed.append(Observed(arch, key, value, t))
            h.values[key] = max(value, h.values.get(key, -math.inf))
        return h


def _cached_architecture(
    t: TrialView, space: DesignSpace, cache: dict[str, tuple[dict[str, Any], str] | None]
) -> tuple[dict[str, Any], str] | None:
    if t.architecture is not None:
        arch = _architecture_of(t, space)
        return None if arch is None else (arch, arch_key(arch))
    params = arch_key(t.params)
    if params not in cache:
        arch = _architecture_of(t, space)
        cache[params] = None if arch is None else (arch, arch_key(arch))
    return cache[params]


def _architecture_of(t: TrialView, space: DesignSpace) -> dict[str, Any] | None:
    try:
        if t.architecture is not None:
            return space.validate(dict(t.architecture))
        if t.params:
            return space.from_params(t.params)
    except (SpecError, ValueError, KeyError):
        pass
    return None


class MutationLoop(SearchLoop):
    """The base of the loops that mutate architectures (see the module docstring).

    Subclasses set ``name`` and implement :meth:`suggest` with :meth:`history`,
    :meth:`rng_for` and :meth:`fresh`.
    """

    avoids_known = True
    needs_mutable_space = True

    def __init__(self, seed: int | None, n_objectives: int) -> None:
        if n_objectives != 1:
            raise SpecError(
                "loop",
                f"the {self.name} loop optimises one objective, not {n_objectives}",
                "use one objective, or a loop for several (boshnas, nsga2, tpe)",
            )
        self.seed = 0 if seed is None else int(seed)
        self._sampler = optuna.samplers.RandomSampler(seed=self.seed)
        self._members: tuple[DesignSpace, list[tuple[str, dict[str, Any]]]] | None = None
        #: Per space: a trial's parameters -> its architecture and key (see ``history``).
        self._arch_cache: tuple[DesignSpace, dict[str, Any]] | None = None

    @property
    def sampler(self) -> optuna.samplers.BaseSampler:
        return self._sampler

    def history(self, snapshot: LoopSnapshot) -> tuple[MutableSpace, MutationHistory]:
        """The snapshot's space (checked to be mutable) and its history."""
        space = snapshot.space
        if not isinstance(space, MutableSpace):
            raise SpecError(
                "loop",
                f"the {self.name} loop mutates architectures; the {space.name} space cannot",
                "use the bert, flexibert or flexibert-small space, or another loop",
            )
        if self._arch_cache is None or self._arch_cache[0] is not space:
            self._arch_cache = (space, {})
        return space, MutationHistory.of(snapshot, self._arch_cache[1])

    def rng_for(self, snapshot: LoopSnapshot) -> random.Random:
        """The random choices of one call: a function of the seed and the number of trials,
        so a restarted loop fed the same history suggests the same."""
        return random.Random(f"{self.name}:{self.seed}:{len(snapshot.trials)}")

    def fresh(self, space: DesignSpace, rng: random.Random, taken: set[str]) -> dict[str, Any]:
        """A random architecture whose key is not in ``taken``: uniform over the space's
        members when it lists them (a table's rows), else its own ``sample``.

        Raises:
            SpecError: No such architecture is left (or none was found by sampling).
        """
        if self._members is None or self._members[0] is not space:
            listed = list(space.enumerate()) if isinstance(space, EnumerableSpace) else []
            self._members = (space, [(arch_key(m), m) for m in listed])
        members = self._members[1]
        if members:
            free = [m for k, m in members if k not in taken]
            if free:
                return dict(rng.choice(free))
        else:
            for _ in range(SAMPLE_ATTEMPTS):
                arch = space.sample(rng)
                if arch_key(arch) not in taken:
                    return arch
        raise SpecError(
            "n_trials",
            f"the {self.name} loop found no architecture of the {space.name} space that no "
            "trial holds",
            "lower n_trials, or widen the space",
        )


def positive_int_option(options: Mapping[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpecError(f"loop_options.{key}", f"must be a positive int, got {value!r}")
    return value


def reject_unknown_options(name: str, options: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise SpecError(
            f"loop_options.{unknown[0]}",
            f"unknown option of the {name} loop",
            f"known: {', '.join(sorted(known)) or 'none'}",
        )
