"""``benchmarks/_autodistil_truth.py``: each task's truth recipe, replacing one task's truth
with another recipe (``autodistil_rank.py retruth``), and filling missing truth runs in seed
order so that a cut run continues, with a fake job runner instead of fine-tuning."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _autodistil_truth as truth

KEYS = ["L2_A4_H128_I256", "L3_A6_H192_I384", "L6_A12_H384_I1536"]


def _built() -> dict[str, Any]:
    return {
        "settings": {
            "tasks": "sst2,mrpc",
            "seeds": "0,1",
            "truth_steps": 300,
            "truth_lr": 3e-4,
            "eval_subset": 256,
            "train_subset": 5000,
            "batch": 16,
            "seq": 64,
        },
        "students": {
            key: {"subspace": name, "student": {"layers": i + 2}, "flops": 1, "params": 1}
            for i, (key, name) in enumerate(zip(KEYS, ["tiny", "small", "base"], strict=True))
        },
        "supernets": {f"K3:{name}": f"/ckpt/{name}" for name in ["tiny", "small", "base"]},
        "truth": {key: {"sst2": [80.0, 81.0], "mrpc": [78.0, 79.0]} for key in KEYS},
        "seconds": {},
    }


def _fake(spec: dict[str, Any]) -> dict[str, float]:
    """A score that says which job produced it: layers x 10 + seed (+ 0.5 for F1)."""
    score = spec["student"]["layers"] * 10.0 + spec["seed"]
    return {"accuracy": score, "f1": score + 0.5, "train_seconds": 1.0, **spec_echo(spec)}


def spec_echo(spec: dict[str, Any]) -> dict[str, float]:
    return {"steps": float(spec["steps"]), "eval_subset": float(spec["eval_subset"])}


MRPC_1000 = {"steps": 1000, "lr": 1e-4, "eval_subset": 0, "metric": "accuracy", "seeds": "0,1"}


def test_a_tasks_recipe_is_the_builds_unless_replaced() -> None:
    data = _built()
    assert truth.recipe_for(data["settings"], "mrpc") == {
        "steps": 300,
        "lr": 3e-4,
        "eval_subset": 256,
        "metric": "f1",  # MRPC's primary metric
        "seeds": "0,1",
    }
    truth.replace_recipe(data, "mrpc", dict(MRPC_1000))
    assert truth.recipe_for(data["settings"], "mrpc") == MRPC_1000
    assert truth.recipe_for(data["settings"], "sst2")["steps"] == 300
    assert "mrpc: 1000 steps, lr 0.0001, the whole dev set, accuracy" in truth.describe(
        data["settings"]
    )


def test_replacing_a_truth_keeps_the_old_values_and_runs_the_new_recipe() -> None:
    data = _built()
    truth.replace_recipe(data, "mrpc", dict(MRPC_1000))
    assert data["replaced_truth"]["mrpc"]["values"] == {key: [78.0, 79.0] for key in KEYS}
    assert data["replaced_truth"]["mrpc"]["recipe"]["steps"] == 300
    assert all("mrpc" not in per_task for per_task in data["truth"].values())
    assert truth.missing_jobs(data, ["mrpc"]) == [
        *((key, "mrpc", 0) for key in KEYS),
        *((key, "mrpc", 1) for key in KEYS),
    ]
    saves = []
    truth.fill(data, ["mrpc"], lambda: saves.append(1), run=_fake)
    assert len(saves) == 6
    for i, key in enumerate(KEYS):
        # each student's scores in seed order, by the recipe's metric; every metric kept
        assert data["truth"][key]["mrpc"] == [(i + 2) * 10.0, (i + 2) * 10.0 + 1]
        assert [m["f1"] for m in data["truth_metrics"][key]["mrpc"]] == [
            (i + 2) * 10.0 + 0.5,
            (i + 2) * 10.0 + 1.5,
        ]
        assert all(m["steps"] == 1000 for m in data["truth_metrics"][key]["mrpc"])
        assert all(m["eval_subset"] == 0 for m in data["truth_metrics"][key]["mrpc"])
        assert data["truth"][key]["sst2"] == [80.0, 81.0]  # the other task untouched
    assert truth.missing_jobs(data, ["sst2", "mrpc"]) == []


def test_a_cut_run_continues_where_it_stopped() -> None:
    data = _built()
    truth.replace_recipe(data, "mrpc", dict(MRPC_1000))
    calls: list[tuple[int, int]] = []

    def cut_after_four(spec: dict[str, Any]) -> dict[str, float]:
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append((spec["student"]["layers"], spec["seed"]))
        return _fake(spec)

    with pytest.raises(KeyboardInterrupt):
        truth.fill(data, ["mrpc"], lambda: None, run=cut_after_four)
    assert calls == [(2, 0), (3, 0), (4, 0), (2, 1)]
    rest: list[tuple[int, int]] = []

    def record(spec: dict[str, Any]) -> dict[str, float]:
        rest.append((spec["student"]["layers"], spec["seed"]))
        return _fake(spec)

    truth.replace_recipe(data, "mrpc", dict(MRPC_1000))  # the same recipe: continue
    truth.fill(data, ["mrpc"], lambda: None, run=record)
    assert rest == [(3, 1), (4, 1)]
    assert data["truth"][KEYS[2]]["mrpc"] == [40.0, 41.0]


def test_a_replaced_truth_takes_more_seeds_and_nothing_else() -> None:
    data = _built()
    truth.replace_recipe(data, "mrpc", {**MRPC_1000, "seeds": "0"})
    before = copy.deepcopy(data)
    truth.replace_recipe(data, "mrpc", dict(MRPC_1000))  # seed 1 after seed 0
    assert data["replaced_truth"] == before["replaced_truth"]  # the old truth stays the first
    assert truth.seeds_of(data["settings"], "mrpc") == [0, 1]
    with pytest.raises(SystemExit, match="only seeds may grow"):
        truth.replace_recipe(data, "mrpc", {**MRPC_1000, "steps": 2000})
    with pytest.raises(SystemExit, match="only seeds may grow"):
        truth.replace_recipe(data, "mrpc", {**MRPC_1000, "seeds": "1,0"})
    with pytest.raises(SystemExit, match="built for sst2,mrpc"):
        truth.replace_recipe(data, "cola", dict(MRPC_1000))


def test_each_job_is_the_tasks_recipe_on_the_students_own_supernet() -> None:
    data = _built()
    truth.replace_recipe(data, "mrpc", dict(MRPC_1000))
    specs: list[dict[str, Any]] = []

    def record(spec: dict[str, Any]) -> dict[str, float]:
        specs.append(spec)
        return _fake(spec)

    truth.fill(data, ["mrpc"], lambda: None, run=record)
    base = next(s for s in specs if s["student"] == {"layers": 4})
    assert base["supernet"] == "/ckpt/base"
    assert (base["steps"], base["lr"], base["eval_subset"], base["task"]) == (
        1000,
        1e-4,
        0,
        "mrpc",
    )
    assert (base["train_subset"], base["batch"], base["seq"], base["threads"]) == (5000, 16, 64, 0)


def test_a_build_continues_after_a_task_was_replaced() -> None:
    from autodistil_rank import grown

    built = {"tasks": "sst2,mrpc", "seeds": "0,1", "truth_lr": 3e-4}
    replaced = {**built, "truth_by_task": {"mrpc": MRPC_1000}}
    assert grown(Path("f.json"), replaced, built)["truth_by_task"] == {"mrpc": MRPC_1000}


def test_a_build_may_give_a_tasks_own_truth_recipe_from_the_start() -> None:
    from autodistil_rank import grown, task_truths

    given = task_truths(["mrpc=1000,1e-4,0,accuracy"], ["sst2", "mrpc"], "0")
    assert given == {"mrpc": {**MRPC_1000, "seeds": "0"}}
    built = {"tasks": "sst2,mrpc", "seeds": "0", "truth_lr": 3e-4}
    first = {**built, "truth_by_task": given}
    assert (
        truth.recipe_for({**first, "truth_steps": 300, "eval_subset": 256}, "mrpc")["steps"] == 1000
    )
    more = task_truths(["mrpc=1000,1e-4,0,accuracy"], ["sst2", "mrpc"], "0,1")
    grew = grown(Path("f.json"), first, {**built, "seeds": "0,1", "truth_by_task": more})
    assert grew["truth_by_task"] == more  # its seeds grow with the build's
    other = task_truths(["mrpc=300,1e-4,0,accuracy"], ["sst2", "mrpc"], "0")
    with pytest.raises(SystemExit, match="not --task-truth's"):
        grown(Path("f.json"), first, {**built, "truth_by_task": other})
    with pytest.raises(SystemExit, match="not --task-truth's"):  # a build without one
        grown(Path("f.json"), built, {**built, "truth_by_task": given})
    for bad in ["rte=1,1e-4,0,accuracy", "mrpc=1,1e-4,accuracy", "mrpc=x,1e-4,0,accuracy"]:
        with pytest.raises(SystemExit, match="--task-truth"):
            task_truths([bad], ["sst2", "mrpc"], "0")
    with pytest.raises(SystemExit, match="mrpc has f1, accuracy"):
        task_truths(["mrpc=1,1e-4,0,mcc"], ["sst2", "mrpc"], "0")


def test_retruth_refuses_a_metric_the_task_does_not_have(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import autodistil_rank

    built = tmp_path / "built.json"
    built.write_text(json.dumps(_built()))
    argv = ["autodistil_rank.py", "retruth", str(built), "--task", "mrpc", "--steps", "10"]
    for more, said in [
        (["--lr", "1e-4", "--metric", "mcc"], "argument --metric: mcc: mrpc has f1, accuracy"),
        (["--lr", "-1", "--metric", "f1"], "argument --lr: expected a number > 0"),
        (["--lr", "1e-4", "--metric", "f1", "--seeds", "0,a"], "argument --seeds: expected"),
    ]:
        monkeypatch.setattr(sys, "argv", [*argv, *more])
        with pytest.raises(SystemExit) as refused:  # argparse's one line, exit status 2
            autodistil_rank.main()
        assert refused.value.code == 2
        assert said in capsys.readouterr().err
    assert json.loads(built.read_text()) == _built()  # nothing changed


# ---- ``autodistil_rank.py cut`` (``_autodistil_cut``): students cut straight from the teacher


def test_cuts_run_from_the_teacher_with_the_tasks_recipe_and_continue() -> None:
    import _autodistil_cut as cut

    data = _built()
    truth.replace_recipe(data, "mrpc", {**MRPC_1000, "seeds": "0"})
    specs: list[dict[str, Any]] = []
    supernet_truth = copy.deepcopy(data["truth"])

    def record(spec: dict[str, Any]) -> dict[str, float]:
        specs.append(spec)
        return _fake(spec)

    cut.fill(data, "mrpc", KEYS[1:], lambda: None, run=record)
    assert [(s["student"]["layers"], s["seed"]) for s in specs] == [(3, 0), (4, 0)]
    assert all(s["supernet"] is None and s["steps"] == 1000 for s in specs)  # no supernet
    assert data["teacher_cut"]["mrpc"]["truth"] == {KEYS[1]: [30.0], KEYS[2]: [40.0]}
    assert data["truth"] == supernet_truth  # the supernet's truth untouched
    assert data["seconds"] == {}  # nor the build's training time: the cuts keep their own
    assert data["teacher_cut"]["mrpc"]["seconds"] == {KEYS[1]: 1.0, KEYS[2]: 1.0}
    specs.clear()
    truth.replace_recipe(data, "mrpc", dict(MRPC_1000))  # seed 1 too: only the new jobs run
    cut.fill(data, "mrpc", KEYS[1:], lambda: None, run=record)
    assert [(s["student"]["layers"], s["seed"]) for s in specs] == [(3, 1), (4, 1)]
    assert data["teacher_cut"]["mrpc"]["truth"][KEYS[2]] == [40.0, 41.0]


def test_cuts_refuse_another_recipe_an_unknown_student_and_another_task() -> None:
    import _autodistil_cut as cut

    data = _built()
    cut.fill(data, "mrpc", KEYS[:1], lambda: None, run=_fake)  # the build's recipe: F1
    assert data["teacher_cut"]["mrpc"]["truth"] == {KEYS[0]: [20.5, 21.5]}
    truth.replace_recipe(data, "mrpc", dict(MRPC_1000))
    with pytest.raises(SystemExit, match=r"remove teacher_cut\.mrpc"):
        cut.fill(data, "mrpc", KEYS[:1], lambda: None, run=_fake)
    with pytest.raises(SystemExit, match=r"\['L9_A1_H1_I1'\] are not students"):
        cut.fill(data, "sst2", ["L9_A1_H1_I1"], lambda: None, run=_fake)
    with pytest.raises(SystemExit, match="built for sst2,mrpc"):
        cut.fill(data, "cola", KEYS, lambda: None, run=_fake)


def test_the_cut_table_compares_each_student_on_the_seeds_both_have() -> None:
    import _autodistil_cut as cut

    data = _built()
    assert cut.lines(data) == []  # no cuts, no table
    data["teacher_cut"] = {
        "mrpc": {
            "recipe": truth.recipe_for(data["settings"], "mrpc"),
            # supernet truth [78, 79] for every student; the third cut has one seed only
            "truth": {KEYS[0]: [70.0, 71.0], KEYS[1]: [80.0, 81.0], KEYS[2]: [60.0]},
        }
    }
    text = "\n".join(cut.lines(data))
    assert f"| {KEYS[0]} | 0.0 | 78.5 | 70.5 | +8.0 | 2 |" in text
    assert f"| {KEYS[1]} | 0.0 | 78.5 | 80.5 | -2.0 | 2 |" in text
    assert f"| {KEYS[2]} | 0.0 | 78.0 | 60.0 | +18.0 | 1 |" in text
    assert "mean over 3 students: +8.00 points" in text  # (8 - 2 + 18) / 3
    assert "better for 2 of 3" in text
    del data["truth"][KEYS[2]]["mrpc"]  # a student without the supernet's truth is left out
    assert "mean over 2 students: +3.00 points" in "\n".join(cut.lines(data))
