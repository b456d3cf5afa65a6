"""Plain-text tables for the CLI and the demo."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any

from archsearch.server._errors import STOPPED_REASON
from archsearch.server._format_notes import (
    dev_data_warning,
    failure_reasons,
    printable,
    trial_warnings,
)
from archsearch.server._trainers import TrainerCatalogue
from archsearch.server._trial_notes import is_prepared, rank_trials_of, trial_note
from archsearch.spaces import SpecError
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
    return printable(str(c))


#: Data fields ``show`` names next to the architecture when a candidate sets them (a joint
#: study's data choices).
DATA_CHOICE_FIELDS = ("selection", "pretrain_selection", "curriculum")


def describe(candidate_json: str, description: str = "", searched: Sequence[str] = ()) -> str:
    """Compact architecture text of a candidate: the server's ``description`` (made with the
    study's own space options), else the space's text with default options, else its JSON;
    with its data choices other than the default (``[selection: dsir k=2000]``), and every
    value of the data fields its study searches (``searched``: the spec's ``data_space``
    fields, ``train_subset: 4000`` and ``selection: none`` too)."""
    from archsearch.spaces import SPACES

    try:
        cand = json.loads(candidate_json or "{}")
        text = description or SPACES[cand["space"]]().describe_candidate(cand)
    except Exception:
        return description or candidate_json[:60]
    suffix = data_suffix(cand, searched)
    # the server's description carries it already (Trial.description, since 2026-12-07)
    return text if suffix and text.endswith(suffix) else text + suffix


def data_suffix(cand: Any, searched: Sequence[str] = ()) -> str:
    """A candidate's data choices as ``describe`` shows them after its architecture
    (``  [selection: dsir k=2000; train_subset: 4000]``), "" when it makes none."""
    from archsearch.spaces import choice_label, curriculum_summary

    data = (cand.get("data") if isinstance(cand, dict) else None) or {}
    if not isinstance(data, dict):
        return ""
    chosen = [
        f"{f}: all"
        if f in ("train_subset", "eval_subset") and data[f] == 0  # 0: the whole split
        else f"{f}: {choice_label(curriculum_summary(data[f]) if f == 'curriculum' else data[f])}"
        for f in (*DATA_CHOICE_FIELDS, *(f for f in searched if f not in DATA_CHOICE_FIELDS))
        if f in data
        and (
            f in searched or (isinstance(data[f], dict) and data[f].get("method", "none") != "none")
        )
    ]
    return f"  [{'; '.join(chosen)}]" if chosen else ""


def _duration(t: pb.Trial) -> str:
    if not t.started_at or not t.finished_at or t.fail_reason == STOPPED_REASON:
        return ""  # a candidate a stop ended never ran: its "start" is when it was prepared
    import datetime

    a = datetime.datetime.fromisoformat(t.started_at)
    b = datetime.datetime.fromisoformat(t.finished_at)
    return f"{(b - a).total_seconds():.0f}s"


COST_COLUMNS = {  # raw metric -> (column, scale)
    "params": ("params(M)", 1e-6),
    "flops": ("GFLOPs", 1e-9),
    "latency_ms_b1": ("lat_b1(ms)", 1.0),
    # a lora trial's (each DyLoRA rank trial's at its rank): what tells the ranks apart
    "trainable_params": ("trainable(K)", 1e-3),
}


def architecture_params(candidate_json: str) -> float | None:
    """The parameter count of a candidate's classifier, from its architecture: the ``params`` a
    bert worker measures (the same analytic counts its tests check it against). None when it
    cannot be known here (a custom task's head, an unknown space, a malformed candidate)."""
    from archsearch.spaces import (
        FlexiBertSmallSpace,
        bert_parameter_count,
        flexibert_parameter_count,
        get_task,
    )

    try:
        cand = json.loads(candidate_json or "{}")
        data = cand["data"]
        labels = get_task((data.get("tasks") or [data["task"]])[0]).num_labels
        arch = cand["architecture"]
        if cand["space"] == "bert":
            return float(bert_parameter_count(arch, num_labels=labels))
        if cand["space"] == "flexibert-small":
            arch = FlexiBertSmallSpace.to_flexibert(arch)
        elif cand["space"] != "flexibert":
            return None
        return float(flexibert_parameter_count(arch, num_labels=labels))
    except Exception:
        return None


#: Trainers whose ``params`` :func:`architecture_params` computes (the bert trainer's BERT and
#: FlexiBERT students); another trainer counts its own, or none.
COST_MODEL_TRAINERS = frozenset({"bert"})


def pruned_metrics(t: pb.Trial, first_metric: str, trainer: str = "bert") -> dict[str, float]:
    """What a pruned trial has instead of the worker's final metrics (it stopped before
    measuring them): its last reported value of the first objective, and for a trainer of
    :data:`COST_MODEL_TRAINERS` ``params`` computed from its architecture. Empty for other
    trials."""
    if t.state != pb.PRUNED:
        return {}
    out: dict[str, float] = {}
    if t.intermediate_values:
        out[first_metric] = t.intermediate_values[max(t.intermediate_values)]
    if trainer not in COST_MODEL_TRAINERS:
        return out
    params = architecture_params(t.candidate_json)
    if params is not None:
        out["params"] = params
    return out


#: How much of a failure reason the table's note column shows (the whole one follows it).
def _read_time_columns(
    trials: Sequence[pb.Trial], tasks: list[str], objectives: list[str], trainer: str = "bert"
) -> dict[str, dict[int, Any]]:
    """Columns computed from raw metrics when shown: per-task primary scores and the GLUE
    average of multi-task trials, a Borda rank over the study's trials, and cost metrics (of
    the study's ``trainer``: see :func:`pruned_metrics`)."""
    from archsearch.spaces import borda_ranks, compute_aggregate, per_task_primary
    from archsearch.spaces._aggregate import GLUE_PRIMARY_METRIC, GLUE_TASK_IDS

    done = [t for t in trials if t.state == pb.COMPLETE]
    cols: dict[str, dict[int, Any]] = {}
    if len(tasks) > 1:
        for task in tasks:  # named by the score shown (glue_avg averages MRPC's f1 and acc)
            name = f"{task}.{GLUE_PRIMARY_METRIC.get(task, 'accuracy')}"
            name = name if task in GLUE_TASK_IDS else task
            if name in objectives:  # an objective already shows it
                continue
            cols[name] = {
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
        for t in trials:  # pruned trials: computed from the architecture where possible
            if t.number not in values and metric in (pm := pruned_metrics(t, "", trainer)):
                values[t.number] = pm[metric] * scale
        if values:
            cols[column] = values
    return cols


def _task_words(spec: dict[str, Any]) -> str:
    """``task sst2  `` for a trainer that reads GLUE tasks; nothing for a plugin whose trainer
    scores no task (its spec still carries the default task)."""
    info = TrainerCatalogue.installed().get(str(spec.get("trainer", "bert")))
    if info is not None and not info.task_metrics:
        return ""
    from archsearch.spaces import data_tasks

    try:
        tasks = data_tasks(spec.get("data") or {}) or [spec.get("task")]
    except (KeyError, SpecError, TypeError, ValueError):  # an older or foreign spec
        tasks = [spec.get("task")]
    if len(tasks) > 1:  # a multi-task study: each task, not the first one
        return f"tasks {', '.join(map(str, tasks))}  "
    return f"task {tasks[0]}  "


def _last_trials(trials: Sequence[pb.Trial], limit: int) -> list[pb.Trial]:
    """The last ``limit`` trials, the jobs first: a study whose jobs add trials (DyLoRA's ranks,
    AutoDistil's students) keeps its last jobs in view behind hundreds of derived rows."""
    jobs = [t for t in trials if not t.HasField("derived_from")][-limit:]
    derived = [t for t in trials if t.HasField("derived_from")]
    keep = max(0, limit - len(jobs))
    derived = derived[-keep:] if keep else []
    return sorted([*jobs, *derived], key=lambda t: t.number)


def format_study(study: pb.Study, trials: Sequence[pb.Trial], limit: int = 50) -> str:
    spec = json.loads(study.spec_json)
    repeats = sum(1 for t in trials if t.duplicate_of >= 0)
    prepared = sum(1 for t in trials if is_prepared(t))
    unrun = study.n_unrun  # counted by the server, as `studies` shows it
    ranks = rank_trials_of(trials)
    objectives = ", ".join(
        f"{o.metric} ({'max' if o.direction == pb.MAXIMIZE else 'min'})" for o in study.objectives
    )
    out = [
        f"study {study.name}: {STUDY_STATE_NAMES[study.state]}"
        + (f" ({study.completed_reason})" if study.completed_reason else ""),
        f"  space {spec.get('space')}  loop {spec.get('loop')}  {_task_words(spec)}"
        f"trainer {spec.get('trainer')}  pruner {spec.get('pruner', {}).get('type')}",
        f"  objectives: {objectives}",
        f"  trials: {study.n_complete} complete, {study.n_pruned} pruned, {study.n_fail} failed"
        + (f" ({unrun} never ran: a stop ended them)" if unrun else "")
        + (
            f" ({study.n_handed_back} handed back by workers: queued again, not counted "
            "against retries)"
            if study.n_handed_back
            else ""
        )
        + f", {study.n_running - prepared} running, "
        + (f"{prepared} prepared for the next worker, " if prepared else "")
        + f"{study.n_waiting} waiting (budget {study.n_trials})"
        + (f"; {repeats} repeated candidates (= #N)" if repeats else "")
        + (f"; {len(ranks)} rank trials (rank b of #N: no training)" if ranks else "")
        + (
            f"; {students} students scored by rank jobs (no training: proxy scores)"
            if (students := study.n_derived - len(ranks)) > 0
            else ""
        ),
        "",
    ]
    metrics = [o.metric for o in study.objectives]
    tasks = list(spec.get("data", {}).get("tasks") or [spec.get("task")])
    trainer = str(spec.get("trainer", "bert"))
    extra = _read_time_columns(trials, tasks, metrics, trainer)
    shown = _last_trials(trials, limit)
    rows = []
    max_steps = spec.get("recipe", {}).get("max_steps")
    searched = list(spec.get("data_space") or {})
    for t in shown:
        pruned = pruned_metrics(t, metrics[0], trainer)
        vals = [t.metrics.get(m, pruned.get(m, "")) for m in metrics]
        # objectives that are aggregates are the trial's values, not raw metrics
        vals = [
            t.values[i] if v == "" and t.state == pb.COMPLETE and i < len(t.values) else v
            for i, v in enumerate(vals)
        ]
        rows.append(
            [
                t.number,
                "PREPARED" if is_prepared(t) else TRIAL_STATE_NAMES[t.state],
                *vals,
                *(col.get(t.number, "") for col in extra.values()),
                describe(
                    ranks[t.number][1].candidate_json, ranks[t.number][1].description, searched
                )
                if t.number in ranks
                else describe(t.candidate_json, t.description, searched),
                t.attempt or "",
                _duration(t),
                trial_note(t, max_steps, ranks.get(t.number)),
            ]
        )
    headers = ["#", "state", *metrics, *extra, "architecture", "retry", "time", "note"]
    out.append(table(headers, rows))
    if len(trials) > len(shown):
        out.append(f"  ({len(trials) - len(shown)} more trials not shown; --limit N or --json)")
    if reasons := failure_reasons(shown):
        out += ["", "why trials failed:", *reasons]
    warnings = trial_warnings(trials)  # every trial's, shown in the table or not
    if dev := dev_data_warning(trials):
        warnings.insert(0, dev)
    if warnings:
        out += ["", "warnings from the workers:", *warnings]
    if study.best_trials:
        label = "best trial" if len(study.objectives) == 1 else "Pareto front"
        # a table space trains the table row nearest the loop's suggestion (mapped_from)
        table_space = spec.get("space") == "table-rows" or (
            spec.get("space") == "flexibert-small" and spec.get("space_options", {}).get("table")
        )
        mapped = "  (the loop's suggestion; the table row trained is above)" if table_space else ""
        out.append("")
        out.append(f"{label}:")
        for t in study.best_trials:
            shown_values = "  ".join(
                f"{m}={v:.4f}" for m, v in zip(metrics, t.values, strict=False)
            )
            rank = ranks.get(t.number)
            what = describe(
                (rank[1] if rank else t).candidate_json,
                (rank[1] if rank else t).description,
                searched,
            )
            what += f"  ({trial_note(t, rank=rank)})" if rank else ""
            out.append(f"  #{t.number}  {shown_values}  {what}")
            out.append(f"      params {t.params_json}{mapped}")
    if study.best_trials_left_out:
        out.append(
            f"  ({study.best_trials_left_out} more left out so the answer fits the message "
            "size limit; show --json lists every trial)"
        )
    return "\n".join(out)
