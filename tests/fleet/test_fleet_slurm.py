"""``archsearch fleet slurm``: the real launcher on submitit's local executor, and its script.

The local executor runs the very jobs a SLURM array would (same pickled ``WorkerJob``, same
signal forwarding), as processes of this machine; only ``sbatch`` itself is not exercised.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import psutil
import pytest
from _procs import TABLE, ServerProc, cli, load_trials, table_spec, wait_for, wait_study
from optuna.trial import TrialState

from archsearch.fleet._slurm import _local_alive, job_states, last_error_line, parse_time_minutes
from archsearch.server.cli import main
from archsearch.server.client import SearchClient
from archsearch.v1 import archsearch_pb2 as pb

pytestmark = pytest.mark.timeout(120)


def _run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        cli(*argv), capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def _kill_tree(pid: int) -> None:
    """Last resort at teardown: a controller and everything under it, by pid."""
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


@pytest.fixture
def server(tmp_path: Path):
    # A long lease: only a hand-back can explain a stopped worker's trial coming back at once.
    srv = ServerProc(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "server.log", lease=120)
    srv.start()
    yield srv
    srv.stop()


def test_four_local_jobs_finish_a_study_two_stopped_mid_trial(
    tmp_path: Path, server, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "fleet"
    n_trials = 6
    with SearchClient(server.address) as client:
        client.launch(table_spec("fleet", n_trials))
    out = _run(
        "fleet", "slurm", "--cluster", "local", "--server", server.address,
        "--workers", "4", "--time", "10", "--folder", str(folder), "--",
        "--trainer", "table", "--table", TABLE, "--duration", "3",
        "--poll-seconds", "1", "--idle-exit", "2",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    jobs = json.loads((folder / "fleet.json").read_text())["submissions"][0]["members"]
    assert len(jobs) == 4 and f"submitted 4 worker job(s) (local): {' '.join(jobs)}" in out.stdout
    try:
        with SearchClient(server.address) as client:
            busy = wait_for(
                lambda: (
                    r
                    if len(
                        r := {
                            t.worker_id: t
                            for t in client.list_trials("fleet")
                            if t.state == pb.RUNNING and t.worker_id
                        }
                    )
                    >= 2
                    else None
                ),
                60,
                "two workers in a trial",
            )
            (wid_a, trial_a), (wid_b, trial_b) = sorted(busy.items())[:2]
            job_a, job_b = (w.removeprefix("local-") for w in (wid_a, wid_b))
            assert {job_a, job_b} <= set(jobs)
            # A: SLURM's warning before a time limit or pre-emption, as the job receives it.
            (task_a,) = psutil.Process(int(job_a)).children()
            os.kill(task_a.pid, signal.SIGUSR2)
            # B: `fleet stop` of one job.
            assert main(["fleet", "stop", "--folder", str(folder), "--job", job_b]) == 0
            assert f"stopping 1 worker(s): {job_b}" in capsys.readouterr().out
            study = wait_study(client, "fleet", 90)
            # seen once under load (2 processes): "completed", 6 distinct, 4 COMPLETE; say every
            # trial then, for whoever meets it next
            assert study.n_complete >= n_trials, [
                (t.number, pb.TrialState.Name(t.state), t.worker_id, t.retry_of, t.fail_reason)
                for t in client.list_trials("fleet")
            ]
        trials = load_trials(server.storage, "fleet")
        # The trials A and B held when signalled, read afterwards (listing and signal are not
        # atomic: a trial listed as running may have finished by then, the worker being in its
        # next one): handed back (not expired: the lease is 120 s), finished by another worker.
        failed = [t for t in trials if t.state == TrialState.FAIL]
        assert sorted(t.user_attrs["worker"] for t in failed) == [wid_a, wid_b]
        assert min(t.number for t in failed) >= min(trial_a.number, trial_b.number)
        for t in failed:
            assert "SIGTERM" in t.user_attrs["fail_reason"]
            retry = next(r for r in trials if r.system_attrs.get("failed_trial") == t.number)
            assert retry.state == TrialState.COMPLETE
            assert retry.user_attrs["worker"] not in (wid_a, wid_b)
            assert retry.params == t.params
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        roots = Counter(int(t.system_attrs.get("failed_trial", t.number)) for t in complete)
        assert len(roots) == n_trials and set(roots.values()) == {1}  # none lost, none twice
        # Every job ends by itself: the stopped ones after their hand-back, the others when
        # idle; each worker exited 0, so each job completed.
        wait_for(
            lambda: "RUNNING" not in job_states(folder, "local", jobs).values(), 60, "the jobs' end"
        )
        assert main(["fleet", "status", "--folder", str(folder)]) == 0
        status = capsys.readouterr().out
        for jid in jobs:
            assert any(line.split()[:2] == [jid, "COMPLETED"] for line in status.splitlines())
        logs = {j: next(folder.glob(f"{j}_0_log.out")).read_text() for j in (job_a, job_b)}
        assert "SIGUSR2 received; the worker hands its trial back" in logs[job_a]
        assert "SIGTERM received; the worker hands its trial back" in logs[job_b]
    finally:
        main(["fleet", "stop", "--folder", str(folder)])
        for jid in jobs:
            if psutil.pid_exists(int(jid)):
                _kill_tree(int(jid))


def test_dry_run_prints_submitits_array_script(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "fleet", "slurm", "--server", "gpu-head:50051", "--workers", "16",
            "--gpus-per-worker", "2", "--partition", "a100", "--time", "1-00:00:00",
            "--array-parallelism", "8", "--requeue", "--setup", "module load cuda",
            "--cpus-per-worker", "8", "--mem-gb", "32", "--sbatch", "mail-type=END",
            "--folder", "/shared/fleet", "--dry-run", "--", "--trainer", "bert",
            "--study", "sst2-tpe",
        ]
    )  # fmt: skip
    assert code == 0
    script = capsys.readouterr().out
    flags = {line for line in script.splitlines() if line.startswith("#SBATCH")}
    for flag in (
        "#SBATCH --array=0-15%8",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --partition=a100",
        "#SBATCH --time=1440",
        "#SBATCH --signal=USR2@90",
        "#SBATCH --requeue",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32768M",
        "#SBATCH --mail-type=END",
        "#SBATCH --output=/shared/fleet/%A_%a_0_log.out",
    ):
        assert flag in flags, script
    assert "module load cuda" in script
    assert "-m submitit.core._submit /shared/fleet" in script
    assert (
        "# each array task runs: archsearch worker --server gpu-head:50051 --trainer bert "
        "--study sst2-tpe --device cuda --worker-id slurm-<job id>"
    ) in script
    # submitit's own default (3) shrank a long study's array after three time limits
    assert "# requeued after at most 100 time limits (--max-requeues)" in script


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--time", "4h"], "--time '4h': expected SLURM's format"),
        (["--time", "0"], "must be at least one minute"),
        (["--time", "10", "--", "--server", "x:1"], "--server after `--`: the fleet sets it"),
        (["--time", "10", "--", "--worker-id", "w"], "each worker its own id"),
        (["--time", "10", "--", "--bogus"], "--bogus after `--`: not an option of"),
        (
            ["--time", "10", "--", "--trainer", "table", "--trainer", "nosuch"],
            "--trainer nosuch after `--`: unknown trainer 'nosuch': use one of ",
        ),
        (["--time", "10", "--signal-delay", "5"], "--signal-delay 5: too short"),
        (["--time", "10", "--sbatch", "x"], "--sbatch 'x': expected KEY=VALUE"),
        (["--time", "10", "--workers", "0"], "expected a whole number >= 1"),
        (["--time", "10"], "no SLURM here: `sbatch` and `srun` are not on PATH"),
        (["--time", "10", "--server", "127.0.0.1:50051"], "the SLURM nodes cannot reach"),
        (["--time", "10", "--server", "localhost:50051", "--dry-run"], "loopback address"),
        (["--time", "1:00", "--signal-delay", "120"], "SLURM's warning would come before"),
        (["--time", "10", "--cluster", "local", "--dry-run"], "--cluster local runs the"),
        (["--time", "10", "--max-requeues", "5"], "--max-requeues without --requeue"),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, whatever the machine has
    base = ["fleet", "slurm", "--server", "h:1", "--workers", "2", "--folder", str(tmp_path)]
    try:
        code = main([*base, *argv])
    except SystemExit as e:  # argparse's own errors
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert code in (1, 2) and message in err and err.startswith("archsearch: "), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_an_unknown_trainer_is_refused_before_a_local_job_starts(capsys, tmp_path) -> None:
    folder = tmp_path / "fleet"
    code = main(
        [
            "fleet", "slurm", "--cluster", "local", "--server", "127.0.0.1:1", "--workers",
            "1", "--time", "10", "--folder", str(folder), "--", "--trainer", "nosuch",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(
        "archsearch: --trainer nosuch after `--`: unknown trainer 'nosuch': use one of "
    ), err
    assert len(err.strip().splitlines()) == 1 and not folder.exists()  # nothing submitted


def test_status_says_why_a_job_failed_and_its_log_has_no_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A worker that fails on its machine (here: a --table file it does not have) exits 2;
    its job is FAILED, and `fleet status` says the worker's error line."""
    folder = tmp_path / "fleet"
    missing = tmp_path / "no-such-table.json"
    out = _run(
        "fleet", "slurm", "--cluster", "local", "--server", "127.0.0.1:1", "--workers", "1",
        "--time", "10", "--folder", str(folder), "--", "--trainer", "table",
        "--table", str(missing),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (job,) = json.loads((folder / "fleet.json").read_text())["submissions"][0]["members"]
    try:
        wait_for(lambda: job_states(folder, "local", [job])[job] != "RUNNING", 60, "the job")
        assert main(["fleet", "status", "--folder", str(folder)]) == 0
        row = next(s for s in capsys.readouterr().out.splitlines() if s.startswith(job))
        assert row.split(None, 1)[1] == (
            f"FAILED: archsearch: table: file {missing} not found (pass the path of a "
            "FlexiBERT table JSON)"
        ), row
        log = next(folder.glob(f"{job}_0_log.out")).read_text()
        assert "Traceback" not in log, log
        assert log.rstrip().endswith(
            f"archsearch fleet: job failed: archsearch worker local-{job} exited with status 2 "
            "(its error is above)"
        ), log
    finally:
        if psutil.pid_exists(int(job)):
            _kill_tree(int(job))


@pytest.mark.parametrize(
    ("log", "line"),
    [
        # The worker's own error line, not the job's traceback or exit lines after it.
        ("archsearch: unknown trainer 'x'\narchsearch fleet: worker w exited with 2\n"
         "Traceback (most recent call last):\nWorkerExitError: worker w exited with status 2\n",
         "archsearch: unknown trainer 'x'"),
        # A worker that crashed: its exception.
        ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
         "torch.OutOfMemoryError: CUDA out of memory.\narchsearch fleet: worker w exited with 1\n",
         "torch.OutOfMemoryError: CUDA out of memory."),
        # SLURM's word on a killed job.
        ("archsearch fleet: worker w exited with -9\nslurmstepd: error: Detected 1 oom-kill "
         "event(s)\n", "slurmstepd: error: Detected 1 oom-kill event(s)"),
        ("archsearch fleet: worker w exited with -9\n",
         "archsearch fleet: worker w exited with -9"),
        ("submitit INFO (2024) - Starting\n", None),
    ],
)  # fmt: skip
def test_last_error_line_of_a_job_log(log: str, line: str | None) -> None:
    assert last_error_line(log) == line


def test_status_without_a_fleet_says_which_folder(capsys, tmp_path) -> None:
    assert main(["fleet", "status", "--folder", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"archsearch: no fleet in {tmp_path}" in err and "--folder" in err


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("240", 240), ("4:00:00", 240), ("90:30", 91), ("1-12", 2160), ("2-00:30", 2910),
     ("1-00:00:01", 1441)],
)  # fmt: skip
def test_slurm_time_formats(text: str, minutes: int) -> None:
    assert parse_time_minutes(text) == minutes


def test_requeue_after_slurms_warning_restarts_the_worker(
    tmp_path: Path, server, capsys: pytest.CaptureFixture[str]
) -> None:
    """--requeue: after USR2 the worker hands back, then submitit requeues the job (its local
    executor restarts it) and a new worker with the same id finishes the study."""
    folder = tmp_path / "fleet"
    with SearchClient(server.address) as client:
        client.launch(table_spec("requeue", 2))
    out = _run(
        "fleet", "slurm", "--cluster", "local", "--server", server.address, "--requeue",
        "--workers", "1", "--time", "10", "--folder", str(folder), "--",
        "--trainer", "table", "--table", TABLE, "--duration", "3",
        "--poll-seconds", "1", "--idle-exit", "2",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (job,) = json.loads((folder / "fleet.json").read_text())["submissions"][0]["members"]
    try:
        with SearchClient(server.address) as client:
            (first,) = wait_for(
                lambda: [t for t in client.list_trials("requeue") if t.state == pb.RUNNING],
                60,
                "a running trial",
            )
            (task,) = psutil.Process(int(job)).children()
            os.kill(task.pid, signal.SIGUSR2)
            wait_study(client, "requeue", 90)
        wait_for(lambda: not _local_alive(job), 60, "the job to end")
        log = next(folder.glob(f"{job}_0_log.out")).read_text()
        assert "SIGUSR2 received" in log and f"Requeued job {job}" in log
        assert log.count(f"worker local-{job} registered") == 2  # the same worker, again
        trials = load_trials(server.storage, "requeue")
        # The trial it held when signalled (the one listed, or its next one if that finished
        # between listing and signal) was handed back.
        (handed,) = [t for t in trials if t.state == TrialState.FAIL]
        assert handed.number >= first.number and "SIGTERM" in handed.user_attrs["fail_reason"]
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        assert len(done) == 2 and {t.user_attrs["worker"] for t in done} == {f"local-{job}"}
        assert job_states(folder, "local", [job]) == {job: "COMPLETED"}
    finally:
        main(["fleet", "stop", "--folder", str(folder)])
        if psutil.pid_exists(int(job)):
            _kill_tree(int(job))


def test_a_hand_edited_fleet_file_is_said_not_a_traceback(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "fleet.json").write_text(json.dumps({"backend": "slurm", "submissions": []}))
    assert main(["fleet", "status", "--folder", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "lacks server, cluster (edited by hand?)" in err and "Traceback" not in err


def test_a_worker_killed_by_a_signal_is_said_so() -> None:
    from archsearch.fleet._slurm import _killed

    assert _killed(-9) == " (killed by SIGKILL)" and _killed(2) == "" and _killed(0) == ""


def test_status_of_a_slurm_fleet_where_sacct_is_missing_says_so(
    capsys, tmp_path, monkeypatch
) -> None:
    """Every job read UNKNOWN, with a warning per job, exit 0."""
    from archsearch.fleet import _state

    _state.record(tmp_path, "slurm", {"server": "h:1", "cluster": "slurm"}, ["17_0", "17_1"])
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert main(["fleet", "status", "--folder", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "sacct (SLURM's accounting command) is not on PATH here" in err
