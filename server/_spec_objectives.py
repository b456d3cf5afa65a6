"""A spec's objectives: metric names, directions (a bare cost is refused: it would be
maximized), and the JSON reading every spec shares (a key given twice is an error)."""

from __future__ import annotations

import re
from typing import Any

from archsearch.server._spec_checks import Objective
from archsearch.spaces import SpecError

METRIC_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,63}\Z")


def _fix(metric: Any) -> str:
    """How to write an objective's metric instead of ``metric``."""
    if isinstance(metric, str) and "@" in metric:
        base = metric.partition("@")[0] or "accuracy"
        return (
            f"use {base!r}: each DyLoRA rank or AutoDistil student is stored as its own trial, "
            f"whose {base!r} is its value at that rank or for that student"
        )
    return "letters, digits, '_' and '.' (a task's metric: 'sst2.accuracy'), e.g. 'accuracy'"


#: metrics that measure a cost (size, time, memory, loss): an objective on one must say its
#: direction, since a bare name means maximize
_COSTS = frozenset(
    {
        *("params", "params_no_embeddings", "trainable_params", "flops", "peak_train_memory_mb"),
        *("train_seconds", "eval_samples", "pretrain_seconds", "crowd_seconds"),
    }
)


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s object hook: a key given twice is an error (the last one would win
    without a word)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _is_cost(metric: str) -> bool:
    base = metric.rsplit(".", 1)[-1]
    return base in _COSTS or base.startswith("latency") or base.endswith("loss")


def parse_objectives(raw: Any) -> tuple[Objective, ...]:
    if not isinstance(raw, list) or not raw:
        raise SpecError("objectives", 'must be a non-empty list of {"metric", "direction"}')
    out: list[Objective] = []
    for i, o in enumerate(raw):
        if isinstance(o, str):  # "accuracy:max" shorthand
            name, colon, d = o.partition(":")
            o = {"metric": name, "direction": d} if colon else {"metric": name}
        if not isinstance(o, dict) or set(o) - {"metric", "direction"}:
            raise SpecError(f"objectives[{i}]", 'must be {"metric": ..., "direction": ...}')
        metric = o.get("metric")
        if not isinstance(metric, str) or not METRIC_RE.match(metric):
            raise SpecError(
                f"objectives[{i}].metric", f"invalid metric name {metric!r}", _fix(metric)
            )
        if "direction" not in o and _is_cost(metric):
            raise SpecError(
                f"objectives[{i}]",
                f"{metric!r} is a cost, and an objective without a direction is maximized",
                f"say which way: '{metric}:min'",
            )
        direction = o.get("direction", "maximize")
        if isinstance(direction, str):
            direction = direction.strip().lower()
            direction = {"max": "maximize", "min": "minimize"}.get(direction, direction)
        if direction not in ("maximize", "minimize"):
            raise SpecError(
                f"objectives[{i}].direction", f"{direction!r}", "maximize (max) or minimize (min)"
            )
        out.append(Objective(metric, direction))
    metrics = [o.metric for o in out]
    if len(set(metrics)) != len(metrics):
        raise SpecError("objectives", f"metric listed twice: {metrics}")
    return tuple(out)
