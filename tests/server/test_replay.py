"""``archsearch replay``: registered loops replayed on tables, counted exactly; clear errors."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from archsearch.search import LOOPS, LoopSnapshot, NoSuggestion, SearchLoop, Suggestion
from archsearch.server import cli
from archsearch.server._replay import replay_search
from archsearch.spaces import EnumerableSpace, read_table

# 12 decoder-like rows; lower is better; the best two tie.
ROWS = [
    {"n_layer": n, "d_model": d, "n_head": [h] * n}
    for n in (2, 3)
    for d in (64, 128, 256)
    for h in (2, 8)
]
SCORES = [30.0, 29.0, 28.0, 27.0, 26.0, 25.0, 24.0, 23.0, 22.0, 21.0, 20.0, 20.0]


@pytest.fixture
def table_file(tmp_path: Path) -> str:
    path = tmp_path / "decoders.json"
    entries = [
        {"id": i, "arch": a, "ppl": s} for i, (a, s) in enumerate(zip(ROWS, SCORES, strict=True))
    ]
    path.write_text(
        json.dumps({"metric": "ppl", "direction": "minimize", "architectures": entries})
    )
    return str(path)


class InOrderLoop(SearchLoop):
    """Proposes the space's rows in enumeration order, skipping those any trial holds; records
    how many trials were in flight at each call."""

    avoids_known = True
    in_flight: list[int] = []  # noqa: RUF012 - shared with the test on purpose

    def __init__(self, seed: int | None, n_objectives: int, options: Any = None) -> None:
        self.name = "in-order"

    def suggest(self, snapshot: LoopSnapshot, count: int = 1) -> list[Suggestion]:
        InOrderLoop.in_flight.append(len(snapshot.active))
        space = snapshot.space
        assert isinstance(space, EnumerableSpace)
        held = {json.dumps(dict(t.architecture or {}), sort_keys=True) for t in snapshot.trials}
        free = [a for a in space.enumerate() if json.dumps(a, sort_keys=True) not in held]
        return [Suggestion(architecture=a) for a in free[:count]]


@pytest.fixture
def in_order_loop() -> Iterator[type[InOrderLoop]]:
    LOOPS.register("in-order", InOrderLoop)
    InOrderLoop.in_flight = []
    try:
        yield InOrderLoop
    finally:
        LOOPS.unregister("in-order")


def _replay(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["replay", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_replay_prints_medians_exact_random_and_writes_the_plot(
    table_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "regret.png"
    code, out, err = _replay(
        [
            table_file,
            "--loops",
            "random,tpe",
            "--seeds",
            "2",
            "--evals",
            "6",
            "--top",
            "10",
            "--parallel",
            "2",
            "--plot",
            str(plot),
        ],
        capsys,
    )
    assert code == 0, err
    # top 10% of 12 rows = the best 2 (ceil 1.2); both score 20.0.
    assert "top 10% = best 2 -> ppl <= 20.0000 (2 rows counting ties)" in out
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| loop | seeds | median evals to top 10% [90% interval]")
    assert [line.split(" | ")[0] for line in lines[1:]] == [
        "| random",
        "| tpe",
        "| random (exact: uniform without replacement)",
    ]
    assert "| - | 4 |" in lines[-1]  # 2 targets of 12: P(hit within 4) = 1 - C(10,4)/C(12,4)
    assert plot.stat().st_size > 0
    assert "note: 12 rows: the top 10% is the best 2, so a median of a few evaluations" in out


def test_a_median_past_the_budget_is_shown_as_such(
    table_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With 2 evaluations, random search reaches the best 2 of 12 in fewer than half its
    tries: its exact median was printed as 3 (evals + 1), like a measured median."""
    code, out, err = _replay(
        [table_file, "--loops", "random", "--seeds", "3", "--evals", "2", "--top", "10",
         "--plot", str(tmp_path / "p.png")],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    exact = next(line for line in out.splitlines() if line.startswith("| random (exact"))
    assert "| - | > 2 |" in exact
    assert "note: '> 2': not reached in half the searches within --evals 2" in out


def test_any_registered_loop_runs_by_name_and_is_counted_exactly(
    table_file: str,
    in_order_loop: type[InOrderLoop],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Rows in file order: the first target (score 20.0) is row 11, the 11th evaluation.
    code, out, err = _replay(
        [
            table_file,
            "--loops",
            "in-order",
            "--seeds",
            "1",
            "--evals",
            "12",
            "--top",
            "10",
            "--plot",
            str(tmp_path / "p.png"),
        ],
        capsys,
    )
    assert code == 0, err
    assert "in-order      seed  0: top 10% at 11, best 20.0000, 12 asks" in out
    assert "| in-order | 1 | 11.0 [11.0, 11.0] | 1/1 |" in out
    code, out, err = _replay(
        [
            *[table_file, "--loops", "in-order", "--seeds", "1", "--evals", "5", "--top", "10"],
            *["--plot", str(tmp_path / "q.png")],
        ],
        capsys,
    )
    assert code == 0, err
    assert "in-order      seed  0: top 10% not reached in 5, best" in out  # not "at None"


@pytest.mark.parametrize(("parallel", "rounds"), [(3, False), (3, True), (1, False)])
def test_simulated_workers_keep_the_right_number_in_flight(
    table_file: str, in_order_loop: type[InOrderLoop], parallel: int, rounds: bool
) -> None:
    run = replay_search(
        read_table(table_file), "in-order", 0, 9, parallel=parallel, asynchronous=not rounds
    )
    assert len(run.best) == 9 and run.asks == 9
    seen = in_order_loop.in_flight
    if rounds:  # each round asks 3 with 0, 1, 2 in flight
        assert seen == [0, 1, 2] * 3
    else:  # asynchronous: after the first fill, one told and one asked, parallel-1 in flight
        assert seen[:parallel] == list(range(parallel))
        assert set(seen[parallel:]) <= {parallel - 1}


@pytest.mark.parametrize("parallel", [1, 3])
def test_stopping_at_a_target_changes_nothing_before_it(table_file: str, parallel: int) -> None:
    table = read_table(table_file)
    full = replay_search(table, "random", 4, 12, parallel=parallel)
    hit = full.evals_to(24.0)
    assert hit is not None and hit < 12
    stopped = replay_search(table, "random", 4, 12, parallel=parallel, stop_at=24.0)
    assert stopped.best == full.best[:hit] and stopped.evaluated == full.evaluated[:hit]
    assert stopped.evals_to(24.0) == hit


def test_repeats_are_free_unless_counted(table_file: str) -> None:
    table = read_table(table_file)
    free = replay_search(table, "random", 0, 8)
    counted = replay_search(table, "random", 0, 8, count_repeats=True)
    assert len(free.best) == 8 and len(counted.best) == 8
    assert counted.asks == 8  # every suggestion an evaluation
    # the same seed suggests the same rows: with repeats free it needed more suggestions
    assert free.asks >= counted.asks
    assert free.best[-1] <= counted.best[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loops", "random,nope"], "archsearch: unknown loop 'nope' (registered: "),
        (["--seeds", "0"], "archsearch: --seeds must be at least 1, got 0"),
        (["--top", "0"], "archsearch: --top is a percentage in (0, 100], got 0"),
        (["--loop-options", "[1"], "archsearch: --loop-options is not JSON"),
        (["--table-option", "metric"], "archsearch: --table-option 'metric' is not KEY=VALUE"),
        (
            ["--table-option", "colour=red"],
            "archsearch: cannot read the table {t}: table_options.colour: not an option of "
            "the nas-tables format (known: metric",
        ),
        (
            ["--loops", "boshnas", "--loop-options", '{"boshnas": {"features": "embedding"}}'],
            "archsearch: loop boshnas cannot search {t}: loop_options.features: the "
            "'table-rows' space has no architecture graphs to embed",
        ),
        (
            ["--format", "xml"],
            "archsearch: cannot read the table {t}: format: unknown table format 'xml'",
        ),
    ],
)
def test_bad_input_is_one_clear_line(
    table_file: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    code, _, err = _replay([table_file, *args, "--plot", str(tmp_path / "p.png")], capsys)
    assert code == 2
    assert err.startswith(message.format(t=table_file)), err
    assert "Traceback" not in err and err.count("\n") == 1
    if "unknown loop" in message:
        assert all(name in err for name in ("boshnas", "random", "tpe"))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "is not a JSON table"),
        ('{"metric": "ppl", "rows": []}', "lacks an 'architectures' list"),
        (
            '{"metric": "ppl", "direction": "minimize", '
            '"architectures": [{"arch": {"a": {"b": 1}}, "ppl": 1}]}',
            "field 'a' must be a number, string or list of them",
        ),
        (
            '{"metric": "ppl", "direction": "minimize", '
            '"architectures": [{"arch": {"a": 1}, "ppl": null}]}',
            "has no row with a score for ppl",
        ),
    ],
)
def test_a_bad_table_file_names_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, problem: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, _, err = _replay([str(path), "--plot", str(tmp_path / "p.png")], capsys)
    assert code == 2
    assert err.startswith("archsearch: cannot read the table") and problem in err
    assert err.count(str(path)) == 1  # the table is named once, not as a prefix and again
    code, _, err = _replay([str(tmp_path / "none.json")], capsys)
    assert code == 2 and f"file {tmp_path / 'none.json'} not found" in err


def test_boshnas_searches_a_table_without_graphs_on_its_one_hot_features(table_file: str) -> None:
    table = read_table(table_file)
    run = replay_search(table, "boshnas", 0, 7, loop_options={"boshnas": {"batch_size": 2}})
    assert len(run.best) == 7 and run.asks == 7  # a library loop never repeats a row
    assert run.best == sorted(run.best, reverse=True) and run.best[-1] in SCORES
    # each evaluation's row, in order: distinct, and the running best is the best of them
    by_key = {table.key(a): s for a, s in zip(table.architectures, table.scores, strict=True)}
    assert len(set(run.evaluated)) == len(run.evaluated) == 7
    better = min if table.direction == "minimize" else max
    assert run.best == [better(by_key[k] for k in run.evaluated[: i + 1]) for i in range(7)]


def test_replay_reads_an_existing_studys_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import optuna

    url = f"sqlite:///{tmp_path}/past.db"
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name="past", direction="maximize")
    study.optimize(lambda t: t.suggest_int("width", 1, 8) / 8, n_trials=8)
    storage.engine.dispose()
    code, out, err = _replay(
        [
            url,
            "--study",
            "past",
            "--loops",
            "random",
            "--seeds",
            "1",
            "--evals",
            "3",
            "--plot",
            str(tmp_path / "p.png"),
        ],
        capsys,
    )
    assert code == 0, err
    rows = len({t.params["width"] for t in study.trials})
    assert f"table {url} study past: {rows} rows, value 0 (maximize)" in out
    study.set_metric_names(["accuracy"])  # as archsearch's own studies are: named by metric
    again = [url, "--study", "past", "--loops", "random", "--seeds", "1"]
    code, out, err = _replay([*again, "--plot", str(tmp_path / "q.png")], capsys)
    assert code == 0, err
    assert f"table {url} study past: {rows} rows, accuracy (maximize)" in out
    code, _, err = _replay([url, "--study", "other"], capsys)
    assert code == 2 and "no study 'other'" in err and "known: past" in err


def test_a_studys_derived_trials_are_no_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An AutoDistil study's 125 proxy-scored students (and a DyLoRA study's rank trials, each
    training trial twice) were read as trained rows: "all 127 rows reach the target"."""
    import optuna

    from archsearch.server._derived_trials import DERIVED_MARKERS
    from archsearch.spaces._study_table import DERIVED_MARKERS as READ_MARKERS

    assert set(READ_MARKERS) == set(DERIVED_MARKERS)
    url = f"sqlite:///{tmp_path}/past.db"
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name="past", direction="maximize")

    def objective(t: optuna.Trial) -> float:
        width = t.suggest_int("width", 1, 8)
        if t.number >= 6:  # derived from trial 0's report
            t.set_user_attr(DERIVED_MARKERS[t.number % 2], 0)
        return width / 8

    study.optimize(objective, n_trials=10)
    storage.engine.dispose()
    argv = [url, "--study", "past", "--loops", "random", "--seeds", "1", "--evals", "2"]
    code, out, err = _replay([*argv, "--plot", str(tmp_path / "p.png"), "--json"], capsys)
    assert code == 0, err
    shown = json.loads(out)
    rows = len({t.params["width"] for t in study.trials if t.number < 6})
    assert (shown["rows"], shown["derived_trials"]) == (rows, 4)
    assert "4 derived trial(s) left out" in err


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--plot", "regret.txt"], "not .txt; name the file with one of them"),  # crashed late
        (["--loops", ""], "names an empty loop"),  # ran the default loops
        (["--loops", "random,,tpe"], "names an empty loop"),
    ],
)
def test_a_bad_plot_or_loop_list_is_refused_before_any_search(
    table_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], said: str
) -> None:
    args = [a if a != "regret.txt" else str(tmp_path / a) for a in args]
    code, out, err = _replay([table_file, "--seeds", "1", "--evals", "3", *args], capsys)
    assert code == 2 and said in err and "seed  0" not in out, err  # no search ran


def test_replay_says_how_many_rows_had_no_score(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = [{"arch": {"a": i}, "ppl": float(i + 1)} for i in range(6)]
    entries += [{"arch": {"a": 9}, "ppl": None}, {"arch": {"a": 1}, "ppl": 7.0}]
    path = tmp_path / "nulls.json"
    path.write_text(
        json.dumps({"metric": "ppl", "direction": "minimize", "architectures": entries})
    )
    quick = ["--loops", "random", "--seeds", "1", "--evals", "3"]
    code, out, err = _replay([str(path), *quick, "--plot", str(tmp_path / "p.png")], capsys)
    assert code == 0, err
    assert "6 rows, ppl (minimize), 1 row without a ppl score left out, 1 row repeated" in out
    code, out, err = _replay(
        [str(path), *quick, "--plot", str(tmp_path / "p.png"), "--json"], capsys
    )
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["rows"], shown["rows_without_score"], shown["repeated_rows"]) == (6, 1, 1)


class _Quits(InOrderLoop):
    """Proposes two rows, then says it is done (or, as ``_Raises``, raises)."""

    def suggest(self, snapshot: LoopSnapshot, count: int = 1) -> list[Suggestion]:
        if len(snapshot.trials) >= 2:
            self.stop()
        return super().suggest(snapshot, count)

    def stop(self) -> None:
        raise NoSuggestion("all done", finished=True)


class _Raises(_Quits):
    def stop(self) -> None:
        raise RuntimeError("boom on the third")


def test_replay_of_a_loop_that_finishes_early_or_raises(
    table_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """NoSuggestion came out as a traceback; a loop's own error exited 2, as a user's."""
    LOOPS.register("test-quits", _Quits)
    LOOPS.register("test-raises", _Raises)
    try:
        plot = ["--plot", str(tmp_path / "p.png"), "--seeds", "1", "--evals", "5"]
        code, out, err = _replay([table_file, "--loops", "test-quits", *plot], capsys)
        assert code == 0, err
        assert "| test-quits | 1 |" in out
        # a search that ended early is not reported as if it had used the budget
        assert "note: test-quits: 1 of 1 searches ended before --evals 5" in out
        code, out, err = _replay([table_file, "--loops", "test-raises", *plot], capsys)
        assert code == 1
        assert err.strip() == (
            f"archsearch: loop test-raises cannot search {table_file}: "
            "RuntimeError: boom on the third"
        )
    finally:
        LOOPS.unregister("test-quits")
        LOOPS.unregister("test-raises")


class _Waits(SearchLoop):
    """Says it waits before proposing anything: nothing is in flight to wait for."""

    def __init__(self, seed: int | None, n_objectives: int, options: Any = None) -> None:
        self.name = "test-waits"

    def suggest(self, snapshot: LoopSnapshot, count: int = 1) -> list[Suggestion]:
        raise NoSuggestion("waiting for nothing")


class _Outside(SearchLoop):
    """Proposes an architecture the table's space does not hold: the loop's mistake."""

    def __init__(self, seed: int | None, n_objectives: int, options: Any = None) -> None:
        self.rng = random.Random(seed)

    def suggest(self, snapshot: LoopSnapshot, count: int = 1) -> list[Suggestion]:
        return [Suggestion(architecture={**snapshot.space.sample(self.rng), "nope": 1})]


def test_replay_of_a_loop_that_waits_for_nothing_or_proposes_outside_the_space(
    table_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first was an IndexError traceback; the second exited 2, as a user's mistake."""
    LOOPS.register("test-waits", _Waits)
    LOOPS.register("test-outside", _Outside)
    try:
        plot = ["--plot", str(tmp_path / "p.png"), "--seeds", "1", "--evals", "5"]
        code, _, err = _replay([table_file, "--loops", "test-waits", *plot], capsys)
        assert code == 1
        assert "it has nothing to propose (waiting for nothing) and no candidate in flight" in err
        code, _, err = _replay([table_file, "--loops", "test-outside", *plot], capsys)
        assert code == 1
        assert "architecture.nope: nope is not a parameter" in err
    finally:
        LOOPS.unregister("test-waits")
        LOOPS.unregister("test-outside")
