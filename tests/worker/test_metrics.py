"""GLUE metrics against values worked out by hand from their definitions."""

from __future__ import annotations

import math

import pytest

from archsearch.spaces import GLUE_TASKS
from archsearch.worker import compute_metrics, primary_metric

# Binary case: TP = 3 (0, 2, 7), FN = 2 (1, 6), FP = 1 (4), TN = 2 (3, 5).
Y_TRUE = [1, 1, 1, 0, 0, 0, 1, 1]
Y_PRED = [1, 0, 1, 0, 1, 0, 0, 1]
TP, TN, FP, FN = 3, 2, 1, 2


def test_mcc_matches_formula() -> None:
    expected = (TP * TN - FP * FN) / math.sqrt((TP + FP) * (TP + FN) * (TN + FP) * (TN + FN))
    assert compute_metrics("cola", Y_PRED, Y_TRUE) == {"mcc": pytest.approx(expected)}


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_f1_and_accuracy(task: str) -> None:
    precision, recall = TP / (TP + FP), TP / (TP + FN)
    f1 = 2 * precision * recall / (precision + recall)
    assert compute_metrics(task, Y_PRED, Y_TRUE) == {
        "f1": pytest.approx(f1),
        "accuracy": pytest.approx((TP + TN) / len(Y_TRUE)),
    }


@pytest.mark.parametrize("task", ["sst2", "qnli", "rte", "wnli"])
def test_accuracy(task: str) -> None:
    assert compute_metrics(task, Y_PRED, Y_TRUE) == {"accuracy": pytest.approx(5 / 8)}


def test_three_class_accuracy() -> None:
    assert compute_metrics("mnli", [0, 1, 2, 2], [0, 1, 1, 2]) == {"accuracy": 0.75}


def test_pearson_and_spearman() -> None:
    pred, gold = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    # Pearson: deviations (-2, -1, 0, 1, 2) and (-1, -2, 1, 0, 2): 8 / sqrt(10 * 10).
    # Spearman: rank differences (-1, 1, -1, 1, 0): 1 - 6 * 4 / (5 * (25 - 1)).
    assert compute_metrics("stsb", pred, gold) == {
        "pearson": pytest.approx(0.8),
        "spearman": pytest.approx(1 - 24 / 120),
    }


def test_undefined_values_become_zero() -> None:
    # Constant predictions: correlations and MCC are undefined (NaN in scipy), scored 0.0.
    assert compute_metrics("stsb", [2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == {
        "pearson": 0.0,
        "spearman": 0.0,
    }
    assert compute_metrics("cola", [1, 1, 1, 1], [0, 1, 0, 1]) == {"mcc": 0.0}
    assert compute_metrics("mrpc", [0, 0, 0, 0], [0, 1, 0, 1])["f1"] == 0.0


@pytest.mark.parametrize("task", list(GLUE_TASKS))
def test_values_are_plain_floats(task: str) -> None:
    values = compute_metrics(task, [0, 1, 1, 0], [0, 1, 0, 0])
    assert values and all(type(v) is float and math.isfinite(v) for v in values.values())
    assert primary_metric(task) in values


def test_primary_metrics() -> None:
    expected = {"cola": "mcc", "stsb": "pearson", "mrpc": "f1", "qqp": "f1"}
    for task in GLUE_TASKS:
        assert primary_metric(task) == expected.get(task, "accuracy")


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="equally long"):
        compute_metrics("sst2", [0, 1], [0])
    with pytest.raises(ValueError, match="non-empty"):
        compute_metrics("sst2", [], [])
    with pytest.raises(ValueError, match="unknown GLUE task"):
        compute_metrics("squad", [0], [0])
