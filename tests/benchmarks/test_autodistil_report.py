"""``benchmarks/autodistil_rank.py``'s analysis (``_autodistil_report.py``) on synthetic
built files whose answers are known: a proxy equal to the truth ranks perfectly and picks the
best student under every budget; a reversed one ranks at -1."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _autodistil_report as report

from archsearch.spaces._students import MINILM_L6, flops, params
from archsearch.spaces._subspaces import preset


def _built(sign: float) -> dict[str, Any]:
    rng = random.Random(0)
    students = {
        s.key(): (space.name, s)
        for space in preset("minilm-k3", MINILM_L6)
        for s in space.students(MINILM_L6)
    }
    truth = {key: rng.uniform(60, 90) for key in students}
    proxies = {
        key: {
            "P1_relation": sign * truth[key] + rng.gauss(0, 0.01),
            "P2_task": sign * truth[key],
            "P2_task:sst2": sign * truth[key],
            "P3_params": float(params(MINILM_L6, s)),
            "P4_flops": float(flops(MINILM_L6, s)),
            "P5_teacher_relation": rng.random(),
        }
        for key, (_, s) in students.items()
    }
    return {
        "settings": {
            "steps": 5,
            "batch": 4,
            "proxy_steps": 3,
            "proxy_students": 8,
            "heldout": 10,
            "truth_steps": 7,
            "sandwich": 4,
        },
        "teacher_flops": report.TEACHER_FLOPS,
        "students": report.minilm_students(),
        "proxies": {"K3": proxies, "K1": {}},
        "truth": {key: {"sst2": [truth[key] - 1, truth[key] + 1]} for key in students},
    }


def test_a_proxy_equal_to_the_truth_ranks_perfectly_and_picks_the_best() -> None:
    data = _built(1.0)
    lines, pooled = report.correlations(data)
    assert pooled[("K3", "P2_task")] == pytest.approx(1.0)
    assert abs(pooled[("K3", "P3_params")]) < 0.6  # the truth is random in the size
    assert ("K1", "P2_task") not in pooled  # K = 1 was not run
    assert any(line.startswith("| P2_task | τ +1.00") for line in lines)
    budgets = report.pooled_budgets(data)
    assert budgets == sorted(budgets) and budgets[-1] == max(
        s["flops"] for s in data["students"].values()
    )
    _, regret = report.regrets(data)
    assert regret["P2_task"] == [0.0, 0.0, 0.0]
    assert all(r >= 0 for r in regret["largest_fits"])
    compute, worst = report.compute_comparison(data, "sst2", {"random": 3})
    assert len([line for line in compute if line.startswith("| ≤")]) == 3
    # the perfect proxy's top 3 hold the best: random search must find that very student
    assert 0 < worst["random"] < float("inf")
    goals, passed = report.goals(pooled, regret, worst)
    assert len(goals) == 4 and not passed  # K = 1 was not run: that goal cannot pass
    assert goals[0].startswith("- **PASS**") and goals[1].startswith("- **FAIL**")


def test_a_proxy_constant_within_a_group_says_so() -> None:
    # as a short task proxy whose tiny students all predict the majority class
    data = _built(1.0)
    for key, info in data["students"].items():
        if info["subspace"] == "tiny":
            data["proxies"]["K3"][key]["P2_task"] = 0.5
    lines, pooled = report.correlations(data)
    (row,) = [line for line in lines if line.startswith("| P2_task |")]
    tiny, small = row.split(" | ")[1:3]
    assert tiny == "τ constant ρ constant" and small.startswith("τ +1.00")
    assert 0.5 < pooled[("K3", "P2_task")] < 1.0  # pooled, the groups still order


def test_a_reversed_proxy_ranks_at_minus_one_and_fails() -> None:
    data = _built(-1.0)
    _, pooled = report.correlations(data)
    assert pooled[("K3", "P2_task")] == pytest.approx(-1.0)
    _, regret = report.regrets(data)
    assert max(regret["P2_task"]) > 1.0  # it picks the worst student that fits
    goals, _ = report.goals(pooled, regret, {"tpe": 0.1})
    assert goals[0].startswith("- **FAIL**") and goals[3].startswith("- **PASS**")


def test_per_task_correlations_rank_each_task_by_its_own_truth() -> None:
    # A second task whose truth is the first's reversed: the task proxy (scored on each task)
    # ranks both perfectly, a task-blind proxy that follows the first task is -1 on the second.
    data = _built(1.0)
    for key, per_task in data["truth"].items():
        per_task["mrpc"] = [-v for v in per_task["sst2"]]
        data["proxies"]["K3"][key]["P2_task:mrpc"] = -data["proxies"]["K3"][key]["P2_task"]
    lines = report.per_task(data)
    assert lines[2] == "| proxy | K3 mrpc | K3 sst2 |"
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in lines[4:-1]}
    assert rows["P2_task"][0].startswith("+1.00") and rows["P2_task"][1].startswith("+1.00")
    assert rows["P1_relation"][0].startswith("-1.00")
    assert rows["P1_relation"][1].startswith("+1.00")


def test_the_vectorised_correlations_are_scipys() -> None:
    from scipy import stats

    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, size=(6, 12)).astype(float)  # ties, as in rounded scores
    y = x + rng.normal(0, 2, size=x.shape)
    for row in range(len(x)):
        tau = stats.kendalltau(x[row], y[row], variant="b").statistic
        rho = stats.spearmanr(x[row], y[row]).statistic
        assert report.tau_b(x, y)[row] == pytest.approx(tau)
        assert report.spearman(x, y)[row] == pytest.approx(rho)
    assert np.isnan(report.tau_b(np.ones((1, 4)), y[:1, :4])[0])


def test_autodistil_compute_counts_every_stage() -> None:
    data = _built(1.0)
    small = report.autodistil_compute(data, list(data["students"]))
    data["settings"]["steps"] *= 2
    assert report.autodistil_compute(data, list(data["students"])) > small
    key = next(iter(data["students"]))
    assert report.finetune_compute(data, key, "sst2") == 7 * 4 * 3 * data["students"][key]["flops"]
    data["settings"]["truth_by_task"] = {"mrpc": {"steps": 70}}  # a replaced truth's own steps
    assert report.finetune_compute(data, key, "sst2") == 7 * 4 * 3 * data["students"][key]["flops"]
    assert report.finetune_compute(data, key, "mrpc") == 70 * 4 * 3 * data["students"][key]["flops"]


def test_a_built_file_takes_more_seeds_and_nothing_else() -> None:
    from autodistil_rank import grown

    built = {"tasks": "sst2", "seeds": "0", "steps": 400, "truth_lr": 3e-4}
    out = Path("built.json")
    assert grown(out, built, {**built, "seeds": "0,1"})["seeds"] == "0,1"
    assert grown(out, built, built) == built
    with pytest.raises(SystemExit, match="only seeds may grow"):
        grown(out, built, {**built, "seeds": "1,0"})  # the built seed must stay first
    with pytest.raises(SystemExit, match="other settings"):
        grown(out, built, {**built, "seeds": "0,1", "steps": 800})
    # files from before --truth-lr used 1e-4
    old = {k: v for k, v in built.items() if k != "truth_lr"}
    assert grown(out, old, {**old, "truth_lr": 1e-4})["truth_lr"] == 1e-4


def test_a_report_of_some_tasks_keeps_only_their_truth() -> None:
    import autodistil_rank

    data = _built(1.0)
    data["settings"]["tasks"] = "sst2,mrpc"
    for key in data["truth"]:
        data["truth"][key]["mrpc"] = [50.0]
    data["teacher_cut"] = {"sst2": {"truth": {}}, "mrpc": {"truth": {}}}
    part = autodistil_rank.only_tasks(data, ["sst2"])
    assert part["settings"]["tasks"] == "sst2"
    assert all(set(by_task) == {"sst2"} for by_task in part["truth"].values())
    assert set(part["teacher_cut"]) == {"sst2"}
    assert "mrpc" in next(iter(data["truth"].values()))  # the file's data is left as it was
    with pytest.raises(SystemExit, match="--tasks rte: this build has sst2,mrpc"):
        autodistil_rank.only_tasks(data, ["rte"])


def test_cuts_are_borrowed_only_from_a_build_of_the_same_students_and_recipe() -> None:
    import _autodistil_cut as cut
    import _autodistil_truth as truth

    settings: dict[str, Any] = {"truth_steps": 300, "truth_lr": 3e-4, "eval_subset": 256}
    settings.update(seeds="0,1", train_subset=5000, batch=16, seq=64, tasks="sst2")
    store = {"recipe": truth.recipe_for(settings, "sst2"), "truth": {"k": [70.0, 71.0]}}
    other = {"students": {"k": {}}, "settings": dict(settings), "teacher_cut": {"sst2": store}}
    data: dict[str, Any] = {"students": {"k": {}}, "settings": {**settings, "steps": 2000}}
    assert cut.borrow(data, other, ["sst2"]) == ["sst2"]
    assert data["teacher_cut"]["sst2"] is store
    assert cut.borrow(data, other, ["sst2"]) == []  # it has cuts of sst2 now

    changes: list[tuple[dict[str, Any], str]] = [
        ({"truth_lr": 1e-4}, "its sst2 cuts ran with"),
        ({"seq": 128}, "that build's seq is 64, this one's 128"),
    ]
    for change, message in changes:
        fresh = {"students": {"k": {}}, "settings": {**settings, **change}}
        with pytest.raises(SystemExit, match=message):
            cut.borrow(fresh, other, ["sst2"])
    with pytest.raises(SystemExit, match="other students"):
        cut.borrow({"students": {"j": {}}, "settings": settings}, other, ["sst2"])


def test_the_dev_loss_orders_students_whose_task_scores_tie() -> None:
    # every tiny student at the majority class (one task score), its dev loss still the truth's
    data = _built(1.0)
    for key, info in data["students"].items():
        values = data["proxies"]["K3"][key]
        values["P2_loss"] = values["P2_loss:sst2"] = -(100 - data["truth"][key]["sst2"][0]) / 50
        if info["subspace"] == "tiny":
            values["P2_task"] = values["P2_task:sst2"] = 0.5
    assert "P2_lex" not in report.proxies(data) and report.loop_proxy(data) == "P2_task"
    data = report.with_derived(data)
    assert report.proxies(data) == report.PROXIES and report.loop_proxy(data) == "P2_lex"
    lines, pooled = report.correlations(data)
    row = {line.split(" | ")[0][2:]: line.split(" | ")[1] for line in lines if line[:3] == "| P"}
    assert row["P2_task"] == "τ constant ρ constant"  # the tiny group
    assert row["P2_lex"].startswith("τ +1.00") and row["P2_loss"].startswith("τ +1.00")
    assert pooled[("K3", "P2_lex")] > pooled[("K3", "P2_task")]
    # the loss only breaks ties: where the task scores differ, they decide
    tiny = [k for k, info in data["students"].items() if info["subspace"] == "tiny"]
    other = next(k for k in data["students"] if k not in tiny)
    assert data["proxies"]["K3"][other]["P2_lex"] > data["proxies"]["K3"][tiny[0]]["P2_lex"]
    lines = report.per_task(data)
    assert any(line.startswith("| P2_lex | +") for line in lines)


def test_tied_picks_go_to_the_cheaper_student_as_in_the_loop() -> None:
    data = _built(1.0)
    for values in data["proxies"]["K3"].values():
        values["P2_task"] = 0.5
    keys = list(data["students"])
    budget = report.pooled_budgets(data)[-1]
    pick = report.budget_pick(data, keys, budget, "P2_task")
    cheapest = min(keys, key=lambda key: (data["students"][key]["flops"], key))
    assert pick == cheapest
    assert report.ranked(data, keys, "P2_task")[0] == cheapest
