"""Findings of a walk through the command line, each said in one line that names the fix: an
empty or port-less --server (or $ARCHSEARCH_SERVER), gRPC's own C-core log kept out of the
output, printed commands that carry the --token-file they need, --set values that are not JSON
or that the shell split, and an error that does not say "already exists" twice."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _procs import cli, free_port, table_spec

from archsearch.server import _cli_common
from archsearch.server import cli as archsearch_cli
from archsearch.server._channel import check_target
from archsearch.server._cli_common import CliError, _explain
from archsearch.server.app import ArchsearchServer, ServerConfig
from archsearch.server.client import ClientError

TOKEN = "admin-token-walkthrough-0123456789"
CONSOLE_SCRIPT = Path(sys.executable).parent / "archsearch"


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line in a child process, with grpc's log settings left at their
    defaults (nothing GRPC_* inherited from the test's environment)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GRPC_", "ARCHSEARCH_"))}
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env={**base, **(env or {})}
    )


# ------------------------------------------------------------------------------ --server


FIX = "(give HOST:PORT, e.g. 127.0.0.1:50051)"


@pytest.mark.parametrize("program", [cli(), [str(CONSOLE_SCRIPT)]], ids=["-m", "script"])
@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        (["--server", ""], {}, f"--server is empty {FIX}"),
        ([], {"ARCHSEARCH_SERVER": ""}, f"ARCHSEARCH_SERVER is empty {FIX}"),
        (["--server", "127.0.0.1"], {}, f"--server 127.0.0.1 has no port {FIX}"),
    ],
)
def test_an_empty_or_portless_server_is_one_line(
    program: list[str], flags: list[str], env: dict[str, str], message: str
) -> None:
    """An empty address went to grpc, which logged C-core lines (dns_resolver.cc, a Source
    Location Trace) before "unknown: Failed to create channel"; one without a port dialled
    443. Now one line, exit 2, before anything is dialled."""
    assert CONSOLE_SCRIPT.exists(), "the project's console script is installed with it"
    done = _run([*program, "studies", *flags], env)
    assert done.returncode == 2, done
    assert done.stderr == f"archsearch: {message}\n"
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("notahost", "--server notahost has no port (give HOST:PORT, e.g. 127.0.0.1:50051)"),
        ("127.0.0.1:", "--server 127.0.0.1: has no port"),
        ("[::1]", "--server [::1] has no port"),
        ("::1", "--server ::1 has no port (give [IPV6]:PORT, e.g. [::1]:50051)"),
        ("dns:///example.org", "--server dns:///example.org has no port"),
        ("ipv4:127.0.0.1:5,127.0.0.2", "--server ipv4:127.0.0.1:5,127.0.0.2 has no port"),
        (":50051", "--server :50051 has no host"),
        ("   ", "--server is empty"),
        ("http://127.0.0.1:5", "--server http://127.0.0.1:5 is a URL; give HOST:PORT without"),
        ("127.0.0.1:5/", "--server 127.0.0.1:5/: the port '5/' is not a number"),
        ("https://h.example:443/", "is a URL; give HOST:PORT without https://: h.example:443 and"),
    ],
)
def test_targets_grpc_would_dial_443_or_nowhere_are_refused(target: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        check_target(target, "--server")
    assert message in str(e.value) and str(e.value).startswith("--server"), e.value


@pytest.mark.parametrize(
    "target",
    [
        "localhost:1",
        "[::1]:50051",
        "127.0.0.1:65535",
        "unix:/tmp/archsearch.sock",
        "unix:///tmp/archsearch.sock",
        "unix-abstract:archsearch",
        "vsock:3:50051",
        "dns:///example.org:50051",
        "dns://8.8.8.8/example.org:50051",
        "ipv4:127.0.0.1:5,127.0.0.2:6",
        "ipv6:[::1]:50051",
    ],
)
def test_targets_with_their_port_are_accepted(target: str) -> None:
    assert check_target(target) == target


def test_the_library_names_the_address_without_a_flag() -> None:
    with pytest.raises(ValueError, match=r"^the server address 127\.0\.0\.1 has no port"):
        check_target("127.0.0.1")


def test_a_portless_server_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ARCHSEARCH_SERVER", "gpu-head")
    with pytest.raises(SystemExit) as e:
        archsearch_cli.main(["show", "x"])
    assert e.value.code == 2
    assert capsys.readouterr().err == (
        "archsearch: ARCHSEARCH_SERVER gpu-head has no port (give HOST:PORT, e.g. "
        "127.0.0.1:50051)\n"
    )
    # the flag wins over the variable, and a good one is taken as it is
    args = archsearch_cli.build_parser().parse_args(["show", "x", "--server", "h:1"])
    assert args.server == "h:1"


# ------------------------------------------------------------------------------ grpc's log


@pytest.fixture
def plain_server(tmp_path: Path) -> Iterator[ArchsearchServer]:
    srv = ArchsearchServer(ServerConfig(storage=f"sqlite:///{tmp_path / 'p.db'}", port=0))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop(0)


def test_grpc_core_log_stays_out_of_a_tls_mistake(plain_server: ArchsearchServer) -> None:
    """A TLS client of a plain-text server: grpc's C-core logged "I1206 ...
    ssl_transport_security.cc:2563] Handshake failed ..." before our line. Quiet by default;
    a GRPC_VERBOSITY the user set is theirs."""
    done = _run(cli("studies", "--server", plain_server.address, "--tls"))
    assert done.returncode == 3, done  # the server could not be spoken to
    assert done.stderr.splitlines() == [
        f"archsearch: the server at {plain_server.address} does not speak TLS: drop "
        "--tls/--tls-ca, or start the server with --tls-cert and --tls-key"
    ]
    loud = _run(
        cli("studies", "--server", plain_server.address, "--tls"), {"GRPC_VERBOSITY": "INFO"}
    )
    assert "Handshake failed" in loud.stderr, loud.stderr


@pytest.mark.parametrize(
    ("argv", "env", "quiet"),
    [
        (["studies"], {}, True),
        (["worker", "-v"], {}, False),  # -v after the command is the CLI's too
        (["fleet", "slurm", "--", "-v"], {}, True),  # past --: the workers' own arguments
        (["-v", "studies"], {}, False),
        (["--verbose", "worker"], {}, False),
        (["studies"], {"GRPC_VERBOSITY": "DEBUG"}, False),
    ],
)
def test_grpc_is_quiet_unless_asked(
    argv: list[str], env: dict[str, str], quiet: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    archsearch_cli._quiet_grpc_core(argv)
    assert (os.environ.get("GRPC_VERBOSITY") == "NONE") is quiet


# ------------------------------------------------------------------------------ printed commands


def _commands(text: str) -> list[str]:
    return re.findall(r"`(archsearch [^`]*)`", text)


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[ArchsearchServer]:
    srv = ArchsearchServer(
        ServerConfig(storage=f"sqlite:///{tmp_path / 't.db'}", port=0, admin_tokens=[TOKEN])
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop(0)


def test_printed_commands_carry_the_token_file_and_run_as_printed(
    token_server: ArchsearchServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On a server that needs tokens, `launch` printed `archsearch show NAME --server ...`
    and `archsearch worker --server ...`, which failed with "missing token" as printed."""
    monkeypatch.delenv("ARCHSEARCH_TOKEN", raising=False)
    token_file = tmp_path / "my token"
    token_file.write_text(TOKEN + "\n")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(table_spec("tabtok", 2)))
    conn = ["--server", token_server.address, "--token-file", str(token_file)]
    assert archsearch_cli.main(["launch", "--spec", str(spec), *conn]) == 0
    out = capsys.readouterr().out
    show, worker = _commands(out)
    assert show == f"archsearch show tabtok {shlex.join(conn)}"
    # the worker command never carries this command's token (an admin's, copied onto every
    # GPU machine), but says which token it needs
    server = f"--server {token_server.address}"
    assert worker.startswith(
        f"archsearch worker {server} --token-file WORKER_TOKEN_FILE --trainer table --table"
    )
    assert "WORKER_TOKEN_FILE: a file holding one of the server's worker tokens" in out
    assert str(token_file) not in out.split("archsearch worker", 1)[1]
    assert archsearch_cli.main(shlex.split(show)[1:]) == 0  # runs as printed
    assert "tabtok" in capsys.readouterr().out
    # studies and show print the worker command the same way
    for command in (["studies"], ["show", "tabtok"]):
        assert archsearch_cli.main([*command, *conn]) == 0
        shown = capsys.readouterr().out
        assert f"archsearch worker {server} --token-file WORKER_TOKEN_FILE --trainer" in shown
    # and the same again says "already exists" once, not "already exists: ... already exists"
    assert archsearch_cli.main(["launch", "--spec", str(spec), *conn]) == 5  # the name is taken
    err = capsys.readouterr().err
    assert err.count("already exists") == 1 and err.startswith("archsearch: "), err


def test_a_token_from_the_environment_is_named_never_printed(
    token_server: ArchsearchServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ARCHSEARCH_TOKEN", TOKEN)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(table_spec("envtok", 2)))
    argv = ["launch", "--spec", str(spec), "--server", token_server.address]
    assert archsearch_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert TOKEN not in out
    note = "(with your token: --token-file FILE or ARCHSEARCH_TOKEN)"
    assert out.count(note) == 1, out
    assert f"`archsearch show envtok --server {token_server.address}` {note}" in out
    assert "--token-file WORKER_TOKEN_FILE --trainer table" in out  # a worker's token


def test_tls_flags_are_carried_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ARCHSEARCH_TOKEN", raising=False)
    ns = argparse.Namespace(server="h:1", token_file=None, tls_ca="/ca dir/ca.pem", tls=True)
    assert (
        _cli_common.hint(ns, "show x")
        == "`archsearch show x --server h:1 --tls-ca '/ca dir/ca.pem'`"
    )
    ns = argparse.Namespace(server="h:1", token_file=None, tls_ca=None, tls=True)
    assert _cli_common.conn_flags(ns) == "--server h:1 --tls"


# ------------------------------------------------------------------------------ --set


LAUNCH = ["launch", "--name", "x", "--trials", "2", "--space", "bert", "--server", "127.0.0.1:1"]


def _launch_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        code = archsearch_cli.main([*LAUNCH, *argv])
    except SystemExit as e:
        code = e.code  # type: ignore[assignment]
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("archsearch: ") and err.count("\n") == 1, err
    return err


def test_a_set_object_that_is_not_json_says_how_to_quote_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--set 'data.selection={method:dsir,k:300}'` failed later as "must be dict, got
    '{method:dsir,k:300}'", which hid that the text was not JSON."""
    err = _launch_error(["--set", "data.selection={method:dsir,k:300}"], capsys)
    assert "--set data.selection={method:dsir,k:300}: the value is not valid JSON" in err
    assert "keys and strings need double quotes" in err
    assert """--set 'data.selection={"method": "dsir", "k": 300}'""" in err
    err = _launch_error(["--set", "recipe.lr=[1,"], capsys)
    assert "recipe.lr=[1,: the value is not valid JSON" in err


def test_an_integer_of_thousands_of_digits_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """json.loads raises ValueError, not JSONDecodeError, past Python's 4300 digits."""
    huge = "9" * 5000
    err = _launch_error(["--set", f"recipe.max_steps={huge}"], capsys)
    assert "--set recipe.max_steps: Exceeds the limit (4300 digits)" in err
    assert "set_int_max_str_digits" not in err
    spec = tmp_path / "big.json"
    spec.write_text('{"name": "x", "space": "bert", "n_trials": ' + huge + "}")
    err = _launch_error(["--spec", str(spec)], capsys)
    assert f"--spec {spec} is not valid JSON: Exceeds the limit (4300 digits)" in err


def test_a_set_key_a_flag_also_sets_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """`--objective accuracy:max --set objectives=[...]`: the --set won, without a word."""
    err = _launch_error(
        ["--objective", "accuracy:max", "--set", 'objectives=["dev_loss:min"]'], capsys
    )
    assert "--set objectives=... would replace objectives set by --objective; give it once" in err
    err = _launch_error(["--set", "n_trials=9"], capsys)  # LAUNCH gives --trials
    assert "--set n_trials=... would replace n_trials set by --trials" in err
    err = _launch_error(["--table", "t.json", "--set", 'space_options={"x": 1}'], capsys)
    assert "--set space_options=... would replace space_options.table set by --table" in err
    two = ["--set", "recipe.max_steps=5", "--set", "recipe.max_steps=6"]
    err = _launch_error(two, capsys)
    assert "would replace recipe.max_steps set by --set recipe.max_steps=..." in err
    err = _launch_error(["--set", 'recipe={"max_steps": 5, "max_steps": 6}'], capsys)
    assert "--set recipe: key 'max_steps' appears twice in one object" in err
    # a flag's sub-field is not the same key: allowed
    from archsearch.server._cli_spec import build_spec

    args = archsearch_cli.build_parser().parse_args(
        [*LAUNCH, "--pruner", "median", "--set", "pruner.n_startup_trials=4"]
    )
    assert build_spec(args)["pruner"] == {"type": "median", "n_startup_trials": 4}


def test_a_set_field_without_its_method_says_to_set_the_method(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = _launch_error(["--set", "data.selection.k=300"], capsys)
    assert "data.selection.k: unknown field (method 'none' reads no other field)" in err
    assert "set data.selection.method too, e.g. --set data.selection.method=dsir" in err
    assert """--set 'data.selection={"method": "dsir", "k": 300}'""" in err


@pytest.mark.parametrize(
    "split",
    [
        ["data.selection=method:dsir", "data.selection=k:300"],  # brace expansion
        ['data.selection={"method":', '"dsir",', '"k":', "300}"],  # spaces, no quotes
    ],
)
def test_a_set_value_the_shell_split_says_to_quote_it(
    split: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Unquoted, `--set data.selection={"method":"dsir","k":300}` reaches us as two words
    (the shell's brace expansion): argparse said only "unrecognized arguments"."""
    err = _launch_error(["--set", *split], capsys)
    assert "unrecognized arguments: " in err
    assert "put the whole value in single quotes" in err


def test_other_unrecognized_arguments_get_no_set_hint(capsys: pytest.CaptureFixture[str]) -> None:
    err = _launch_error(["--bogus"], capsys)
    assert "unrecognized arguments: --bogus" in err and "single quotes" not in err


def test_set_values_that_are_text_or_json_still_parse() -> None:
    from archsearch.server._cli_spec import build_spec

    args = archsearch_cli.build_parser().parse_args(
        [*LAUNCH, "--set", "task=sst2", "--set", 'data.selection={"method": "random", "size": 9}']
    )
    spec: dict[str, Any] = build_spec(args)
    assert spec["task"] == "sst2"
    assert spec["data"]["selection"] == {"method": "random", "size": 9}


# ------------------------------------------------------------------------------ errors


def test_an_error_that_names_its_code_says_it_once() -> None:
    exists = ClientError(
        grpc.StatusCode.ALREADY_EXISTS, "study 'dsir1' already exists; choose another name"
    )
    err = _explain(exists, argparse.Namespace(server="h:1"))
    assert (str(err), err.code) == ("study 'dsir1' already exists; choose another name", 5)
    other = ClientError(grpc.StatusCode.NOT_FOUND, "no archsearch study named 'x'")
    assert str(_explain(other, argparse.Namespace())) == "not found: no archsearch study named 'x'"


def test_a_worker_says_which_glue_folder_it_reads(tmp_path: Path) -> None:
    """The README's promise: the worker logs which GLUE folder it uses when it starts (here
    one given by --glue-dir; the server is not there, so it gives up after --idle-exit)."""
    glue = tmp_path / "glue_data"
    glue.mkdir()
    port = free_port()
    done = subprocess.run(
        cli("worker", "--server", f"127.0.0.1:{port}", "--glue-dir", str(glue), "--idle-exit", "1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"GLUE data: using GLUE data from {glue} (given by --glue-dir)" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_spec_comes_from_standard_input_with_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--spec -`` reads the spec from standard input (it said "cannot read --spec -")."""
    import io

    from archsearch.server._cli_spec import build_spec

    monkeypatch.setattr("sys.stdin", io.StringIO('{"name": "piped", "n_trials": 3}'))
    args = archsearch_cli.build_parser().parse_args(["launch", "--spec", "-", "--space", "bert"])
    assert build_spec(args) == {"name": "piped", "n_trials": 3, "space": "bert"}
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(CliError, match=r"--spec - \(standard input\) is empty"):
        build_spec(args)


def test_a_call_an_older_server_lacks_says_so() -> None:
    """`resume` or `delete` against an older server printed "unimplemented: Method not
    found!", nothing about versions."""
    import grpc

    from archsearch.server.client import ClientError

    ns = argparse.Namespace(server="h:1", tls=False, tls_ca=None)
    e = ClientError(grpc.StatusCode.UNIMPLEMENTED, "Method not found!", "ResumeSearch")
    said = _cli_common._explain(e, ns)
    assert str(said) == (
        "the server at h:1 does not know ResumeSearch: it runs an older archsearch than this "
        "command; upgrade the server (`archsearch --version` on each side says which code it "
        "runs)"
    )
    assert said.code == 1
