"""The analysis half of ``benchmarks/joint_table.py``: the table, the interaction test and
the searches replayed on it (see that script's docstring)."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna

from archsearch.search import make_loop
from archsearch.server._suggest import ask_candidate
from archsearch.spaces import BertSpace, DataSpace

#: Asks a strategy may make (repeats of evaluated pairs included) before the rest of the
#: pairs are taken at random.
MAX_ASKS = 200
STRATEGIES = ("joint TPE", "joint random", "arch-then-data TPE", "arch-only TPE")


def scores(table: dict[str, Any]) -> np.ndarray:
    """Scores as an (architectures, data choices, seeds) array."""
    seeds = table["seeds"]
    out = np.full((len(table["architectures"]), len(table["data"]), len(seeds)), np.nan)
    for r in table["rows"]:
        out[r["arch"], r["data"], seeds.index(r["seed"])] = r["score"]
    return out


def _arch_name(arch: dict[str, int]) -> str:
    return f"{arch['num_hidden_layers']}x{arch['hidden_size']}"


def _dsir_target(table: dict[str, Any]) -> str:
    """Where the table's DSIR choice aimed: a table that names no target was built when the
    default was the dev split that scores every row (its DSIR rows saw the evaluation text)."""
    targets = [d.get("target", "dev") for d in table["data"] if d.get("method") == "dsir"]
    target = targets[0] if targets else "test"
    if target == "dev":
        return "the task's dev text, the split that scores it: a leak, rebuild the table"
    return f"the task's {target} text" if isinstance(target, str) else f"{target}"


def analyse(table: dict[str, Any]) -> str:
    """The table (seed means and per-seed scores), two-way ANOVA and best data per arch."""
    import pandas as pd
    import statsmodels.api as sm
    from statsmodels.formula.api import ols

    s = scores(table)
    mean = s.mean(axis=2)
    labels, archs = table["data_labels"], table["architectures"]
    st = table["settings"]
    lines = [
        f"Task {table['task']} ({st['eval_subset'] or 'all'} dev examples), {st['steps']} steps "
        f"x batch {st['batch_size']}, seq {st['max_seq_length']}, lr {st['learning_rate']}, "
        f"seeds {table['seeds']}; DSIR and random keep k = {st['k']} training examples "
        f"(DSIR towards {_dsir_target(table)}, Laplace 1); `none` trains on the whole split.",
        "",
        "| architecture | " + " | ".join(labels) + " | best data |",
        "|---|" + "---|" * (len(labels) + 1),
    ]
    for a, arch in enumerate(archs):
        cells = [
            f"{mean[a, d]:.4f} ({', '.join(f'{v:.3f}' for v in s[a, d])})"
            for d in range(len(labels))
        ]
        lines.append(
            f"| {_arch_name(arch)} | " + " | ".join(cells) + f" | {labels[int(mean[a].argmax())]} |"
        )
    best = np.unravel_index(int(mean.argmax()), mean.shape)
    lines += [
        "",
        f"Best pair: {_arch_name(archs[best[0]])} with `{labels[best[1]]}` "
        f"({mean[best]:.4f}, seed mean). Data choice's mean over architectures: "
        + ", ".join(f"`{lab}` {mean[:, d].mean():.4f}" for d, lab in enumerate(labels))
        + ".",
    ]
    rows = [
        {"arch": _arch_name(archs[a]), "data": labels[d], "score": s[a, d, k]}
        for a in range(s.shape[0])
        for d in range(s.shape[1])
        for k in range(s.shape[2])
    ]
    model = ols("score ~ C(arch) * C(data)", data=pd.DataFrame(rows)).fit()
    anova = sm.stats.anova_lm(model, typ=2)
    lines += ["", "Two-way ANOVA (statsmodels, type II; seeds as replicates):", ""]
    lines += ["| term | df | F | p |", "|---|---|---|---|"]
    for term, name in (
        ("C(arch)", "architecture"),
        ("C(data)", "data"),
        ("C(arch):C(data)", "interaction"),
    ):
        row = anova.loc[term]
        lines.append(f"| {name} | {int(row['df'])} | {row['F']:.2f} | {row['PR(>F)']:.3g} |")
    winners = {labels[int(mean[a].argmax())] for a in range(len(archs))}
    lines += [
        "",
        f"Best data choice per architecture: {len(winners)} distinct "
        f"({', '.join(sorted(winners))}).",
    ]
    return "\n".join(lines)


def _space(table: dict[str, Any]) -> tuple[BertSpace, dict[tuple[int, int], int]]:
    archs = table["architectures"]
    space = BertSpace(
        num_hidden_layers=sorted({a["num_hidden_layers"] for a in archs}),
        hidden_size=sorted({a["hidden_size"] for a in archs}),
        num_attention_heads=[2],
        intermediate_ratio=[2],
    )
    index = {(a["num_hidden_layers"], a["hidden_size"]): i for i, a in enumerate(archs)}
    return space, index


def _search(
    table: dict[str, Any], strategy: str, seed: int, arch_budget: int
) -> list[tuple[int, int, float]]:
    """The distinct (arch, data, observed score) a strategy evaluates, in order."""
    s = scores(table)
    rng = random.Random(seed)
    space, index = _space(table)
    ds = DataSpace.from_spec({"selection": table["data"]}, {})
    assert ds is not None
    n_a, n_d = s.shape[0], s.shape[1]
    seen: dict[tuple[int, int], float] = {}
    order: list[tuple[int, int, float]] = []

    def observe(a: int, d: int) -> float:
        if (a, d) not in seen:
            seen[(a, d)] = float(s[a, d, rng.randrange(s.shape[2])])
            order.append((a, d, seen[(a, d)]))
        return seen[(a, d)]

    joint = strategy.startswith("joint")
    name = "random" if strategy == "joint random" else "tpe"
    loop = make_loop(name, seed, 1, {"n_startup_trials": 5} if name == "tpe" else {})
    study = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(), sampler=loop.sampler, direction="maximize"
    )
    stop: Callable[[], bool]
    if joint:
        stop = lambda: len(order) >= n_a * n_d  # noqa: E731
    elif strategy == "arch-then-data TPE":
        stop = lambda: len(order) >= min(arch_budget, n_a)  # noqa: E731
    else:
        stop = lambda: len(order) >= n_a  # noqa: E731
    for _ in range(MAX_ASKS):
        if stop():
            break
        asked = ask_candidate(loop, study, space, data_space=ds if joint else None)
        arch = asked.architecture
        key = (arch["num_hidden_layers"], arch["hidden_size"])
        if key not in index:  # a partial table is no product set: not an evaluation
            study.tell(asked.number, state=optuna.trial.TrialState.FAIL)
            continue
        a = index[key]
        d = ds.index(asked.suggestion.data) if joint else 0  # 0: the default (none)
        study.tell(asked.number, observe(a, d))
    if strategy == "arch-only TPE":
        return order
    if strategy == "arch-then-data TPE":
        best_a = max(order, key=lambda o: o[2])[0]
        for d in range(n_d):
            observe(best_a, d)
    rest = [(a, d) for a in range(n_a) for d in range(n_d) if (a, d) not in seen]
    rng.shuffle(rest)
    for a, d in rest:
        observe(a, d)
    return order


def replay_report(table: dict[str, Any], replays: int, arch_budget: int) -> str:
    """Evaluations to the best pair and regret at 6 and 9 evaluations, per strategy."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    mean = scores(table).mean(axis=2)
    best = np.unravel_index(int(mean.argmax()), mean.shape)
    total = mean.size
    lines = [
        f"Searches replayed on the table ({total} pairs; each evaluation returns one seed's "
        f"score at random), {replays} replays each; architecture-then-data: "
        f"{arch_budget} architectures with `none`, then every data choice on the best one, "
        "then the rest at random. `never`: the strategy cannot reach the best pair.",
        "",
        "| strategy | evaluations to the best pair: median (mean) | found within 9 "
        "| regret at 6 | regret at 9 |",
        "|---|---|---|---|---|",
    ]
    for strategy in STRATEGIES:
        to_best: list[int | None] = []
        r6: list[float] = []
        r9: list[float] = []
        for seed in range(replays):
            order = _search(table, strategy, seed, arch_budget)
            pos = [i for i, (a, d, _) in enumerate(order) if (a, d) == best]
            to_best.append(pos[0] + 1 if pos else None)
            for budget, out in ((6, r6), (9, r9)):
                head = order[:budget]
                a, d, _ = max(head, key=lambda o: o[2])
                out.append(float(mean.max() - mean[a, d]))
        found = [x for x in to_best if x is not None]
        never = len(to_best) - len(found)
        median = statistics.median([x if x is not None else total + 1 for x in to_best])
        shown = f"{median:g} ({statistics.fmean(found):.1f} when found)" if found else "never"
        if found and never:
            shown += f"; never in {never}/{replays}"
        within = sum(1 for x in found if x <= 9)
        lines.append(
            f"| {strategy} | {shown} | {within}/{replays} | {statistics.fmean(r6):.4f} "
            f"| {statistics.fmean(r9):.4f} |"
        )
    return "\n".join(lines)
