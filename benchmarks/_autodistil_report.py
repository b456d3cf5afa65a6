"""The analysis half of ``benchmarks/autodistil_rank.py``: rank correlations, budgeted regret,
the compute comparison with TPE and BOSHNAS, and the issue's goals (see that script).

Input: the JSON the ``build`` step writes: ``students`` (key -> subspace, flops, params,
student), ``proxies`` (``K3``/``K1`` -> key -> proxy -> value; ``P2_task:<task>`` per task),
``truth`` (key -> task -> per-seed dev scores x100), ``settings``.

Compute is counted in forward-FLOP units per example (``flops`` of the shared cost model,
one 128-token sequence): a training step of a model costs 3x its forward (forward and
backward), a forward alone 1x, times the batch. The supernet step: the teacher's forward and
the step's sandwich of students trained; the rank job (one task): the P2 proxy fine-tuning of
the students it trains per step, and the relation losses' forwards on the held-out text; the
final stage: ``top_n`` stand-alone fine-tunings. A TPE or BOSHNAS evaluation: one stand-alone
fine-tuning of the student with the truth's recipe.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from archsearch.server._replay import replay_search
from archsearch.spaces import ReplayTable
from archsearch.spaces._row_table import RowTableSpace
from archsearch.spaces._students import MINILM_L6, Student, flops, params
from archsearch.spaces._subspaces import preset
from archsearch.worker._supernet_training import sandwich_students

#: Every proxy a report may show; :func:`proxies` keeps those a build measured. P2 is the
#: students' dev scores after the all-student proxy fine-tuning: ``P2_task`` the task metric
#: (ties: the cheaper student first, the loop's ``tie_break: cost``), ``P2_lex`` the same with
#: ties broken by the lower dev loss (the loop's default), ``P2_loss`` minus the dev loss.
PROXIES = (
    "P1_relation",
    "P2_task",
    "P2_lex",
    "P2_loss",
    "P3_params",
    "P4_flops",
    "P5_teacher_relation",
)
#: The proxies with a value per task (``P2_task:<task>``).
TASK_PROXIES = ("P2_task", "P2_lex", "P2_loss")
#: ``P2_lex = P2_task + LEX_WEIGHT * P2_loss``: the dev loss only orders equal task scores
#: (scores differ by at least 1/dev size, over 1e-4; losses stay far below 100).
LEX_WEIGHT = 1e-6
TOP_N = 3  # the loop's default number of students fine-tuned stand-alone


#: The MiniLM teacher's forward FLOPs (it is the largest student shape: L6, A12, H384, I1536).
TEACHER_FLOPS = flops(MINILM_L6, Student(6, 12, 384, 1536))


def with_derived(data: dict[str, Any]) -> dict[str, Any]:
    """Adds ``P2_lex`` (and per task) to every student a build scored with ``P2_loss``."""
    for scores in data["proxies"].values():
        for values in scores.values():
            for name in [n for n in values if n.startswith("P2_loss")]:
                task = name.removeprefix("P2_loss")
                values[f"P2_lex{task}"] = values[f"P2_task{task}"] + LEX_WEIGHT * values[name]
    return data


def proxies(data: dict[str, Any]) -> tuple[str, ...]:
    """The proxies of :data:`PROXIES` every scored student has (a build before the dev loss
    existed has no ``P2_loss`` or ``P2_lex``)."""
    scored = [values for scores in data["proxies"].values() for values in scores.values()]
    return tuple(p for p in PROXIES if all(p in values for values in scored))


def loop_proxy(data: dict[str, Any]) -> str:
    """The proxy the ``autodistil`` loop ranks by by default, as this build measured it: the
    task score with ties broken by the dev loss, or the task score alone without losses."""
    return "P2_lex" if "P2_lex" in proxies(data) else "P2_task"


def minilm_students() -> dict[str, dict[str, Any]]:
    """The ``students`` entry of a built file: each ``minilm-k3`` student's sub-space, FLOPs,
    params and shape, by key."""
    return {
        s.key(): {
            "subspace": space.name,
            "flops": flops(MINILM_L6, s),
            "params": params(MINILM_L6, s),
            "student": s.to_dict(),
        }
        for space in preset("minilm-k3", MINILM_L6)
        for s in space.students(MINILM_L6)
    }


def truth_of(data: dict[str, Any], key: str, task: str | None = None) -> float:
    """A student's true score: mean over seeds (and tasks, unless ``task`` is given)."""
    per_task = data["truth"][key]
    values = per_task[task] if task else [v for vs in per_task.values() for v in vs]
    return statistics.fmean(values)


def tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's τ-b of each row pair of ``x`` and ``y`` (shape ``(rows, n)``); NaN for a
    constant row. Vectorised over rows: the bootstrap scores 1,000 resamples in one call."""
    i, j = np.triu_indices(x.shape[1], 1)
    sx, sy = np.sign(x[:, i] - x[:, j]), np.sign(y[:, i] - y[:, j])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sx * sy).sum(1) / np.sqrt((sx != 0).sum(1) * (sy != 0).sum(1))


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ (Pearson's r of the average ranks) of each row pair; NaN when constant."""
    rx, ry = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(1) / np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))


def interval(
    x: Sequence[float], y: Sequence[float], fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> tuple[float, float, float]:
    """``fn(x, y)`` and its 90% bootstrap interval over the pairs (1,000 resamples)."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    idx = np.random.default_rng(0).integers(0, len(xs), size=(1000, len(xs)))
    draws = fn(xs[idx], ys[idx])
    draws = draws[~np.isnan(draws)]  # NaN when a resample is constant
    point = float(fn(xs[None], ys[None])[0])
    if not len(draws):
        return point, float("nan"), float("nan")
    lo, hi = np.quantile(draws, [0.05, 0.95])
    return point, float(lo), float(hi)


def shown(point: float, lo: float, hi: float) -> str:
    """``+0.57 [+0.13,+0.92]``; "constant" when the proxy (or the truth) gives every student
    of the group the same value (no order to compare, as a task proxy whose students all
    predict the majority class)."""
    if np.isnan(point):
        return "constant"
    return f"{point:+.2f} [{lo:+.2f},{hi:+.2f}]"


def groups(data: dict[str, Any]) -> dict[str, list[str]]:
    """Sub-space name -> its students' keys, and ``pooled`` -> all of them."""
    out: dict[str, list[str]] = {}
    for key, info in data["students"].items():
        out.setdefault(info["subspace"], []).append(key)
    out["pooled"] = list(data["students"])
    return out


def correlations(data: dict[str, Any]) -> tuple[list[str], dict[tuple[str, str], float]]:
    """Markdown lines of τ-b and ρ per proxy and group, for K = 3 and K = 1; and the pooled
    τ by ``(K, proxy)``."""
    lines: list[str] = []
    pooled: dict[tuple[str, str], float] = {}
    names = groups(data)
    for k, scores in data["proxies"].items():
        if not scores:
            continue
        lines += [
            f"**{k}**: Kendall τ-b / Spearman ρ of each proxy with the truth (mean over tasks "
            "and seeds), 90% bootstrap intervals over students",
            "",
            "| proxy | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for proxy in proxies(data):
            cells = []
            for name, keys in names.items():
                x = [scores[key][proxy] for key in keys]
                y = [truth_of(data, key) for key in keys]
                t, tlo, thi = interval(x, y, tau_b)
                r, rlo, rhi = interval(x, y, spearman)
                cells.append(f"τ {shown(t, tlo, thi)} ρ {shown(r, rlo, rhi)}")
                if name == "pooled":
                    pooled[(k, proxy)] = t
            lines.append(f"| {proxy} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines, pooled


def per_task(data: dict[str, Any]) -> list[str]:
    """Markdown lines of the pooled τ-b of each proxy with each task's truth alone (P2 then
    ranks by that task's proxy dev score), for K = 3 and K = 1: a task whose truth does not
    learn shows here instead of blurring the mean over tasks."""
    tasks = sorted({task for per_key in data["truth"].values() for task in per_key})
    runs = [k for k, scores in data["proxies"].items() if scores]
    keys = list(data["students"])
    lines = [
        "Pooled Kendall τ-b with each task's truth alone (90% bootstrap intervals over students)",
        "",
        "| proxy | " + " | ".join(f"{k} {task}" for k in runs for task in tasks) + " |",
        "|---|" + "---|" * (len(runs) * len(tasks)),
    ]
    for proxy in proxies(data):
        cells = []
        for k in runs:
            for task in tasks:
                name = f"{proxy}:{task}" if proxy in TASK_PROXIES else proxy
                x = [data["proxies"][k][key][name] for key in keys]
                y = [truth_of(data, key, task) for key in keys]
                t, lo, hi = interval(x, y, tau_b)
                cells.append(shown(t, lo, hi))
        lines.append(f"| {proxy} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def pooled_budgets(data: dict[str, Any]) -> list[float]:
    """Three FLOPs budgets over all students: the 8th, 16th and last cheapest's FLOPs (a
    third, two thirds and all of a 24-student study)."""
    costs = sorted(info["flops"] for info in data["students"].values())
    n = len(costs)
    return [costs[max(0, round(n * f) - 1)] for f in (1 / 3, 2 / 3, 1.0)]


def budget_pick(
    data: dict[str, Any], keys: Sequence[str], budget: float, proxy: str, k: str = "K3"
) -> str | None:
    """The student ``proxy`` ranks first among ``keys`` within ``budget`` (``largest_fits``:
    the one with the most FLOPs); None when none fits. Ties go as in the loop's pick: the
    fewer FLOPs, then the key."""
    fits = [key for key in keys if data["students"][key]["flops"] <= budget]
    if not fits:
        return None
    if proxy == "largest_fits":
        return max(fits, key=lambda key: data["students"][key]["flops"])
    return ranked(data, fits, proxy, k)[0]


def ranked(data: dict[str, Any], keys: Sequence[str], proxy: str, k: str = "K3") -> list[str]:
    """``keys`` best ``proxy`` first; ties as the loop breaks them (fewer FLOPs, then key)."""
    scores = data["proxies"][k]
    return sorted(keys, key=lambda key: (-scores[key][proxy], data["students"][key]["flops"], key))


def regrets(data: dict[str, Any]) -> tuple[list[str], dict[str, list[float]]]:
    """Markdown lines of each proxy's regret (points) under the pooled budgets; and the
    regrets by proxy."""
    keys = list(data["students"])
    budgets = pooled_budgets(data)
    lines = [
        "Regret (points; best true student within the FLOPs budget minus the pick's truth) of "
        "each K = 3 proxy's first pick, pooled students, budgets at a third, two thirds and "
        "all of the students' FLOPs:",
        "",
        "| pick by | " + " | ".join(f"≤ {b / 1e6:.0f} MFLOPs" for b in budgets) + " | mean |",
        "|---|" + "---:|" * (len(budgets) + 1),
    ]
    out: dict[str, list[float]] = {}
    for proxy in (*proxies(data), "largest_fits"):
        values = []
        for budget in budgets:
            fits = [key for key in keys if data["students"][key]["flops"] <= budget]
            pick = budget_pick(data, keys, budget, proxy)
            assert pick is not None
            values.append(max(truth_of(data, f) for f in fits) - truth_of(data, pick))
        out[proxy] = values
        cells = " | ".join(f"{v:.2f}" for v in values)
        lines.append(f"| {proxy} | {cells} | {statistics.fmean(values):.2f} |")
    lines.append("")
    return lines, out


def student_of(data: dict[str, Any], key: str) -> Student:
    return Student(**data["students"][key]["student"])


def autodistil_compute(data: dict[str, Any], keys: Sequence[str]) -> float:
    """The supernet and ranking stages' compute for one task (module docstring's units)."""
    s = data["settings"]
    teacher = data["teacher_flops"]
    total = 0.0
    for subspace, members in groups(data).items():
        if subspace == "pooled":
            continue
        ordered = sorted(members, key=lambda key: data["students"][key]["params"])
        students = [student_of(data, key) for key in ordered]
        flops = {student.key(): data["students"][student.key()]["flops"] for student in students}
        for step in range(1, s["steps"] + 1):
            sandwich = sandwich_students(students, step, s.get("sandwich", 4))
            total += s["batch"] * (teacher + 3 * sum(flops[x.key()] for x in sandwich))
        trained = min(s["proxy_students"] or len(students), len(students))
        mean_student = statistics.fmean(flops.values())
        total += s["proxy_steps"] * s["batch"] * 3 * trained * mean_student
        # P1 and P5: the teacher's and every student's forward on the held-out text, twice
        total += 2 * s["heldout"] * (teacher + sum(flops.values()))
    return total


def finetune_compute(data: dict[str, Any], key: str, task: str) -> float:
    """One stand-alone fine-tuning of ``key`` on ``task`` with the task's truth recipe."""
    s = data["settings"]
    steps = s.get("truth_by_task", {}).get(task, {}).get("steps", s["truth_steps"])
    return float(steps * s["batch"] * 3 * data["students"][key]["flops"])


def compute_comparison(
    data: dict[str, Any], task: str, replays: dict[str, int]
) -> tuple[list[str], dict[str, float]]:
    """On ``task``, at each pooled budget: AutoDistil's final student (the best true of the
    loop proxy's top 3) and its compute; then each search loop's median compute to find a
    student at least as good (replayed on the students' true scores, ``replays`` seeds per
    loop). Returns markdown lines and the worst (largest) AutoDistil / loop ratio per loop."""
    keys = list(data["students"])
    lines = [
        f"Compute on {task} (10^12 forward-FLOP units per example x batch; a training step "
        "is 3 forwards): AutoDistil = supernets + ranking + the top "
        f"{TOP_N} students by {loop_proxy(data)} fine-tuned; a search loop = the stand-alone "
        "fine-tunings until it finds a student at least as good as AutoDistil's (median over "
        "replay seeds)",
        "",
        "| budget | AutoDistil's student (truth) | AutoDistil compute | "
        + " | ".join(f"{loop} compute (evals)" for loop in replays)
        + " | "
        + " | ".join(f"AutoDistil / {loop}" for loop in replays)
        + " |",
        "|---|---|---:|" + "---:|" * (2 * len(replays)),
    ]
    worst: dict[str, float] = {}
    stages = autodistil_compute(data, keys)
    for budget in pooled_budgets(data):
        fits = [key for key in keys if data["students"][key]["flops"] <= budget]
        top = ranked(data, fits, f"{loop_proxy(data)}:{task}")[:TOP_N]
        final = max(top, key=lambda key: truth_of(data, key, task))
        target = truth_of(data, final, task)
        ours = stages + sum(finetune_compute(data, key, task) for key in top)
        table = ReplayTable(
            source=f"students within {budget:.0f} FLOPs",
            architectures=[student_of(data, key).to_dict() for key in fits],
            scores=[truth_of(data, key, task) for key in fits],
            direction="maximize",
            space=RowTableSpace([student_of(data, key).to_dict() for key in fits], "students"),
            metric=task,
        )
        cost_of = {
            table.key(student_of(data, key).to_dict()): finetune_compute(data, key, task)
            for key in fits
        }
        cells, ratios = [], []
        for loop, seeds in replays.items():
            spent, evals = [], []
            for seed in range(seeds):
                run = replay_search(table, loop, seed, len(fits))
                n = run.evals_to(target)
                assert n is not None  # every row is evaluated at the latest at the last one
                spent.append(sum(cost_of[key] for key in run.evaluated[:n]))
                evals.append(n)
            median = statistics.median(spent)
            cells.append(f"{median / 1e12:.3g} ({statistics.median(evals):g})")
            ratios.append(f"{ours / median:.2f}")
            worst[loop] = max(worst.get(loop, 0.0), ours / median)
        lines.append(
            f"| ≤ {budget / 1e6:.0f} MFLOPs ({len(fits)} students) | {final} ({target:.1f}) | "
            f"{ours / 1e12:.3g} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |"
        )
    lines.append("")
    return lines, worst


def goals(
    pooled_tau: dict[tuple[str, str], float],
    regret: dict[str, list[float]],
    worst: dict[str, float],
    proxy: str = "P2_task",
) -> tuple[list[str], bool]:
    """The issue's four goals for the loop's ``proxy``, each with PASS/FAIL; and whether all
    passed."""
    tau = pooled_tau.get(("K3", proxy), float("nan"))
    params = pooled_tau.get(("K3", "P3_params"), float("nan"))
    k1 = pooled_tau.get(("K1", proxy))
    checks = [
        (
            f"supernet proxy ({proxy}, K = 3, pooled) τ {tau:.2f} ≥ 0.6 and above the "
            f"parameter count's {params:.2f}",
            tau >= 0.6 and tau > params,
        ),
        (
            "K = 3 at least as good as K = 1: "
            + ("K = 1 not run" if k1 is None else f"τ {tau:.2f} vs {k1:.2f}"),
            k1 is not None and tau >= k1,
        ),
        (
            f"{proxy}'s budgeted pick within 1 point of the best true student under each "
            f"budget: regrets {', '.join(f'{v:.2f}' for v in regret[proxy])}",
            all(v <= 1.0 for v in regret[proxy]),
        ),
        (
            "AutoDistil's student with less than half the compute TPE or BOSHNAS needs: worst "
            "ratio " + ", ".join(f"{loop} {r:.2f}" for loop, r in worst.items()),
            bool(worst) and all(r < 0.5 for r in worst.values()),
        ),
    ]
    lines = [f"- **{'PASS' if ok else 'FAIL'}** {text}" for text, ok in checks]
    return lines, all(ok for _, ok in checks)
