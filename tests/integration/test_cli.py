"""The documented CLI commands against a real server, and a real bert worker through the service."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from _procs import (
    TABLE,
    Proc,
    ServerProc,
    cli,
    load_trials,
    table_spec,
    table_worker,
    wait_study,
)

from archsearch.server.client import SearchClient


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cli(*args), capture_output=True, text=True, timeout=120)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture
def server(tmp_path: Path):
    srv = ServerProc(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "server.log").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def error_server(tmp_path_factory: pytest.TempPathFactory):
    """One server for the refused commands (each changes nothing; a server per case cost a
    start each)."""
    folder = tmp_path_factory.mktemp("errors")
    srv = ServerProc(f"sqlite:///{folder / 's.db'}", folder / "server.log").start()
    yield srv
    srv.stop()


def _run_bert_search(server: ServerProc, tmp_path: Path, spec: dict) -> list:
    """Launches ``spec``, runs one bert worker until the study completes, returns its trials."""
    with SearchClient(server.address) as c:
        c.launch(spec)
        argv = cli(
            "worker",
            "--server",
            server.address,
            "--trainer",
            "bert",
            "--poll-seconds",
            "1",
            "--idle-exit",
            "3",
        )
        worker = Proc(argv, tmp_path / "w.log").start()
        try:
            wait_study(c, spec["name"], 240, [worker])
        finally:
            worker.stop()
        return c.list_trials(spec["name"])


def test_launch_studies_show_stop(server: ServerProc, tmp_path: Path) -> None:
    addr = server.address
    out = run(
        "launch",
        "--server",
        addr,
        "--name",
        "cli-tpe",
        "--space",
        "flexibert-small",
        "--trainer",
        "table",
        "--table",
        TABLE,
        "--loop",
        "tpe",
        "--trials",
        "4",
        "--objective",
        "accuracy:max",
        "--set",
        "seed=7",
    )
    assert "launched cli-tpe" in out.stdout
    # no worker yet: launch says how to start one for the study's trainer
    assert "no connected worker runs the table trainer (no worker is connected)" in out.stdout
    # with the study's own table (the worker reads the same file; the likeliest path)
    assert f"archsearch worker --server {addr} --trainer table --table {TABLE}" in out.stdout
    listed = json.loads(run("studies", "--server", addr, "--json").stdout)
    assert [s["name"] for s in listed] == ["cli-tpe"] and listed[0]["spec"]["seed"] == 7
    assert "best_trials" not in listed[0]  # ListStudies does not compute them: show does
    worker = Proc(
        cli(
            "worker",
            "--server",
            addr,
            "--trainer",
            "table",
            "--table",
            TABLE,
            "--poll-seconds",
            "1",
            "--idle-exit",
            "2",
        ),
        tmp_path / "w.log",
    ).start()
    try:
        with SearchClient(addr) as c:
            wait_study(c, "cli-tpe", 60, [worker])
        assert worker.wait(30) == 0  # --idle-exit
    finally:
        worker.stop()
    shown = json.loads(run("show", "cli-tpe", "--server", addr, "--json").stdout)
    assert shown["state"] == "completed" and len(shown["trials"]) == 4
    best = shown["best_trials"][0]
    assert best["values"][0] == max(t["values"][0] for t in shown["trials"])
    text = run("show", "cli-tpe", "--server", addr).stdout
    assert "best trial:" in text and "COMPLETE" in text
    assert "L2[" in text or "L4[" in text
    stopped = run("stop", "cli-tpe", "--server", addr)
    assert "cli-tpe had already completed: nothing to stop" in stopped.stdout
    # The worker said it left (LeaveWorker) when it exited: nobody counts as connected now,
    # not for a lease duration (60 s) after its last call.
    args = ("--space", "flexibert-small", "--table", TABLE, "--loop", "random", "--trials", "2")
    bert = run("launch", "--server", addr, "--name", "cli-bert", *args).stdout
    assert "no connected worker runs the bert trainer (no worker is connected)" in bert
    # The case: a flexibert-small search without --trainer is a bert search; a
    # connected table worker never takes it. studies and show say so.
    other = table_worker(addr, tmp_path / "w2.log").start()
    note = "no connected worker runs the bert trainer (the connected workers offer only table)"
    try:
        deadline = time.monotonic() + 60
        while note not in (studies := run("studies", "--server", addr).stdout):
            assert time.monotonic() < deadline and other.alive(), (studies, other.output())
            time.sleep(0.5)
        assert "cli-tpe" not in studies.split(note)[1]  # completed: no note
        assert note in run("show", "cli-bert", "--server", addr).stdout
    finally:
        other.stop()


def test_show_json_into_a_closed_pipe(server: ServerProc) -> None:
    """`archsearch show X --json | head -1`: the reader goes away; no BrokenPipe traceback."""
    with SearchClient(server.address) as c:
        c.launch(table_spec("piped", 2))
    p = subprocess.Popen(
        cli("show", "piped", "--server", server.address, "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()  # before the child writes: its writes meet a closed pipe
    err = p.stderr.read().decode()
    p.wait(60)
    assert "BrokenPipe" not in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["show", "missing"], "no archsearch study named 'missing'", 4),
        (["launch", "--name", "x", "--space", "bert", "--trials", "0"], "n_trials", 2),
        (
            ["launch", "--name", "x", "--space", "bert", "--trials", "2", "--set", "oops"],
            "expected KEY=VALUE",
            2,
        ),
        (["launch", "--spec", "/nonexistent.json"], "cannot read --spec", 2),
        (["launch", "--space", "bert", "--trials", "2"], "launch needs --name NAME", 2),
        (
            ["launch", "--name", "x", "--space", "bert", "--trials", "2", "--objective", "acc:max"],
            "the bert trainer never reports 'acc'",
            2,
        ),
        (["launch", "--pruner", "sometimes"], "argument --pruner: invalid choice", 2),
        (  # said by the server (the CLI no longer builds the loop to check it), with the fix
            [
                "launch",
                "--name",
                "x",
                "--space",
                "bert",
                "--trials",
                "2",
                "--set",
                "data.selection.k=300",
            ],
            "unknown field (method 'none' reads no other field); set data.selection.method too",
            2,
        ),
    ],
)
def test_cli_errors_name_the_problem(
    error_server: ServerProc, args, message: str, code: int
) -> None:
    r = run(*args, "--server", error_server.address, ok=False)
    assert r.returncode == code
    assert message in r.stderr and r.stderr.startswith("archsearch: ")
    assert "Traceback" not in r.stderr


def test_cli_without_server_says_how_to_start_one(tmp_path: Path) -> None:
    r = run("studies", "--server", "127.0.0.1:1", ok=False)
    assert r.returncode == 3 and "archsearch serve" in r.stderr and "Traceback" not in r.stderr


def test_bert_worker_through_the_service(server: ServerProc, tmp_path: Path) -> None:
    """Real training end to end: two tiny students, intermediate reports, metrics and cost."""
    spec = {
        "name": "bert-tiny",
        "space": "bert",
        "loop": "random",
        "n_trials": 2,
        "trainer": "bert",
        "objectives": ["accuracy:max", "params:min"],
        "space_options": {
            "num_hidden_layers": [1],
            "hidden_size": [32, 64],
            "num_attention_heads": [2],
            "intermediate_ratio": [2],
        },
        "recipe": {"max_steps": 12, "eval_every": 6, "batch_size": 16, "max_seq_length": 32},
        "data": {"train_subset": 256, "eval_subset": 64},
    }
    trials = _run_bert_search(server, tmp_path, spec)
    for t in trials:
        assert t.metrics["params"] > 0 and 0 <= t.metrics["accuracy"] <= 1
        assert list(t.values) == [t.metrics["accuracy"], t.metrics["params"]]
        assert sorted(t.intermediate_values) == [6, 12]
        assert t.intermediate_values[12] == t.metrics["accuracy"]


def test_multi_task_search_with_aggregate_objective(server: ServerProc, tmp_path: Path) -> None:
    """One candidate trained on two tasks per trial; the objective is the GLUE average,
    computed on the server from the raw per-task metrics; `show` prints both tasks."""
    spec = {
        "name": "multi",
        "space": "bert",
        "loop": "random",
        "n_trials": 2,
        "trainer": "bert",
        "tasks": ["sst2", "mrpc"],
        "objectives": ["glue_avg:max", "params:min"],
        "space_options": {
            "num_hidden_layers": [1],
            "hidden_size": [32, 64],
            "num_attention_heads": [2],
            "intermediate_ratio": [2],
        },
        "recipe": {
            "max_steps": 6,
            "eval_every": 6,
            "batch_size": 16,
            "max_seq_length": 32,
            "measure_latency": False,
        },
        "data": {"train_subset": 128, "eval_subset": 48},
    }
    trials = _run_bert_search(server, tmp_path, spec)
    for t in trials:
        m = t.metrics
        assert {"sst2.accuracy", "mrpc.f1", "mrpc.accuracy", "params", "flops"} <= set(m)
        expected = (m["sst2.accuracy"] + (m["mrpc.f1"] + m["mrpc.accuracy"]) / 2) / 2
        assert t.values[0] == pytest.approx(expected)
        assert t.values[1] == m["params"]
    text = run("show", "multi", "--server", server.address).stdout
    assert "sst2.accuracy" in text and "mrpc.f1" in text and "borda" in text
    assert "Pareto front" in text


def test_boshnas_search_on_the_flexibert_space_with_real_training(tmp_path: Path) -> None:
    """`archsearch launch` of a BOSHNAS search over heterogeneous FlexiBERT students (every
    operation type possible), trained for real by a bert worker, runs to completion; each
    trial's architecture picture is an optuna-dashboard artifact."""
    artifacts = tmp_path / "artifacts"
    storage = f"sqlite:///{tmp_path / 's.db'}"
    server = ServerProc(
        storage, tmp_path / "server.log", extra=("--artifact-dir", str(artifacts))
    ).start()
    spec = {
        "name": "flexi-boshnas",
        "space": "flexibert",
        "loop": "boshnas",
        "loop_options": {"library_size": 40, "n_init": 2, "batch_size": 2},
        "n_trials": 4,
        "trainer": "bert",
        "objectives": ["accuracy:max", "params:min"],
        "recipe": {
            "max_steps": 4,
            "eval_every": 4,
            "batch_size": 8,
            "max_seq_length": 24,
            "measure_latency": False,
        },
        "data": {"train_subset": 64, "eval_subset": 32},
    }
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    out = run("launch", "--server", server.address, "--spec", str(spec_file))
    assert "launched flexi-boshnas" in out.stdout
    worker = Proc(
        cli("worker", "--server", server.address, "--trainer", "bert", "--poll-seconds", "1"),
        tmp_path / "w.log",
    ).start()
    try:
        with SearchClient(server.address) as c:
            wait_study(c, "flexi-boshnas", 300, [worker])
            trials = c.list_trials("flexi-boshnas")
    finally:
        worker.stop()
        server.stop()
    assert len(trials) == 4
    frozen = load_trials(storage, "flexi-boshnas")
    for t in frozen:  # what optuna-dashboard --artifact-dir shows on each trial's page
        metas = [json.loads(v) for k, v in t.system_attrs.items() if k.startswith("artifacts:")]
        assert len(metas) == 1 and metas[0]["mimetype"] == "image/png"
        png = (artifacts / metas[0]["artifact_id"]).read_bytes()
        assert png.startswith(b"\x89PNG")
    archs = [json.loads(t.candidate_json)["architecture"] for t in trials]
    assert len({json.dumps(a, sort_keys=True) for a in archs}) == 4  # never one twice
    for t, arch in zip(trials, archs, strict=True):
        assert set(arch) == {"l", "o", "p", "h", "n", "f"}
        assert 0 <= t.metrics["accuracy"] <= 1 and t.metrics["params"] > 0
    assert all(
        " sa-" in t.user_attrs["arch"]
        or " l-" in t.user_attrs["arch"]
        or " c-" in t.user_attrs["arch"]
        for t in frozen
    )  # readable architectures
