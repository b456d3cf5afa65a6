"""Replaying a search loop on a table of measured architectures, with the server's own code.

Evaluating a candidate means reading its row's score. Each search drives a registered loop
(``archsearch.search.LOOPS``, by name) exactly as the server does: the server's
:func:`~archsearch.server._suggest.ask_candidate` builds the loop's snapshot, calls
``loop.suggest`` and creates the trial on an in-memory Optuna study (opened with the loop's
sampler, the table's direction), and ``study.tell`` reports the score.

Workers: ``parallel`` candidates are in flight at once. Asynchronous (the default), the oldest
is told and one new candidate asked at a time, as workers that finish one at a time do; in
rounds (``asynchronous=False``), ``parallel`` candidates are asked before any is told.

An *evaluation* is a distinct row scored. A suggestion that maps to a row already evaluated
(or in flight) is, by default, no new evaluation: the service answers a repeat with the
earlier result at no cost (``duplicate_of``); the loop is still told its score, as in the
service. With ``count_repeats`` every suggestion costs an evaluation (a user's script that
trains whatever its sampler proposes).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import optuna

from archsearch.search import LOOPS, NoSuggestion, make_loop
from archsearch.server._loop_guard import LoopFailed, loop_call
from archsearch.server._replay_stats import (
    Run,
    Targets,
    random_search_median,
    summarise,
    top_targets,
)
from archsearch.server._suggest import AskedCandidate, ask_candidate
from archsearch.spaces import DesignSpace, ReplayTable, SpecError, UnknownName

#: A search stops after this many suggestions per evaluation (a sampler stuck on known rows).
MAX_ASKS_PER_EVAL = 20


class ReplayError(Exception):
    """A loop cannot search the table (the message names the loop, the table and the fix)."""


class ReplayLoopFailed(ReplayError):
    """A loop failed as it searched (it raised, or proposed what cannot be a trial): not the
    user's input (``archsearch replay`` exits 1, not 2)."""


def loop_base(name: str) -> str:
    """The registered loop of ``name`` (``boshnas@paper`` is ``boshnas`` with the options
    keyed ``boshnas@paper``)."""
    return name.split("@")[0]


def check_loops(names: list[str]) -> None:
    """Raises ReplayError naming the registered loops when one of ``names`` is unknown."""
    for name in names:
        try:
            LOOPS[loop_base(name)]
        except UnknownName as e:  # the registered ones, or why an installed plugin does not load
            raise ReplayError(f"{e.problem} ({e.fix})".replace("(one of ", "(registered: ")) from e


def replay_search(
    table: ReplayTable,
    loop_name: str,
    seed: int,
    evals: int,
    loop_options: Mapping[str, Any] | None = None,
    parallel: int = 1,
    asynchronous: bool = True,
    count_repeats: bool = False,
    space: DesignSpace | None = None,
    stop_at: float | None = None,
) -> Run:
    """One seeded search of ``table`` (see the module docstring).

    Args:
        loop_name: A registered loop, or ``name@label`` (options keyed by the label).
        loop_options: Loop name (or ``name@label``) -> its options.
        space: Another parameterisation of the table's rows (default: ``table.space``).
        stop_at: Stop as soon as the best score reaches this one (for a caller that needs
            only the evaluations to a target: the searches up to it are the same, since a
            loop never sees what comes after).

    Raises:
        ReplayError: The loop cannot be built with its options, or cannot search this
            table's space.
    """
    space = table.space if space is None else space
    options = dict((loop_options or {}).get(loop_name) or {})
    try:
        loop = loop_call(
            loop_name, "its constructor", lambda: make_loop(loop_base(loop_name), seed, 1, options)
        )
    except SpecError as e:
        failed = e.__cause__ is not None and not isinstance(e.__cause__, SpecError)
        raise (ReplayLoopFailed if failed else ReplayError)(f"loop {loop_name}: {e}") from e
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            storage=optuna.storages.InMemoryStorage(),
            sampler=loop.sampler,
            direction=table.direction,
        )
    run = Run(loop_name, seed, direction=table.direction)
    evals = min(evals, len(table.architectures))
    better = max if table.direction == "maximize" else min
    seen: set[str] = set()
    best = -math.inf if table.direction == "maximize" else math.inf
    in_flight: collections.deque[AskedCandidate] = collections.deque()
    t0 = time.perf_counter()
    with _quiet():
        finished = False
        while not finished and len(run.best) < evals and run.asks < MAX_ASKS_PER_EVAL * evals:
            while len(in_flight) < min(parallel, evals - len(run.best)):
                try:
                    asked = _ask(loop, study, space, loop_name, table, run)
                except NoSuggestion as e:  # it waits for those in flight, or is done
                    if not in_flight and not e.finished:  # as a study's loop, it failed
                        raise ReplayLoopFailed(
                            f"loop {loop_name} cannot search {table.source}: it has nothing "
                            f"to propose ({e.reason}) and no candidate in flight to wait for "
                            "(raise NoSuggestion(reason, finished=True) when it is done)"
                        ) from e
                    finished = not in_flight
                    break
                in_flight.append(asked)
            if not in_flight:
                break
            for _ in range(1 if asynchronous else len(in_flight)):
                asked = in_flight.popleft()
                score = table.score(asked.architecture)
                study.tell(asked.number, score)
                key = table.key(asked.architecture)
                if key in seen and not count_repeats:
                    continue  # the service reuses the earlier result: no evaluation
                seen.add(key)
                best = better(best, score)
                run.best.append(best)
                run.evaluated.append(key)
                if stop_at is not None and run.reached(best, stop_at):
                    break
            if stop_at is not None and run.best and run.reached(run.best[-1], stop_at):
                break
    run.seconds = time.perf_counter() - t0
    run.best, run.evaluated = run.best[:evals], run.evaluated[:evals]
    return run


def _ask(
    loop: Any,
    study: optuna.Study,
    space: DesignSpace,
    loop_name: str,
    table: ReplayTable,
    run: Run,
) -> AskedCandidate:
    """The loop's next candidate.

    Raises:
        NoSuggestion: it has none now, or none more (``finished``).
        ReplayError, ReplayLoopFailed: the user's choice cannot work (2), the loop failed (1).
    """
    run.asks += 1
    try:
        asked = ask_candidate(loop, study, space)
    except LoopFailed as e:  # a spec error the loop raised is the user's choice (2: a loop
        # that cannot search this table); its mistakes (a candidate outside the space, a bad
        # recipe) and anything else are the loop's (1)
        users = isinstance(e.__cause__, SpecError) and not e.mistake
        kind = ReplayError if users else ReplayLoopFailed
        raise kind(f"loop {loop_name} cannot search {table.source}: {e.detail}") from e
    # The stored candidate, as the server's pool keeps it: loops read its architecture back
    # (``TrialView.architecture``).
    candidate = {
        "space": space.name,
        "architecture": asked.architecture,
        "recipe": dict(asked.suggestion.recipe),
        "data": dict(asked.suggestion.data),
        "kind": asked.suggestion.kind,
    }
    study._storage.set_trial_user_attr(asked.trial_id, "candidate", candidate)
    try:
        table.score(asked.architecture)
    except KeyError as e:
        raise ReplayError(
            f"loop {loop_name} proposed {space.describe(asked.architecture)}, which is no row "
            f"of {table.source}"
        ) from e
    return asked


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Optuna's per-trial logging and experimental warnings would drown the report."""
    level = optuna.logging.get_verbosity()
    ours = logging.getLogger("archsearch")
    our_level = ours.level
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ours.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)
        ours.setLevel(our_level)


def replay_seeds(
    table: ReplayTable,
    loop_name: str,
    seeds: range,
    evals: int,
    jobs: int = 1,
    **kwargs: Any,
) -> Iterator[Run]:
    """The searches of ``loop_name`` for each seed, in order; ``jobs`` > 1 runs them in
    separate processes (each gets a copy of the table)."""
    if jobs <= 1:
        for seed in seeds:
            yield replay_search(table, loop_name, seed, evals, **kwargs)
        return
    with ProcessPoolExecutor(jobs) as pool:
        futures = [
            pool.submit(replay_search, table, loop_name, seed, evals, **kwargs) for seed in seeds
        ]
        for f in futures:
            yield f.result()


@dataclasses.dataclass
class ReplayReport:
    """Every loop's searches of one table, summarised (what ``archsearch replay`` prints).

    Attributes:
        targets: The top k% of the table (ties at the threshold counted).
        top: k, in percent.
        runs: Loop name -> its searches.
        summary: Loop name -> :func:`~archsearch.server._replay_stats.summarise`'s dict.
        exact_random: Random search's exact median evaluations to a target.
        evals: The evaluation budget of each search.
        checkpoints: Evaluations at which regret is reported.
    """

    targets: Targets
    top: float
    runs: dict[str, list[Run]]
    summary: dict[str, dict[str, Any]]
    exact_random: int
    evals: int
    checkpoints: list[int]

    def add(self, name: str, runs: list[Run]) -> None:
        """Adds (or replaces) a loop's searches and their summary."""
        self.runs[name] = runs
        self.summary[name] = summarise(runs, self.targets, self.evals, self.checkpoints)

    def _evals(self, count: float, digits: int = 1) -> str:
        """A count of evaluations; one past the budget (a median not reached) as "> N"."""
        return f"> {self.evals}" if count > self.evals else f"{count:.{digits}f}"

    def notes(self) -> list[str]:
        """What makes the table weak evidence: too few rows for its top-k% target, every
        score tied (any pick is "the best"), medians past the evaluation budget."""
        tg, out = self.targets, []
        if tg.count >= tg.rows:
            out.append(
                f"note: all {tg.rows} rows reach the target (the scores are tied): every loop "
                "finds it at once; this table cannot tell the loops apart"
            )
        elif tg.rows < 100:
            out.append(
                f"note: {tg.rows} rows: the top {self.top:g}% is the best {tg.k}, so a median "
                "of a few evaluations says little; replay a table of more measured candidates"
            )
        for name, runs in self.runs.items():
            short = sorted(len(r.best) for r in runs if len(r.best) < self.evals)
            if short:
                ended = f"{short[0]}" if short[0] == short[-1] else f"{short[0]}-{short[-1]}"
                out.append(
                    f"note: {name}: {len(short)} of {len(runs)} searches ended before --evals "
                    f"{self.evals} (the loop had nothing more to propose after {ended} "
                    "evaluations): their regret is at their end, and a target they did not "
                    "reach counts as not reached within the budget"
                )
        medians = [s["median_evals"] for s in self.summary.values()] + [self.exact_random]
        if any(m > self.evals for m in medians):
            out.append(
                f"note: '> {self.evals}': not reached in half the searches within --evals "
                f"{self.evals} (pass a larger --evals)"
            )
        return out

    def markdown(self) -> str:
        """The results table: one row per loop, then random search's exact median."""
        cps = self.checkpoints
        top = f"{self.top:g}%"
        header = (
            f"| loop | seeds | median evals to top {top} [90% interval] | reached | "
            + " | ".join(f"regret@{c}" for c in cps)
            + " | seconds/search |\n|---|---|---|---|"
            + "---|" * len(cps)
            + "---|\n"
        )
        rows = []
        for name, s in self.summary.items():
            rows.append(
                f"| {name} | {s['n']} | {self._evals(s['median_evals'])} "
                f"[{self._evals(s['interval'][0])}, {self._evals(s['interval'][1])}] | "
                f"{s['reached']}/{s['n']} | "
                + " | ".join(f"{s['regret'][c]:.4f}" for c in cps)
                + f" | {s['seconds']:.1f} |"
            )
        return (
            header
            + "\n".join(rows)
            + "\n"
            + "| random (exact: uniform without replacement) | - | "
            + f"{self._evals(self.exact_random, 0)} | | "
            + " | ".join("" for _ in cps)
            + " | |\n"
        )


def run_replay(
    table: ReplayTable,
    loops: list[str],
    seeds: range,
    evals: int,
    top: float = 1.0,
    seeds_for: Mapping[str, int] | None = None,
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
    search: Callable[[str, int], Run] | None = None,
    **kwargs: Any,
) -> ReplayReport:
    """Runs every loop of ``loops`` for ``seeds`` (``seeds_for``: another count for some
    loops) on ``table`` and summarises them; ``kwargs`` go to :func:`replay_search`.
    ``search(loop, seed)``, when given, runs each search instead (one at a time): a replay
    through a service (``_service_replay``).

    Raises:
        ReplayError: An unknown loop (the registered ones named), or one that cannot search
            the table.
    """
    check_loops(loops)
    targets = top_targets(table.scores, top, table.direction)
    evals = min(evals, len(table.architectures))
    checkpoints = [c for c in (25, 50, 100) if c <= evals] or [evals]
    report = ReplayReport(
        targets=targets,
        top=top,
        runs={},
        summary={},
        exact_random=random_search_median(targets.rows, targets.count, evals),
        evals=evals,
        checkpoints=checkpoints,
    )
    for name in loops:
        n = (seeds_for or {}).get(name, len(seeds))
        runs = []
        chosen = range(seeds.start, seeds.start + n)
        searches = (
            (search(name, seed) for seed in chosen)
            if search is not None
            else replay_seeds(table, name, chosen, evals, jobs, **kwargs)
        )
        for r in searches:
            runs.append(r)
            if progress is not None:
                hit = r.evals_to(targets.threshold)
                at = f"at {hit}" if hit is not None else f"not reached in {len(r.best)}"
                best = f"best {r.best[-1]:.4f}" if r.best else "no candidate proposed"
                progress(
                    f"  {name:13s} seed {r.seed:2d}: top {top:g}% {at}, {best}, {r.asks} asks, "
                    f"{r.seconds:.1f}s"
                )
        report.add(name, runs)
    return report
