"""The tables of ``dylora_ranks.py``: each task's dev score per rank for every DyLoRA mode
beside LoRA trained at that rank and LoRA-r_max truncated (mean and 95% t-interval over
seeds), the wall times, and the goals (issue 13)."""

from __future__ import annotations

import statistics
from typing import Any

from _stats import t_interval as interval

from archsearch.spaces import get_task
from archsearch.spaces._lora_spec import LORA_DEFAULTS

#: The mode the goals judge besides the first one reported: recipe.lora's default.
DEFAULT_MODE = "frozen" if LORA_DEFAULTS["frozen"] else "unfrozen"


def report(
    saved: dict[str, Any], timing_seeds: dict[str, set[int]] | None = None
) -> tuple[str, str, bool]:
    """The Markdown tables, a one-line summary and whether every goal was met.

    Wall times are summed over ``timing_seeds`` (task -> seeds, ``""`` for every task; default:
    every reported seed), so runs whose times were taken on a shared machine can be scored but
    left out of the timing."""
    setting, runs = saved["setting"], saved["runs"]
    r_max = setting["r_max"]
    ranks = range(1, r_max + 1)
    tasks = list(dict.fromkeys(k.split("|")[0] for k in runs))
    lines = [
        f"DyLoRA vs LoRA per rank: base {setting['model'] or 'all-MiniLM-L6-v2'}, r_max {r_max}, "
        f"α {setting['alpha']:g}, {setting['steps']} steps of {setting['batch']} x "
        f"{setting['seq']}, lr {setting['lr']:g}, train subset {setting['train_subset']}, "
        f"eval subset {setting['eval_subset'] or 'all'}, device {setting['device']}, "
        f"precision {setting['precision']}",
        "",
    ]
    figures, ok = [], True
    for task in tasks:
        # seeds with every baseline run of the task done; the DyLoRA modes run on all of them
        kinds = ["truncated", *(f"lora-r{r}" for r in ranks)]
        seeds = sorted(
            {int(k.split("|")[1]) for k in runs if k.startswith(f"{task}|")},
        )
        seeds = [s for s in seeds if all(f"{task}|{s}|{k}" in runs for k in kinds)]
        found = sorted(
            {k.split("|")[2][7:] for k in runs if k.startswith(f"{task}|") and "|dylora-" in k}
        )
        modes = [m for m in found if all(f"{task}|{s}|dylora-{m}" in runs for s in seeds)]
        if not seeds or not modes:
            continue
        timed = [
            s
            for s in seeds
            if timing_seeds is None
            or s in timing_seeds.get("", set()) | timing_seeds.get(task, set())
        ]

        def scores(kind: str, b: int, task: str = task, seeds: list[int] = seeds) -> list[float]:
            key = f"lora-r{b}" if kind == "lora" else kind
            return [runs[f"{task}|{s}|{key}"]["scores"][str(b)] for s in seeds]

        def cell(values: list[float]) -> str:
            if len(values) < 2:  # one seed: no interval to give
                return f"{100 * values[0]:.1f}"
            mean, half = interval(values)
            return f"{100 * mean:.1f} ± {100 * half:.1f}"

        metric = get_task(task).primary_metric
        heads = [f"DyLoRA {m}" for m in modes]
        lines += [
            f"### {task} ({metric}, x100, mean ± 95% interval over seeds {seeds})"
            if len(seeds) > 1
            else f"### {task} ({metric}, x100, seed {seeds[0]} only: no interval)",
            "",
            "| rank | "
            + " | ".join(heads)
            + f" | LoRA trained at the rank | LoRA-{r_max} truncated | "
            + " | ".join(f"{h} - LoRA | {h} - truncated" for h in heads)
            + " |",
            "|---:|" + "---:|" * (3 * len(modes) + 2),
        ]
        gaps: dict[str, dict[int, tuple[float, float]]] = {m: {} for m in modes}
        for b in ranks:
            lora, trunc = scores("lora", b), scores("truncated", b)
            cells = [cell(scores(f"dylora-{m}", b)) for m in modes]
            diffs = []
            for m in modes:
                dy = statistics.fmean(scores(f"dylora-{m}", b))
                g = (100 * (dy - statistics.fmean(lora)), 100 * (dy - statistics.fmean(trunc)))
                gaps[m][b] = g
                diffs.append(f"{g[0]:+.1f} | {g[1]:+.1f}")
            lines.append(
                f"| {b} | {' | '.join(cells)} | {cell(lora)} | {cell(trunc)} | "
                + " | ".join(diffs)
                + " |"
            )
        lora_seconds = sum(runs[f"{task}|{s}|lora-r{r}"]["seconds"] for s in timed for r in ranks)
        lora_train = sum(
            runs[f"{task}|{s}|lora-r{r}"]["train_seconds"] for s in timed for r in ranks
        )
        lines.append("")
        if skipped := [m for m in found if m not in modes]:
            lines.append(f"- not on every seed, left out: DyLoRA {', '.join(skipped)}")
        if not timed:
            lines.append(f"- no wall times: none of seeds {seeds} is in the timing seeds")
        for m in modes:
            dy_seconds = sum(runs[f"{task}|{s}|dylora-{m}"]["seconds"] for s in timed)
            dy_train = sum(runs[f"{task}|{s}|dylora-{m}"]["train_seconds"] for s in timed)
            ratio = lora_seconds / dy_seconds if timed else float("nan")
            train_ratio = lora_train / dy_train if timed else float("nan")
            within = max(abs(g[0]) for g in gaps[m].values())
            above = min(gaps[m][b][1] for b in ranks if b <= 4)
            met = ratio >= 7 and within <= 1 and above >= 1
            if m == modes[0] or m == DEFAULT_MODE:
                ok = ok and met
            lines.append(
                f"- DyLoRA {m}: wall time (seeds {timed}) for every rank {dy_seconds:.0f} s "
                f"against {r_max} LoRA runs' {lora_seconds:.0f} s: **{ratio:.1f}x** less "
                f"(goal >= 7x); training alone {dy_train:.0f} s vs {lora_train:.0f} s "
                f"({train_ratio:.1f}x); "
                f"largest gap to LoRA at the rank {within:.1f} points (goal <= 1); smallest lead "
                f"over truncated at ranks 1-4 {above:+.1f} points (goal >= +1): "
                f"{'pass' if met else 'FAIL'}"
            )
            figures.append(
                f"{task} {m}: {ratio:.1f}x, gap to LoRA <= {within:.1f}, lead over truncated "
                f"(r 1-4) >= {above:+.1f}"
            )
        lines.append("")
    summary = (
        f"{str(setting.get('device', 'cpu')).upper()}, "
        f"{'MiniLM' if not setting.get('model') else setting['model']} frozen, "
        f"LoRA q,v, r_max {r_max}, {setting['steps']} steps of "
        f"{setting['batch']}: " + "; ".join(figures)
    )
    return "\n".join(lines), summary, ok
