"""``benchmarks/loo_tables.py``: the leave-one-out protocol on small synthetic CSV tables
(real replays of fast loops), its choice rule, and its resumable cache."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _loo_args
import loo_tables


def _csv(path: Path, seed: int) -> str:
    """A 36-row table over two numeric parameters with a smooth optimum plus noise."""
    rng = random.Random(seed)
    lines = ["a,b,score"]
    for a in range(6):
        for b in range(6):
            lines.append(f"{a},{b},{-((a - 4) ** 2) - (b - 1) ** 2 + rng.gauss(0, 0.1):.4f}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_choose_takes_the_lowest_geometric_mean_without_the_held_out_table() -> None:
    scores = {
        "x": {"t1": {"p": 0.2}, "t2": {"p": 0.2}, "t3": {"p": 5.0}},
        "y": {"t1": {"p": 0.5}, "t2": {"p": 0.5}, "t3": {"p": 0.1}},
    }
    chosen, means = loo_tables.choose(scores, "t3")
    assert chosen == "x" and means["x"] == pytest.approx(0.2)
    chosen, means = loo_tables.choose(scores, "t1")  # t3 now counts: y wins
    assert chosen == "y" and means["y"] == pytest.approx(math.sqrt(0.05))


def test_spans_groups_consecutive_seeds() -> None:
    assert loo_tables._spans([0, 1, 2, 5, 6, 9]) == [(0, 3), (5, 7), (9, 10)]
    assert loo_tables._spans([]) == []


def test_every_table_is_held_out_once_and_the_cache_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = ",".join(f"t{i}={_csv(tmp_path / f't{i}.csv', i)}:csv" for i in range(3))
    cache = tmp_path / "runs.json"
    argv = ["--tables", spec, "--candidates", "random,evolution", "--tune-seeds", "2"]
    argv += ["--report-seeds", "2", "--evals", "36", "--jobs", "1", "--cache", str(cache)]
    assert loo_tables.main(argv) == 0
    out, err = capsys.readouterr()
    assert [line.split("**")[1] for line in out.splitlines() if line.startswith("**Held")] == [
        "Held out: t0",
        "Held out: t1",
        "Held out: t2",
    ]
    assert out.count("| one at a time |") == 3 and out.count("| four asynchronous |") == 3
    assert "seed" in err and cache.exists()
    # every replay (tuning and report seeds) is in the cache: a rerun replays nothing
    assert loo_tables.main(argv) == 0
    again, err = capsys.readouterr()
    assert again == out and err == ""


def test_a_top_found_past_the_budget_counts_as_never(tmp_path: Path) -> None:
    table = _loo_args.parse_tables(f"t={_csv(tmp_path / 't.csv', 0)}:csv")["t"]
    assert loo_tables.budget(table, 200) == 18 and loo_tables.budget(table, 10) == 10
    best = max(table.scores)
    runs = [
        loo_tables.Run("x", s, direction="maximize", best=[best - 1.0] * (h - 1) + [best])
        for s, h in enumerate((3, 18, 19, 30))
    ]
    assert loo_tables.evals_to_top(runs, table, 18) == [3, 18, 19, 19]


def test_a_slow_baseline_can_run_on_fewer_report_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = ",".join(f"t{i}={_csv(tmp_path / f't{i}.csv', i)}:csv" for i in range(2))
    cache = tmp_path / "runs.json"
    argv = ["--tables", spec, "--candidates", "random", "--tune-seeds", "1", "--report-seeds"]
    argv += ["3", "--baselines", "tpe,local-search", "--evals", "36", "--jobs", "1"]
    argv += ["--cache", str(cache), "--seeds-for", "local-search=1"]
    assert loo_tables.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("| local-search (1 seeds) |") == 2  # one header per fold
    runs = loo_tables.json.loads(cache.read_text())
    seeds = {k.rsplit("|", 1)[1] for k in runs if "|local-search|" in k}
    assert seeds == {"1000"}  # only the first report seed replayed
    assert {k.rsplit("|", 1)[1] for k in runs if "|tpe|" in k} == {"1000", "1001", "1002"}
    # per held-out table: 2 seeds on t1, the others as before
    argv[-1] = "local-search=1,local-search:t1=2"
    assert loo_tables.main(argv) == 0
    out = capsys.readouterr().out
    t0, t1 = out.split("**Held out: t1**")
    assert "| local-search (1 seeds) |" in t0 and "| local-search (2 seeds) |" in t1
    runs = loo_tables.json.loads(cache.read_text())
    assert {k.rsplit("|", 1)[1] for k in runs if k.startswith("t1|local-search|")} == {
        "1000",
        "1001",
    }


@pytest.mark.parametrize(
    "value, complaint",
    [
        ("tpe=lts-gpt2-wt103", "only a baseline other than tpe"),
        ("gp=lts-gpt2-wt103", "only a baseline other than tpe"),  # not among --baselines
        ("local-search", "give LOOP=TABLE"),
        ("local-search=no-such-table", "give LOOP=TABLE"),
    ],
)
def test_bad_not_on_is_refused_with_the_fix(
    value: str, complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--baselines", "tpe,local-search", "--not-on", value]
    with pytest.raises(SystemExit) as e:
        loo_tables.main(argv)
    assert e.value.code == 2 and complaint in capsys.readouterr().err


@pytest.mark.parametrize(
    "value, complaint",
    [
        ("tpe=2", "only a baseline other than tpe"),
        ("gp=2", "only a baseline other than tpe"),  # not among --baselines
        ("local-search", "give LOOP[:TABLE]=N"),
        ("local-search=0", "give LOOP[:TABLE]=N"),
        ("local-search=9", "give LOOP[:TABLE]=N"),
        ("local-search=x", "give LOOP[:TABLE]=N"),
        ("local-search:no-such-table=2", "TABLE must be one of flexibert-sst2, hw-gpt-bench-s"),
        ("tpe:hw-gpt-bench-s=2", "only a baseline other than tpe"),
    ],
)
def test_bad_seeds_for_is_refused_with_the_fix(
    value: str, complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--baselines", "tpe,local-search", "--report-seeds", "3", "--seeds-for", value]
    with pytest.raises(SystemExit) as e:
        loo_tables.main(argv)
    assert e.value.code == 2 and complaint in capsys.readouterr().err


def _varying_csv(path: Path, seed: int) -> str:
    """A 39-row table whose depth varies: ``layers`` 1-3 and one width ``w.i`` per layer."""
    rng = random.Random(seed)
    lines = ["layers,w.0,w.1,w.2,score"]
    for layers in (1, 2, 3):
        for _ in range(13):
            widths = [rng.choice((64, 128, 256, 512)) for _ in range(layers)]
            cells = [*map(str, widths), *[""] * (3 - layers)]
            score = sum(widths) / 100 + rng.gauss(0, 0.1)
            lines.append(f"{layers},{','.join(cells)},{score:.4f}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_padded_baseline_replays_the_padded_table_and_is_na_on_flexibert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from _procs import TABLE

    spec = ",".join(f"t{i}={_varying_csv(tmp_path / f't{i}.csv', i)}:csv" for i in range(2))
    cache = tmp_path / "runs.json"
    argv = ["--tables", f"{spec},flex={TABLE}:flexibert", "--candidates", "random"]
    argv += ["--tune-seeds", "1", "--report-seeds", "1", "--baselines", "tpe,random+padded"]
    argv += ["--evals", "12", "--jobs", "1", "--cache", str(cache)]
    assert loo_tables.main([*argv, "--not-on", "random+padded=t1"]) == 0
    out = capsys.readouterr().out
    assert out.count("| random+padded |") == 3  # one column per fold
    t1, flex = out.split("**Held out: t1**")[1].split("**Held out: flex**")
    assert flex.count("| n/a |") == 2  # both protocols: FlexiBERT's space takes no padding
    assert t1.count("| n/a |") == 2  # left out with --not-on
    runs = loo_tables.json.loads(cache.read_text())
    assert {k.split("|")[0] for k in runs if "|random+padded|" in k} == {"t0"}
    assert loo_tables.main(argv) == 0  # without --not-on, t1's padded replays run
    assert "| n/a |" not in capsys.readouterr().out.split("**Held out: t1**")[1].split("**Held")[0]
    runs = loo_tables.json.loads(cache.read_text())
    assert {k.split("|")[0] for k in runs if "|random+padded|" in k} == {"t0", "t1"}
    padded = _loo_args.padded_tables(_loo_args.parse_tables(spec))
    assert all(t.space.padded for t in padded.values())  # type: ignore[attr-defined]
    both = _loo_args.parse_tables(f"{spec},flex={TABLE}:flexibert")
    assert _loo_args.padded_tables(both).keys() == {"t0", "t1"}
    # the same space the reader option builds
    from archsearch.spaces import read_table

    read = read_table(str(tmp_path / "t0.csv"), "csv", padded=True)
    assert padded["t0"].space.to_params(read.architectures[0]) == read.space.to_params(
        read.architectures[0]
    )


def test_bad_tables_and_table_options_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--tables foo` and a CSV without a 'score' column were tracebacks; a CSV's score
    column and direction could not be given."""
    losses = tmp_path / "l.csv"
    losses.write_text("a,b,loss\n1,2,3.0\n2,3,2.5\n3,1,2.0\n")
    two = f"x={losses}:csv,y={losses}:csv"
    for argv, said in (
        (["--tables", "foo"], "--tables 'foo': give NAME=PATH[:FORMAT]"),
        (["--tables", two], "has no column 'score' (a, b, loss)"),
        (["--tables", two, "--table-option", "z:score=loss"], "NAME one of x, y"),
    ):
        with pytest.raises(SystemExit) as refused:
            loo_tables.main(argv)
        assert refused.value.code == 2 and said in capsys.readouterr().err
    given = ["x:score=loss", "x:direction=minimize", "y:score=loss"]
    options = _loo_args.table_options(given, ["x", "y"])
    table = _loo_args.parse_tables(two, options)["x"]
    assert table.direction == "minimize" and table.metric == "loss" and min(table.scores) == 2.0
