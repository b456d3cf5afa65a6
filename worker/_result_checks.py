"""What a trainer hands the worker, checked before it goes to the server: a trainer's mistake
(a NaN, a negative step, a metric that is not a number) fails its trial at once with the
reason, not retried, instead of reaching the server as a refused call (the worker then lost
the trial, and the server failed it a lease later as "no heartbeat", and retried it)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from archsearch.worker._trainer import CandidateError, TrainResult

#: the largest step the server stores
MAX_STEP = 2**62 - 1


def check_report(step: Any, value: Any) -> None:
    """An intermediate report: a whole step in 0..2**62-1 and a finite number.

    Raises:
        CandidateError: saying which, with the call.
    """
    call = f"context.report({step!r}, {value!r})"
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        raise CandidateError(f"{call}: the step must be a whole number >= 0")
    if not _finite(value):
        raise CandidateError(f"{call}: the value must be a finite number")


def checked_metrics(result: Any, objectives: Sequence[str] = ()) -> dict[str, float]:
    """A trainer's result's metrics as floats.

    Raises:
        CandidateError: ``train`` returned no TrainResult, or a metric is not a finite number
            (a diverged model's NaN: the objective first, when one is).
    """
    if not isinstance(result, TrainResult):
        raise CandidateError(f"train returned {type(result).__name__}, not a TrainResult")
    if not isinstance(result.metrics, dict) or not result.metrics:
        raise CandidateError("train returned no metrics (TrainResult.metrics is empty)")
    bad = [str(k) for k, v in result.metrics.items() if not _finite(v)]
    if bad:
        bad.sort(key=lambda k: k not in objectives)
        shown = ", ".join(f"{k}={result.metrics[k]!r}" for k in bad[:5])
        raise CandidateError(f"metrics must be finite numbers; got {shown}")
    return {str(k): float(v) for k, v in result.metrics.items()}


def _finite(value: Any) -> bool:
    """A finite number: an int or float (numpy's and torch's scalars too), not a bool (numpy's
    and torch's neither), not text that ``float`` would read ("0.9" is a trainer's mistake,
    not a score), not an array or tensor (one of one element too: which number is meant?)."""
    if isinstance(value, bool | str | bytes | bytearray | memoryview):
        return False
    if tuple(getattr(value, "shape", ())) != ():  # arrays, tensors
        return False
    if "bool" in str(getattr(value, "dtype", "")):  # numpy.bool_, a torch bool tensor
        return False
    kind = getattr(getattr(value, "dtype", None), "kind", None)  # numpy's: text is "U" or "S"
    if kind is not None and kind not in ("i", "u", "f"):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        return False
