"""The command line refuses what cannot work before it starts anything, in one line that names
the flag: numbers and ports out of range (a port past 65535 is not taken modulo 65536, a demo
with no workers or no trials is not started, a worker with a zero poll is not run), a worker's
unknown device or missing GLUE folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archsearch.server import cli
from archsearch.server.app import MIN_MESSAGE_BYTES as MIN_BYTES
from archsearch.server.app import ConfigError, ServerConfig, check_limits


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "70000"], "argument --port: expected a whole number in 0..65535"),
        (["serve", "--port", "-5"], "argument --port: expected a whole number in 0..65535"),
        (["serve", "--max-long-polls", "0"], "argument --max-long-polls: expected a whole"),
        (["serve", "--max-message-bytes", "65536"], f"expected a whole number >= {MIN_BYTES}"),
        (["serve", "--max-poll-seconds", "-1"], "expected a number of seconds > 0, got '-1'"),
        (["serve", "--lease-seconds", "1.5"], "argument --lease-seconds: expected a whole"),
        (["worker", "--poll-seconds", "0"], "argument --poll-seconds: expected a number of sec"),
        (["worker", "--poll-seconds", "nan"], "expected a number of seconds > 0, got 'nan'"),
        (["worker", "--duration", "-1"], "argument --duration: expected a number of seconds >= 0"),
        (["worker", "--idle-exit", "inf"], "argument --idle-exit: expected a number of seconds"),
        (["worker", "--max-trials", "0"], "argument --max-trials: expected a whole number >= 1"),
        (["worker", "--save-minutes", "-1"], "--save-minutes: expected a number of minutes >= 0"),
        (["worker", "--keep-progress-days", "-2"], "--keep-progress-days: expected a number of"),
        (["show", "x", "--limit", "0"], "argument --limit: expected a whole number >= 1"),
        (["demo", "--trials", "0"], "argument --trials: expected a whole number >= 1, got '0'"),
        (["demo", "--workers", "-1"], "argument --workers: expected a whole number >= 1"),
        (["demo", "--steps", "ten"], "argument --steps: expected a whole number >= 1, got 'ten'"),
        (["studies", "--server", "127.0.0.1:99999"], "port must be in 1..65535"),
        (["show", "x", "--server", "[::1]:0"], "port must be in 1..65535, got '[::1]:0'"),
        (["fleet", "slurm", "--server", "h:65536", "--workers", "1"], "port must be in 1..65535"),
        (["fleet", "k8s", "--render", "--mem-gb", "inf"], "--mem-gb: expected a number of GB > 0"),
        (["fleet", "k8s", "--render", "--stop-grace", "nan"], "--stop-grace: expected a number"),
        (["fleet", "k8s", "--cpus-per-worker", "0"], "expected a number of CPUs > 0, got '0'"),
        (["fleet", "stop", "--grace", "-1"], "--grace: expected a number of seconds >= 0"),
    ],
)
def test_out_of_range_numbers_are_refused_when_parsed(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("archsearch: "), err
    assert message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        [
            "serve",
            "--port",
            "0",
            "--max-poll-seconds",
            "0.5",
            "--max-message-bytes",
            str(MIN_BYTES),
        ],
        ["worker", "--duration", "0", "--idle-exit", "0", "--poll-seconds", "0.1"],
        ["worker", "--save-minutes", "0"],
        ["worker", "--keep-progress-days", "0"],
        ["studies", "--server", "localhost:1"],
        ["studies", "--server", "[::1]:50051"],
        ["studies", "--server", "unix:/tmp/archsearch.sock"],
        ["demo", "--trials", "1", "--workers", "1", "--steps", "1"],
    ],
)
def test_the_edges_of_each_range_are_accepted(argv: list[str]) -> None:
    cli.build_parser().parse_args(argv)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("port", 65536, "--port must be in 0..65535"),
        ("max_long_polls", 0, "--max-long-polls must be >= 1"),
        ("max_poll_s", 0.0, "--max-poll-seconds must be > 0"),
        ("max_message_bytes", 1 << 20, f"--max-message-bytes must be >= {MIN_BYTES}"),
    ],
)
def test_a_server_config_built_in_code_is_checked_too(
    field: str, value: float, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_limits(ServerConfig(**{field: value}))


def test_an_rpc_error_of_a_command_without_server_flag_is_one_line() -> None:
    """``demo`` starts its own server and has no --server: its RPC errors were explained by
    reading ``args.server`` and ended in a traceback."""
    import argparse

    import grpc

    from archsearch.server._cli_common import _explain
    from archsearch.server.client import ClientError

    bad = ClientError(grpc.StatusCode.INVALID_ARGUMENT, "n_trials: must be >= 1", "LaunchSearch")
    err = _explain(bad, argparse.Namespace(steps=3))
    assert (str(err), err.code) == ("invalid argument: n_trials: must be >= 1", 2)
    down = ClientError(grpc.StatusCode.UNAVAILABLE, "connection refused", "LaunchSearch")
    assert "no archsearch server answers at the local server" in str(
        _explain(down, argparse.Namespace())
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--device", "tpu"], "archsearch: --device 'tpu': use cpu, cuda or cuda:N"),
        (["--device", "cuda:x"], "archsearch: --device 'cuda:x': use cpu, cuda or cuda:N"),
        (["--glue-dir", "{missing}"], "archsearch: GLUE folder {missing} (from --glue-dir) does"),
    ],
)
def test_a_worker_that_could_not_train_is_refused_before_it_connects(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing")
    argv = ["worker", "--server", "127.0.0.1:1", *(f.format(missing=missing) for f in flags)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(missing=missing)), err
    assert "Traceback" not in err


def test_a_demo_without_its_data_or_folder_says_so_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing"
    assert cli.main(["demo", "--glue-dir", str(missing), "--workdir", str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err.startswith(f"archsearch: GLUE folder {missing} (from --glue")
    assert not (tmp_path / "w").exists()
    (tmp_path / "file").write_text("")
    assert cli.main(["demo", "--workdir", str(tmp_path / "file" / "w")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"archsearch: cannot create --workdir {tmp_path / 'file' / 'w'}: "), err


@pytest.mark.parametrize("target", ["127.0.0.1:99999", "localhost:0", "[::1]:65536"])
def test_the_python_client_refuses_a_port_grpc_would_wrap(target: str) -> None:
    from archsearch.server.client import SearchClient, WorkerClient

    for client in (SearchClient, WorkerClient):
        with pytest.raises(ValueError, match=r"port must be in 1\.\.65535"):
            client(target)


def test_a_misspelt_spec_field_is_named_before_a_missing_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`n_trial` was reported as "launch needs --trials N": the typo said only once the flag
    was added."""
    spec = tmp_path / "typo.json"
    spec.write_text(json.dumps({"name": "t6", "space": "bert", "n_trial": 3}))
    assert cli.main(["launch", "--spec", str(spec), "--server", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "invalid search spec: n_trial: unknown spec field" in err
    assert "did you mean 'n_trials'?" in err and "needs --trials" not in err


def test_token_file_errors_say_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = tmp_path / "short.tokens"
    short.write_text("abc123\n")
    with pytest.raises(ConfigError, match=r"at least 16 characters; make one with python -c"):
        from archsearch.server.app import read_token_file

        read_token_file(str(short))
    assert cli.main(["studies", "--token-file", str(tmp_path / "none"), "--server", "h:1"]) == 2
    err = capsys.readouterr().err
    assert "cannot read token file" in err and "pass the file the server admin gave you" in err
