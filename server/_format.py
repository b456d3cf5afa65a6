"""Plain-text tables for the CLI and the demo."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any

from archsearch.v1 import archsearch_pb2 as pb

STUDY_STATE_NAMES = {
    pb.STUDY_STATE_UNSPECIFIED: "?",
    pb.STUDY_RUNNING: "running",
    pb.STUDY_STOPPED: "stopped",
    pb.STUDY_COMPLETED: "completed",
}
TRIAL_STATE_NAMES = {
    pb.TRIAL_STATE_UNSPECIFIED: "?",
    pb.RUNNING: "RUNNING",
    pb.COMPLETE: "COMPLETE",
    pb.PRUNED: "PRUNED",
    pb.FAIL: "FAIL",
    pb.WAITING: "WAITING",
}


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(c: Any) -> str:
    if isinstance(c, float):
        return f"{c:.4f}" if abs(c) < 1e5 else f"{c:.4g}"
    return str(c)


def describe(candidate_json: str) -> str:
    """Compact architecture text of a candidate (falls back to its JSON)."""
    from archsearch.spaces import SPACES

    try:
        cand = json.loads(candidate_json or "{}")
        return SPACES[cand["space"]]().describe(cand["architecture"])
    except Exception:
        return candidate_json[:60]


def _duration(t: pb.Trial) -> str:
    if not t.started_at or not t.finished_at:
        return ""
    import datetime

    a = datetime.datetime.fromisoformat(t.started_at)
    b = datetime.datetime.fromisoformat(t.finished_at)
    return f"{(b - a).total_seconds():.0f}s"


COST_COLUMNS = {  # raw metric -> (column, scale)
    "params": ("params(M)", 1e-6),
    "flops": ("GFLOPs", 1e-9),
    "latency_ms_b1": ("lat_b1(ms)", 1.0),
}


def _read_time_columns(
    trials: Sequence[pb.Trial], tasks: list[str], objectives: list[str]
) -> dict[str, dict[int, Any]]:
    """Columns computed from raw metrics when shown: per-task primary scores and the GLUE
    average of multi-task trials, a Borda rank over the study's trials, and cost metrics."""
    from archsearch.spaces import borda_ranks, compute_aggregate, per_task_primary

    done = [t for t in trials if t.state == pb.COMPLETE]
    cols: dict[str, dict[int, Any]] = {}
    if len(tasks) > 1:
        for task in tasks:
            cols[task] = {
                t.number: v
                for t in done
                if (v := per_task_primary(dict(t.metrics)).get(task)) is not None
            }
        if "glue_avg" not in objectives:
            cols["glue_avg"] = {}
            for t in done:
                with contextlib.suppress(ValueError):
                    cols["glue_avg"][t.number] = compute_aggregate("glue_avg", dict(t.metrics))
        if len(done) > 1:
            ranks = borda_ranks([dict(t.metrics) for t in done], tasks)
            cols["borda"] = {t.number: r for t, r in zip(done, ranks, strict=True)}
    for metric, (column, scale) in COST_COLUMNS.items():
        if metric in objectives:
            continue
        values = {t.number: t.metrics[metric] * scale for t in trials if metric in t.metrics}
        if values:
            cols[column] = values
    return cols


def format_study(study: pb.Study, trials: Sequence[pb.Trial], limit: int = 50) -> str:
    spec = json.loads(study.spec_json)
    objectives = ", ".join(
        f"{o.metric} ({'max' if o.direction == pb.MAXIMIZE else 'min'})" for o in study.objectives
    )
    out = [
        f"study {study.name}: {STUDY_STATE_NAMES[study.state]}",
        f"  space {spec.get('space')}  loop {spec.get('loop')}  task {spec.get('task')}  "
        f"trainer {spec.get('trainer')}  pruner {spec.get('pruner', {}).get('type')}",
        f"  objectives: {objectives}",
        f"  trials: {study.n_complete} complete, {study.n_pruned} pruned, {study.n_fail} failed, "
        f"{study.n_running} running, {study.n_waiting} waiting (budget {study.n_trials})",
        "",
    ]
    metrics = [o.metric for o in study.objectives]
    tasks = list(spec.get("data", {}).get("tasks") or [spec.get("task")])
    extra = _read_time_columns(trials, tasks, metrics)
    shown = list(trials)[-limit:]
    rows = []
    for t in shown:
        vals = [t.metrics.get(m, "") for m in metrics]
        # objectives that are aggregates are the trial's values, not raw metrics
        vals = [
            t.values[i] if v == "" and t.state == pb.COMPLETE and i < len(t.values) else v
            for i, v in enumerate(vals)
        ]
        rows.append(
            [
                t.number,
                TRIAL_STATE_NAMES[t.state],
                *vals,
                *(col.get(t.number, "") for col in extra.values()),
                describe(t.candidate_json),
                t.attempt or "",
                _duration(t),
                (t.fail_reason or "")[:40],
            ]
        )
    headers = ["#", "state", *metrics, *extra, "architecture", "retry", "time", "note"]
    out.append(table(headers, rows))
    if len(trials) > limit:
        out.append(f"  ({len(trials) - limit} earlier trials not shown; --limit N or --json)")
    if study.best_trials:
        label = "best trial" if len(study.objectives) == 1 else "Pareto front"
        out.append("")
        out.append(f"{label}:")
        for t in study.best_trials:
            shown_values = "  ".join(
                f"{m}={v:.4f}" for m, v in zip(metrics, t.values, strict=False)
            )
            out.append(f"  #{t.number}  {shown_values}  {describe(t.candidate_json)}")
            out.append(f"      params {t.params_json}")
    return "\n".join(out)
