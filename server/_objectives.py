"""Objectives: a trial's objective values from its raw metrics, and the checks of what a worker
reports before anything is stored (DESIGN.md principle 5: raw metrics are stored as reported,
aggregates computed from them here, the one place that reads them for the objective)."""

from __future__ import annotations

import math
import re

from archsearch.server._errors import InvalidArgument
from archsearch.server._spec import AGGREGATE_METRICS, SearchSpec

#: Metrics per report: a DyLoRA trial reports a few per rank scored, prefixed and not (r_max 64
#: on MRPC: about 420), so the bound is generous; it guards only against absurd reports.
MAX_METRICS = 2048
#: A reported metric: a metric name, or one at a label (``accuracy@r4``: DyLoRA's rank 4, see
#: ``TrainerInfo.labelled_metrics`` and ``_rank_trials``).
REPORTED_METRIC_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,63}(@[A-Za-z0-9_.]{1,32})?\Z")
MAX_INFO = 64
MAX_TEXT = 2000


def check_finite(name: str, value: float) -> None:
    """Refuses anything but a finite int or float (``bool`` included in the refusal).

    Raises:
        InvalidArgument: ``value`` is not a finite number; the message names ``name``.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number, got {value!r}")


def checked_report(metrics: dict[str, float], info: dict[str, str]) -> dict[str, float]:
    """Validates a final report's metrics and provenance; returns the metrics as floats.

    Raises:
        InvalidArgument: too many metrics or info entries, a malformed metric name, a metric
            that is not a finite number, or an oversized info key or value.
    """
    if len(metrics) > MAX_METRICS:
        raise InvalidArgument(f"at most {MAX_METRICS} metrics per trial, got {len(metrics)}")
    for k, v in metrics.items():
        if not REPORTED_METRIC_RE.match(k):
            raise InvalidArgument(
                f"invalid metric name {k!r}: letters, digits, '_' and '.', optionally "
                "followed by '@<label>' (a metric at one rank: accuracy@r4)"
            )
        check_finite(f"metric {k!r}", v)
    if len(info) > MAX_INFO or any(len(k) > 128 or len(v) > MAX_TEXT for k, v in info.items()):
        raise InvalidArgument(
            f"info: at most {MAX_INFO} entries, keys <= 128 and values <= {MAX_TEXT} characters"
        )
    for k in info:
        if not k or not k.isprintable():
            raise InvalidArgument(f"info key {k!r}: must be non-empty printable text, one line")
    return {k: float(v) for k, v in metrics.items()}


def objective_values(spec: SearchSpec, metrics: dict[str, float]) -> list[float]:
    """The study's objective values from a trial's raw metrics, in the spec's objective order.

    Returns:
        One value per objective of ``spec``: the raw metric, or the aggregate (a GLUE
        average) computed from the raw metrics.

    Raises:
        InvalidArgument: an objective's metric is missing, or its aggregate cannot be computed.
    """
    from archsearch.spaces import compute_aggregate

    values = []
    for o in spec.objectives:
        if o.metric in AGGREGATE_METRICS:
            try:
                values.append(compute_aggregate(o.metric, metrics))
            except ValueError as e:
                raise InvalidArgument(f"cannot compute objective {o.metric}: {e}") from e
        elif o.metric in metrics:
            values.append(metrics[o.metric])
        else:
            raise InvalidArgument(
                f"metrics lack the objective {o.metric!r} of study {spec.name}; "
                f"got {sorted(metrics)}"
            )
    return values
