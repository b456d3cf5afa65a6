"""Aggregates at read time, against values worked out by hand."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import pytest

from archsearch.spaces import (
    AGGREGATES,
    autodistil_average,
    borda_ranks,
    compute_aggregate,
    flexibert_average,
    glue_average,
    per_task_primary,
    task_scores,
)

# All nine tasks, plus a cost metric and a user's own task that every GLUE aggregate ignores.
FULL = {
    "cola.mcc": 0.40,
    "sst2.accuracy": 0.90,
    "mrpc.f1": 0.88,
    "mrpc.accuracy": 0.82,
    "stsb.pearson": 0.86,
    "stsb.spearman": 0.84,
    "qqp.f1": 0.70,
    "qqp.accuracy": 0.88,
    "mnli.accuracy": 0.80,
    "mnli.accuracy_mismatched": 0.82,
    "qnli.accuracy": 0.86,
    "rte.accuracy": 0.60,
    "wnli.accuracy": 0.56,
    "params": 4.4e6,
    "reviews.accuracy": 0.99,
}


def test_glue_average_by_hand() -> None:
    # cola .40, sst2 .90, mrpc (.88+.82)/2=.85, stsb (.86+.84)/2=.85, qqp (.70+.88)/2=.79,
    # mnli (.80+.82)/2=.81, qnli .86, rte .60, wnli .56: sum 6.62 over 9 tasks.
    assert glue_average(FULL) == pytest.approx(6.62 / 9)
    assert compute_aggregate("glue_avg", FULL) == pytest.approx(6.62 / 9)


def test_flexibert_average_by_hand() -> None:
    # mrpc max(.82,.88)=.88, stsb max(.86,.84)=.86, qqp max(.88,.70)=.88, mnli matched .80;
    # the others as GLUE: .40+.90+.88+.86+.88+.80+.86+.60+.56 = 6.74 over 9.
    assert flexibert_average(FULL) == pytest.approx(6.74 / 9)


def test_autodistil_average_by_hand() -> None:
    # mnli .80, qnli .86, qqp accuracy .88, rte .60, sst2 .90, mrpc accuracy .82, cola .40;
    # no STS-B, no WNLI: 5.26 over 7.
    assert autodistil_average(FULL) == pytest.approx(5.26 / 7)


def test_published_checks_from_the_reference() -> None:
    # BERT-Large GLUE test row: published GLUE score 80.5.
    bert_large = {
        "cola.mcc": 60.5,
        "sst2.accuracy": 94.9,
        "mrpc.f1": 89.3,
        "mrpc.accuracy": 85.4,
        "stsb.pearson": 87.6,
        "stsb.spearman": 86.5,
        "qqp.f1": 72.1,
        "qqp.accuracy": 89.3,
        "mnli.accuracy": 86.7,
        "mnli.accuracy_mismatched": 85.9,
        "qnli.accuracy": 92.7,
        "rte.accuracy": 70.1,
        "wnli.accuracy": 65.1,
    }
    assert round(glue_average(bert_large), 1) == 80.5
    # MiniLM-6x768 row of the AutoDistil table: printed mean 81.0.
    minilm = {
        "mnli.accuracy": 84.0,
        "qnli.accuracy": 91.0,
        "qqp.accuracy": 91.0,
        "rte.accuracy": 71.5,
        "sst2.accuracy": 92.0,
        "mrpc.accuracy": 88.4,
        "cola.mcc": 49.2,
    }
    assert round(autodistil_average(minilm), 1) == 81.0


def test_mean_over_present_tasks() -> None:
    two = {"sst2.accuracy": 0.9, "cola.mcc": 0.3, "train_seconds": 12.0}
    for name in AGGREGATES:
        assert compute_aggregate(name, two) == pytest.approx(0.6)
    assert glue_average({"stsb.pearson": 0.8, "stsb.spearman": 0.6}) == pytest.approx(0.7)
    assert flexibert_average({"stsb.pearson": 0.8, "stsb.spearman": 0.6}) == pytest.approx(0.8)
    assert task_scores("glue_avg", FULL)["mnli"] == pytest.approx(0.81)


def test_partial_tasks_lenient_and_strict() -> None:
    only_f1 = {"mrpc.f1": 0.8, "sst2.accuracy": 0.9}
    assert glue_average(only_f1) == pytest.approx(0.85)  # mrpc scores the F1 it has
    with pytest.raises(ValueError, match=r"mrpc.*'mrpc.accuracy'.*missing"):
        glue_average(only_f1, strict=True)
    # AutoDistil reads MRPC accuracy only: with just F1 stored, MRPC is not present.
    assert autodistil_average(only_f1) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="strict"):
        autodistil_average(only_f1, strict=True)
    with pytest.raises(ValueError, match="accuracy_mismatched"):
        glue_average({"mnli.accuracy": 0.8}, strict=True)


def test_errors() -> None:
    with pytest.raises(ValueError, match="unknown aggregate 'glue'; known: glue_avg"):
        compute_aggregate("glue", FULL)
    with pytest.raises(ValueError, match="no task it averages is present"):
        compute_aggregate("glue_avg", {"params": 1.0, "reviews.accuracy": 0.5})
    with pytest.raises(ValueError, match="glue_avg_autodistil: no task"):
        autodistil_average({"stsb.pearson": 0.9, "wnli.accuracy": 0.5})
    with pytest.raises(ValueError, match=r"'sst2\.accuracy' is not finite"):
        glue_average({"sst2.accuracy": math.nan})
    with pytest.raises(ValueError, match="not a number"):
        glue_average({"sst2.accuracy": "0.9"})  # type: ignore[dict-item]


def test_per_task_primary() -> None:
    assert per_task_primary(FULL) == {
        "cola": 0.40,
        "sst2": 0.90,
        "mrpc": 0.88,  # f1
        "stsb": 0.86,  # pearson
        "qqp": 0.70,  # f1
        "mnli": 0.80,  # matched
        "qnli": 0.86,
        "rte": 0.60,
        "wnli": 0.56,
        "reviews": 0.99,  # a custom task: accuracy first
    }
    custom = {"reviews.f1_macro": 0.5, "reviews.accuracy": 0.7, "scores.spearman": 0.3}
    assert per_task_primary(custom) == {"reviews": 0.7, "scores": 0.3}
    assert per_task_primary(custom, {"reviews": "f1_macro"}) == {"reviews": 0.5, "scores": 0.3}
    assert per_task_primary({"mrpc.accuracy": 0.8}) == {}  # primary f1 absent


def _system(sst2: float, cola: float, mrpc_f1: float, mrpc_acc: float) -> dict[str, float]:
    return {
        "sst2.accuracy": sst2,
        "cola.mcc": cola,
        "mrpc.f1": mrpc_f1,
        "mrpc.accuracy": mrpc_acc,
    }


# MRPC accuracy ranks the systems the other way round from F1: ranking must use F1 (primary).
A = _system(0.90, 0.30, 0.80, 0.60)
B = _system(0.85, 0.50, 0.70, 0.99)
C = _system(0.85, 0.40, 0.90, 0.50)


def test_borda_three_systems_with_a_tie() -> None:
    # sst2: A beats B and C (2); B and C tie (0.5 each).
    # cola: B beats A and C (2); C beats A (1); A 0.
    # mrpc f1: C 2, A 1, B 0.
    # Totals: A 3, B 2.5, C 3.5 (9 points = 3 tasks x 3 pairs).
    assert borda_ranks([A, B, C], ["sst2", "cola", "mrpc"]) == [3.0, 2.5, 3.5]
    # Lower is better: every comparison flips (ties stay ties).
    assert borda_ranks([A, B, C], ["sst2", "cola", "mrpc"], higher_is_better=False) == [
        3.0,
        3.5,
        2.5,
    ]
    # An explicit metric key ranks on that metric: accuracy C .50 < A .60 < B .99.
    assert borda_ranks([A, B, C], ["mrpc.accuracy"]) == [1.0, 2.0, 0.0]


def test_borda_missing_scores() -> None:
    d: dict[str, float] = {"sst2.accuracy": 0.95}  # no cola
    systems = [A, B, C, d]
    # skip: sst2 D 3, A 2, B 0.5, C 0.5; cola ranks A, B, C only: A 0, B 2, C 1.
    assert borda_ranks(systems, ["sst2", "cola"]) == [2.0, 2.5, 1.5, 3.0]
    # worst: on cola, D ranks below all: A 1, B 3, C 2, D 0.
    assert borda_ranks(systems, ["sst2", "cola"], missing="worst") == [3.0, 3.5, 2.5, 3.0]
    # Two systems missing the task tie at the bottom with half a point each.
    e: dict[str, float] = {}
    assert borda_ranks([A, d, e], ["cola"], missing="worst") == [2.0, 0.5, 0.5]
    assert borda_ranks([A, d, e], ["cola"]) == [0.0, 0.0, 0.0]


def test_borda_errors() -> None:
    assert borda_ranks([], ["sst2"]) == []
    with pytest.raises(ValueError, match="at least one task"):
        borda_ranks([A], [])
    with pytest.raises(ValueError, match="'skip' or 'worst'"):
        borda_ranks([A], ["sst2"], missing="drop")


def test_importing_needs_no_torch() -> None:
    code = (
        "import sys, archsearch.spaces\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result: Any = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
