"""Aggregate GLUE scores, computed at read time from a trial's raw per-task metrics.

Workers store raw metrics only (DESIGN.md principle 5); the papers average them differently
(``../shared/reference/algorithms.md`` §0), so each convention is a function here. Pure Python
with no third-party imports: the server and the benchmarks import it through
``archsearch.spaces``.

Raw metrics of a (multi-task) trial are one flat dict keyed ``"<task>.<metric>"``::

    {"sst2.accuracy": 0.91, "mrpc.f1": 0.88, "mrpc.accuracy": 0.84,
     "mnli.accuracy": 0.80, "mnli.accuracy_mismatched": 0.81, "cola.mcc": 0.41,
     "stsb.pearson": 0.86, "stsb.spearman": 0.85, ...}

Keys without a dot (cost metrics such as ``params``) and tasks an aggregate does not cover (a
user's own task) are ignored. Every aggregate is on the metrics' own 0–1 scale (multiply by
100 to compare with the papers' tables); CoLA's MCC may be negative.

Tasks missing from a trial: every aggregate is the mean over the tasks it covers that are
present, so a single-task study's aggregate is that task's score. A task is present when at
least one metric its rule reads is present; by default (``strict=False``) a rule combines the
metrics it finds (MRPC with only ``f1`` stored scores its F1). With ``strict=True`` a present
task lacking any metric its rule reads is a ValueError naming the missing keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from archsearch.spaces._tasks import GLUE_TASK_IDS, GLUE_TASKS

#: The metric GLUE ranks each task by (matches ``GlueTask.primary_metric``).
GLUE_PRIMARY_METRIC = {task.id: task.primary_metric for task in GLUE_TASKS.values()}
# Primary metric of a task not in GLUE (a user's own task) when none is given: the first of
# these that the trial has. Custom tasks list accuracy or pearson first by default.
_FALLBACK_PRIMARY = ("accuracy", "pearson", "f1_macro", "f1", "mcc", "spearman")

Metrics = Mapping[str, float]
_Combine = Callable[[Sequence[float]], float]
#: A per-task rule: how to combine which of the task's metrics into its score.
Rule = tuple[_Combine, tuple[str, ...]]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _one(metric: str) -> Rule:
    return (_mean, (metric,))


#: Official GLUE: a two-metric task is the mean of both, MNLI the mean of m and mm.
GLUE_RULES: dict[str, Rule] = {
    "cola": _one("mcc"),
    "sst2": _one("accuracy"),
    "mrpc": (_mean, ("f1", "accuracy")),
    "stsb": (_mean, ("pearson", "spearman")),
    "qqp": (_mean, ("f1", "accuracy")),
    "mnli": (_mean, ("accuracy", "accuracy_mismatched")),
    "qnli": _one("accuracy"),
    "rte": _one("accuracy"),
    "wnli": _one("accuracy"),
}
#: FlexiBERT's ``glue_score.py``: max of the two metrics; MNLI is HF run_glue's matched
#: ``eval_accuracy``; all nine tasks, WNLI included.
FLEXIBERT_RULES: dict[str, Rule] = {
    **GLUE_RULES,
    "mrpc": (max, ("accuracy", "f1")),
    "stsb": (max, ("pearson", "spearman")),
    "qqp": (max, ("accuracy", "f1")),
    "mnli": _one("accuracy"),
}
#: AutoDistil / MiniLM tables: seven tasks (no STS-B, no WNLI), accuracy everywhere (MNLI
#: matched, MRPC and QQP accuracy, not F1) except CoLA's MCC.
AUTODISTIL_RULES: dict[str, Rule] = {
    "mnli": _one("accuracy"),
    "qnli": _one("accuracy"),
    "qqp": _one("accuracy"),
    "rte": _one("accuracy"),
    "sst2": _one("accuracy"),
    "mrpc": _one("accuracy"),
    "cola": _one("mcc"),
}
#: Each aggregate's rules, by aggregate name.
AGGREGATE_RULES: dict[str, dict[str, Rule]] = {
    "glue_avg": GLUE_RULES,
    "glue_avg_flexibert": FLEXIBERT_RULES,
    "glue_avg_autodistil": AUTODISTIL_RULES,
}


def split_metrics(metrics: Metrics) -> dict[str, dict[str, float]]:
    """``{"mrpc.f1": x}`` -> ``{"mrpc": {"f1": x}}``; keys without a dot are left out.

    Raises:
        ValueError: A value is not a finite number (the key is named).
    """
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        task, dot, metric = key.partition(".")
        if not dot:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"metric {key!r} is not a number: {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"metric {key!r} is not finite: {value!r}")
        out.setdefault(task, {})[metric] = float(value)
    return out


def task_scores(name: str, metrics: Metrics, strict: bool = False) -> dict[str, float]:
    """Each covered, present task's score under aggregate ``name`` (see the module docstring).

    Raises:
        ValueError: Unknown aggregate; a non-finite value; with ``strict``, a present task
            lacking a metric its rule reads.
    """
    rules = _rules(name)
    by_task = split_metrics(metrics)
    scores: dict[str, float] = {}
    for task, (combine, needed) in rules.items():
        stored = by_task.get(task)
        if not stored:
            continue
        missing = [m for m in needed if m not in stored]
        if strict and missing:
            keys = [f"{task}.{m}" for m in missing]
            raise ValueError(f"{name}: {task} is present but {keys} missing (strict mode)")
        values = [stored[m] for m in needed if m in stored]
        if values:
            scores[task] = combine(values)
    return scores


def compute_aggregate(name: str, metrics: Metrics, strict: bool = False) -> float:
    """The aggregate ``name`` ("glue_avg", "glue_avg_flexibert", "glue_avg_autodistil").

    Raises:
        ValueError: Unknown name (the known ones are listed); none of the tasks the
            aggregate covers is present; a non-finite value; a strict-mode gap.
    """
    scores = task_scores(name, metrics, strict)
    if not scores:
        covered = ", ".join(f"{t}.{'/'.join(r[1])}" for t, r in AGGREGATE_RULES[name].items())
        raise ValueError(
            f"{name}: no task it averages is present; it reads {covered}, the trial has "
            f"{sorted(metrics) or 'no metrics'}"
        )
    return _mean(list(scores.values()))


def glue_average(metrics: Metrics, strict: bool = False) -> float:
    """The official GLUE average over the GLUE tasks present, on a 0–1 scale.

    Per task: CoLA MCC; MRPC and QQP (F1 + accuracy) / 2; STS-B (Pearson + Spearman) / 2;
    MNLI (matched + mismatched accuracy) / 2; SST-2, QNLI, RTE, WNLI accuracy. Then the plain
    mean over the tasks present (all nine, WNLI included, for the leaderboard score).
    """
    return compute_aggregate("glue_avg", metrics, strict)


def flexibert_average(metrics: Metrics, strict: bool = False) -> float:
    """FlexiBERT's GLUE score (``flexibert/glue_score.py``), on a 0–1 scale.

    Per task: STS-B max(Pearson, Spearman); MRPC and QQP max(accuracy, F1); MNLI matched
    accuracy only (HF run_glue's ``eval_accuracy``); CoLA MCC; SST-2, QNLI, RTE, WNLI accuracy.
    Then the mean over the tasks present (divided by 9 when all nine are, as in the paper).
    """
    return compute_aggregate("glue_avg_flexibert", metrics, strict)


def autodistil_average(metrics: Metrics, strict: bool = False) -> float:
    """The AutoDistil / MiniLM table average, on a 0–1 scale.

    Seven tasks: MNLI (matched accuracy), QNLI, QQP, RTE, SST-2, MRPC (all accuracy, never
    F1) and CoLA (MCC); no STS-B, no WNLI. The plain mean over those present.
    """
    return compute_aggregate("glue_avg_autodistil", metrics, strict)


#: Aggregates by name, as studies and the CLI name them.
AGGREGATES: dict[str, Callable[..., float]] = {
    "glue_avg": glue_average,
    "glue_avg_flexibert": flexibert_average,
    "glue_avg_autodistil": autodistil_average,
}


def per_task_primary(
    metrics: Metrics, primary: Mapping[str, str] | None = None
) -> dict[str, float]:
    """Each task's primary score: ``{"cola": mcc, "mrpc": f1, "mnli": accuracy, ...}``.

    GLUE tasks use GLUE's primary metric (cola ``mcc``, stsb ``pearson``, mrpc/qqp ``f1``, else
    ``accuracy``; MNLI matched). Other tasks use ``primary[task]`` if given, else the first of
    accuracy, pearson, f1_macro, f1, mcc, spearman that is present. A task whose primary metric
    is absent is left out.
    """
    out: dict[str, float] = {}
    for task, stored in split_metrics(metrics).items():
        if primary and task in primary:
            candidates: tuple[str, ...] = (primary[task],)
        elif task in GLUE_TASK_IDS:
            candidates = (GLUE_PRIMARY_METRIC.get(task, "accuracy"),)
        else:
            candidates = _FALLBACK_PRIMARY
        for metric in candidates:
            if metric in stored:
                out[task] = stored[metric]
                break
    return out


def borda_ranks(
    trials_metrics: Sequence[Metrics],
    tasks: Sequence[str],
    higher_is_better: bool = True,
    missing: str = "skip",
) -> list[float]:
    """Borda count of systems (trials) over tasks (Colombo et al., 2022, "What are the best
    systems? New perspectives on NLP benchmarking").

    Each task ranks the systems by its primary score (:func:`per_task_primary`; a task named
    ``"<task>.<metric>"`` uses that metric). A system's Borda score is the sum over tasks of
    the number of systems it beats; a tie counts half for each side ("average" ranks). With
    ``n`` systems each task hands out ``n (n - 1) / 2`` points.

    Systems without a score for a task:

    - ``missing="skip"`` (default): the task ranks only the systems that have it; the others
      get no points from it and give none away. A missing score is unknown, not bad — but a
      system evaluated on fewer tasks can collect fewer points, so compare systems evaluated
      on the same tasks.
    - ``missing="worst"``: a missing score ranks below every present one (the missing ones tie
      with each other), e.g. to punish failed evaluations.

    Args:
        trials_metrics: One flat ``"<task>.<metric>"`` dict per system.
        tasks: Task ids (or ``"<task>.<metric>"`` keys) to rank on.
        higher_is_better: Whether a larger score is better (true of all GLUE primaries).
        missing: "skip" or "worst".

    Returns:
        Borda scores, one per system in input order; higher is better.

    Raises:
        ValueError: No tasks, an unknown ``missing`` mode, or a non-finite score.
    """
    if not tasks:
        raise ValueError("borda_ranks needs at least one task")
    if missing not in ("skip", "worst"):
        raise ValueError(f"missing must be 'skip' or 'worst', got {missing!r}")
    sign = 1.0 if higher_is_better else -1.0
    primaries = [per_task_primary(m) for m in trials_metrics]
    points = [0.0] * len(trials_metrics)
    for task in tasks:
        column: list[float | None] = []
        for metrics, primary in zip(trials_metrics, primaries, strict=True):
            value = _lookup(metrics, task) if "." in task else primary.get(task)
            column.append(None if value is None else sign * value)
        present = [v for v in column if v is not None]
        absent = len(column) - len(present)
        for i, value in enumerate(column):
            if value is None:
                if missing == "worst":
                    points[i] += 0.5 * (absent - 1)
                continue
            beaten = sum(1 for v in present if v < value)
            tied = sum(1 for v in present if v == value) - 1
            points[i] += beaten + 0.5 * tied + (absent if missing == "worst" else 0)
    return points


def _lookup(metrics: Metrics, key: str) -> float | None:
    if key not in metrics:
        return None
    value = metrics[key]
    if not math.isfinite(value):
        raise ValueError(f"metric {key!r} is not finite: {value!r}")
    return float(value)


def _rules(name: str) -> dict[str, Rule]:
    try:
        return AGGREGATE_RULES[name]
    except KeyError:
        raise ValueError(
            f"unknown aggregate {name!r}; known: {', '.join(AGGREGATE_RULES)}"
        ) from None
