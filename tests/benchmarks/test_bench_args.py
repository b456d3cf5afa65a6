"""The benchmark scripts' command lines: bad values refused at parse time in argparse's one
line (exit status 2), ``dsir_select.py``'s shared options on either side of the command, and
``glue_teacher.py``'s verdict only "pass" when every floor was checked."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _argtypes as types


@pytest.mark.parametrize(
    ("parse", "text", "said"),
    [
        (types.whole(), "0", "expected a whole number >= 1, got '0'"),
        (types.whole(0), "x", "expected a whole number >= 0"),
        (types.number(), "0", "expected a number > 0"),
        (types.number(allow_zero=True, maximum=1), "1.5", "expected a number >= 0 and <= 1"),
        (types.number(), "nan", "expected a number > 0"),
        (types.whole_list(), "0,a", "comma-separated whole numbers"),
        (
            types.names(["a", "b"], "modes"),
            "a,c",
            "'c': expected comma-separated modes out of a, b",
        ),
        (types.names(["a", "b"]), "a,a", "repeats a name"),
        (types.glue_tasks, "sst2,foo", "'foo': expected comma-separated GLUE task ids"),
        (types.glue_task, "sst2,mrpc", "expected a GLUE task id"),
        (types.existing_file, "/no/such/file", "no such file"),
        (types.json_out, "/no/such/folder/out.json", "not a file in an existing folder"),
        (types.seq_length, "4", "in 5..512"),
    ],
)
def test_a_bad_value_is_refused_with_what_to_give(
    parse: Callable[[str], object], text: str, said: str
) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        parse(text)
    assert said in str(refused.value)


def test_a_good_list_value_is_returned_as_given() -> None:
    assert types.whole_list()("0,1,2") == "0,1,2"
    assert types.names(["a", "b"])("b,a") == "b,a"
    assert types.whole(0)("0") == 0 and types.number()("1e-4") == 1e-4


def test_a_bad_json_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "runs.json"
    bad.write_text("not json")
    with pytest.raises(argparse.ArgumentTypeError, match="not a readable JSON file"):
        types.json_file(str(bad))
    with pytest.raises(argparse.ArgumentTypeError, match="not a readable JSON file"):
        types.json_out(str(bad))  # an existing output is continued: it must parse
    assert types.json_out(str(tmp_path / "new.json")) == str(tmp_path / "new.json")


def test_the_help_is_the_whole_docstring_and_a_quick_command() -> None:
    doc = "What it measures.\n\n    python x.py --long\n        --lines as written\n"
    text = types.parser_for(doc, "    python x.py --steps 1", "Goal: none.").format_help()
    assert "    python x.py --long\n        --lines as written" in text
    assert "Goal: none." in text and "    python x.py --steps 1" in text


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (
            ["--pool", "3000", "--k", "300", "--record", "select"],
            ["select", "--pool", "3000", "--k", "300", "--record"],
        ),
        (["--pool", "3000", "select", "--k", "300"], ["select", "--k", "300", "--pool", "3000"]),
        (
            ["--pool", "3000", "--k", "5", "downstream", "--seeds", "0"],
            ["downstream", "--seeds", "0", "--k", "5", "--pool", "3000"],
        ),
    ],
)
def test_dsir_select_options_count_on_either_side_of_the_command(
    before: list[str], after: list[str]
) -> None:
    import dsir_select

    first = dsir_select.parse_args(before)
    assert vars(first) == vars(dsir_select.parse_args(after))
    assert first.pool == 3000  # not the default 140,000


def test_dsir_select_keeps_each_commands_default_k() -> None:
    import dsir_select

    assert dsir_select.parse_args([]).k == 10_000
    assert dsir_select.parse_args(["select"]).pool == 140_000
    assert dsir_select.parse_args(["downstream"]).k == 20_000


def test_dsir_select_refuses_k_above_the_pool(capsys: pytest.CaptureFixture[str]) -> None:
    import dsir_select

    with pytest.raises(SystemExit) as refused:
        dsir_select.parse_args(["--pool", "3000", "select"])
    assert refused.value.code == 2
    assert "argument --k: 10000 is more than the --pool of 3000 texts" in capsys.readouterr().err


def test_glue_teacher_passes_only_when_every_floor_was_checked() -> None:
    import glue_teacher

    every = dict.fromkeys(glue_teacher.FLOORS, True)
    assert glue_teacher.floor_verdict(every)[1] == "pass"
    assert glue_teacher.floor_verdict({"rte": True})[1] == "partial (1 of 5 checked)"
    assert glue_teacher.floor_verdict({})[1] == "not measured"  # --tasks wnli: no floor
    figure, verdict = glue_teacher.floor_verdict({**every, "cola": False})
    assert verdict == "FAIL" and "4 pass, 1 FAIL of 5 checked" in figure


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--loop-options", "{bad"], "argument --loop-options: not JSON"),
        (["--loop-options", '{"tpe": 1}'], "expected a JSON object of loop -> options object"),
        (["--loops", "tpe", "--loop-options", '{"tpe": {"zz": 1}}'], "unknown option"),
        (["--loops", "tpe", "--loop-options", '{"gp": {}}'], "gp: not in --loops tpe"),
        (["--loops", "foo"], "'foo': expected comma-separated loops"),
        (["--loops", "tpe,tpe"], "repeats or omits a name"),
        (["--loops", "random@,tpe"], "'random@': expected comma-separated loops"),
        (["--seeds-for", "gp"], "expected LOOP=N"),
        (["--loops", "tpe", "--seeds-for", "gp=2"], "gp: not in --loops tpe"),
        (["--seeds", "0"], "argument --seeds: expected a whole number >= 1"),
        (["--task", "xx"], "expected a GLUE task id"),
        (["--table", "/no/such/table.json"], "no such file"),
    ],
)
def test_nas_table_refuses_a_bad_value_before_any_search(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import nas_table

    with pytest.raises(SystemExit) as refused:
        nas_table.main([*argv, "--no-record"])
    assert refused.value.code == 2
    assert said in capsys.readouterr().err


def test_nas_table_keeps_labelled_loops_and_their_options() -> None:
    import _nas_args

    args = _nas_args.parse_args(
        "doc",
        ["--loops", "tpe,tpe@big", "--loop-options", '{"tpe@big": {"n_startup_trials": 5}}',
         "--seeds-for", "tpe@big=3"],
    )  # fmt: skip
    assert args.loop_options == {"tpe@big": {"n_startup_trials": 5}}
    assert args.seeds_for == {"tpe@big": 3}
