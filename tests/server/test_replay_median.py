"""The replay's median evaluations when seeds did not reach the target within the budget."""

from __future__ import annotations

from archsearch.server._replay_stats import Run, Targets, summarise

TARGET = Targets(threshold=0.9, k=1, count=1, best=0.95, rows=100)


def _run(seed: int, hit_at: int | None, evals: int = 20) -> Run:
    best = [0.5] * evals
    if hit_at is not None:
        best[hit_at - 1 :] = [0.95] * (evals - hit_at + 1)
    return Run("random", seed, best=best)


def test_a_median_past_the_budget_is_not_averaged_with_a_hit() -> None:
    """Two seeds, one at 1 evaluation and one never within 20: the median was printed as
    11.0, the mean of the hit and the "21" placeholder; it is past the budget."""
    half = summarise([_run(0, 1), _run(1, None)], TARGET, 20, [20])
    assert half["median_evals"] == 21.0 and half["reached"] == 1
    most = summarise([_run(0, 1), _run(1, 5), _run(2, None)], TARGET, 20, [20])
    assert most["median_evals"] == 5.0
    even = summarise([_run(0, 2), _run(1, 4), _run(2, 6), _run(3, None)], TARGET, 20, [20])
    assert even["median_evals"] == 5.0  # both middles reached: their mean


def test_replay_json_is_the_report_on_stdout_alone(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json
    from pathlib import Path

    from archsearch.server import cli

    table = (
        Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "flexibert-small"
    ).resolve() / "dataset_small_sst2.json"
    argv = ["replay", str(table), "--loops", "random", "--seeds", "2", "--evals", "6"]
    assert cli.main([*argv, "--json", "--plot", str(tmp_path / "p.png")]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)  # nothing else on stdout: the table line went to stderr
    assert err.startswith("table ") and report["evals"] == 6
    loop = report["loops"]["random"]
    assert loop["n"] == 2 and loop["median_reached"] == (loop["median_evals"] <= 6)
    assert report["targets"]["rows"] == 620 and (tmp_path / "p.png").is_file()
