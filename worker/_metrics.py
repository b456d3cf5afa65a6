"""Task metrics, computed with scikit-learn and scipy (DESIGN.md: do not rewrite them).

Metric names, exactly as results carry them (a multi-task result prefixes ``<task>.``):

- GLUE: cola ``mcc``; stsb ``pearson``, ``spearman``; mrpc and qqp ``f1``, ``accuracy``; mnli
  ``accuracy`` on the matched dev split (the trainer adds ``accuracy_mismatched`` for the
  mismatched one); sst2, qnli, rte, wnli ``accuracy``.
- Custom tasks (:class:`~archsearch.spaces.CustomTask`): classification ``accuracy``
  with ``f1`` (two classes; the positive class is label index 1) or ``f1_macro`` (more);
  regression ``pearson``, ``spearman``; or the metrics the task declares (``mcc`` allowed too).

scikit-learn and scipy are imported inside :func:`compute_metrics`: they belong to the
``worker`` extra, and ``archsearch.worker`` (which re-exports this module) must stay importable
on a machine with only the core dependencies.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from archsearch.worker._task_info import TaskRef, resolve_task


def primary_metric(task: TaskRef) -> str:
    """The metric ``task`` is ranked by (GLUE: cola mcc, stsb pearson, mrpc/qqp f1, else
    accuracy; a custom task: its first metric)."""
    return resolve_task(task).primary_metric


def metric_names(task: TaskRef) -> tuple[str, ...]:
    """Names of the metrics :func:`compute_metrics` returns for ``task``."""
    return resolve_task(task).metrics


def compute_metrics(
    task: TaskRef, predictions: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """Scores predictions against gold labels with the task's metrics.

    Args:
        task: GLUE task id, a :class:`GlueTask`, or a :class:`CustomTask` (or its declaration).
        predictions: Class indices, or scores for regression.
        labels: Gold class indices, or gold scores for regression.

    Returns:
        Metric name to plain Python float, in the task's metric order: cola ``mcc``; stsb
        ``pearson`` and ``spearman``; mrpc/qqp ``f1`` (positive class 1) and ``accuracy``;
        every other GLUE task ``accuracy``; custom tasks see the module docstring. Undefined
        values (constant predictions) are 0.0.

    Raises:
        ValueError: Unknown task, or predictions and labels empty or of different lengths.
    """
    from sklearn import metrics as skm

    t = resolve_task(task)
    y_pred = np.asarray(predictions)
    y_true = np.asarray(labels)
    if y_pred.shape != y_true.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(
            f"need two equally long, non-empty 1-d arrays; got predictions {y_pred.shape} and "
            f"labels {y_true.shape}"
        )
    out: dict[str, float] = {}
    if t.is_regression:
        from scipy import stats

        correlations = {"pearson": stats.pearsonr, "spearman": stats.spearmanr}
        for name in t.metrics:
            out[name] = _correlation(correlations[name], y_pred, y_true)
        return out
    y_pred = y_pred.astype(np.int64)
    y_true = y_true.astype(np.int64)
    for name in t.metrics:
        if name == "mcc":
            out[name] = _finite(skm.matthews_corrcoef(y_true, y_pred))
        elif name == "f1":
            # zero_division=0: a model that never predicts the positive class scores 0, silently.
            out[name] = _finite(skm.f1_score(y_true, y_pred, pos_label=1, zero_division=0.0))
        elif name == "f1_macro":
            # Unweighted mean over the classes in the gold labels or the predictions.
            out[name] = _finite(skm.f1_score(y_true, y_pred, average="macro", zero_division=0.0))
        elif name == "accuracy":
            out[name] = _finite(skm.accuracy_score(y_true, y_pred))
        else:  # pragma: no cover - registry and validation only name the metrics above
            raise ValueError(f"no implementation for metric {name!r}")
    return out


def _correlation(fn: Callable[..., Any], y_pred: np.ndarray, y_true: np.ndarray) -> float:
    from scipy import stats

    # Constant predictions (common for an untrained or collapsed model) make a correlation
    # undefined: scipy warns and returns NaN. We score them 0.0 ("no linear/rank relation"),
    # the same convention sklearn's matthews_corrcoef uses, because trial metrics must be
    # finite and a collapsed model deserves the score of an uninformative one.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        result = fn(y_pred.astype(np.float64), y_true.astype(np.float64))
    return _finite(result[0])


def _finite(value: Any) -> float:
    """Plain float, with NaN mapped to 0.0 (see ``_correlation`` for why)."""
    number = float(value)
    return 0.0 if math.isnan(number) else number
