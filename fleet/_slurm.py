"""Workers on SLURM: one submitit job array, each job supervising one ``archsearch worker``.

Under SLURM, submitit asks for ``--signal=USR2@<delay>`` (USR2 that many seconds before the
time limit, and on pre-emption), makes its own process ignore SIGTERM and, on USR2,
checkpoints and requeues the job. The archsearch worker must instead hand its lease back
before the machine goes, so each job runs the worker as a child process (``WorkerChild``) and
turns USR2 (and SIGTERM, SIGINT) into the worker's SIGTERM. With ``requeue`` it then lets
submitit requeue the job, so the array keeps its size through time limits and pre-emptions.

submitit's local executor runs the very same jobs as processes of this machine (``cluster
"local"``): that is how the tests, and a user without SLURM, run a fleet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from archsearch.fleet._child import WorkerChild, worker_argv

log = logging.getLogger("archsearch.fleet")

#: SLURM's ``--time`` formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?\Z")


def _killed(rc: int) -> str:
    """`` (killed by SIGKILL)`` for a status that says a signal ended the worker, else ""."""
    if rc >= 0:
        return ""
    try:
        return f" (killed by {signal.Signals(-rc).name})"
    except ValueError:
        return f" (killed by signal {-rc})"


class WorkerExitError(RuntimeError):
    """The worker of a job exited with a non-zero status (its log says why)."""


def _one_line_for_worker_exit() -> None:
    """Makes this job process say an uncaught WorkerExitError in one line (submitit re-raises
    the job's exception after recording it; Python would print its traceback into the log)."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if isinstance(value, WorkerExitError):
            where = "" if " killed by " in str(value) else " (its error is above)"
            print(f"archsearch fleet: job failed: {value}{where}", flush=True)
        else:
            previous(kind, value, tb)

    sys.excepthook = hook


def parse_time_minutes(text: str) -> int:
    """Minutes in a SLURM ``--time`` value ("240", "4:00:00", "1-12", "2-00:30:00").

    Raises:
        ValueError: not one of SLURM's formats, or zero.
    """
    m = _TIME_RE.match(text.strip())
    if not m:
        raise ValueError(
            f"--time {text!r}: expected SLURM's format, e.g. 240 (minutes), 4:00:00 or 1-12:00:00"
        )
    days, a, b, c = m.groups()
    d = int(days or 0)
    if days is not None:  # D-H, D-H:M, D-H:M:S
        seconds = d * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # H:M:S
        seconds = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # M:S
        seconds = int(a) * 60 + int(b)
    else:  # M
        seconds = int(a) * 60
    minutes = -(-seconds // 60)  # SLURM rounds up to whole minutes
    if minutes < 1:
        raise ValueError(f"--time {text!r}: must be at least one minute")
    return minutes


class WorkerJob:
    """The function each job of the array runs: the worker as a child, signals forwarded.

    Picklable (submitit sends it to the nodes); it carries only the worker's options.

    Args:
        worker_args: options for ``archsearch worker`` (server, token file, trainers, ...).
        requeue: after a SLURM warning (USR2) and the hand-back, let submitit requeue the job.
    """

    def __init__(self, worker_args: list[str], requeue: bool = False) -> None:
        self.worker_args = list(worker_args)
        self.requeue = requeue

    def __call__(self) -> int:
        import submitit

        env = submitit.JobEnvironment()
        # One id per array task, stable across requeues: "slurm-1234.7", "local-5678".
        worker_id = f"{env.cluster}-{str(env.job_id).replace('_', '.')}"
        argv = [*worker_argv(), *self.worker_args, "--worker-id", worker_id]
        child = WorkerChild(argv)
        previous = child.install_forwarding()
        child.start()
        print(
            f"archsearch fleet: job {env.job_id} runs worker {worker_id} as pid "
            f"{child.proc.pid if child.proc else '?'}",
            flush=True,
        )
        rc = child.wait()
        print(f"archsearch fleet: worker {worker_id} exited with {rc}{_killed(rc)}", flush=True)
        if self.requeue and "SIGUSR2" in child.signals:
            submitit_handler = previous.get(signal.SIGUSR2)
            if callable(submitit_handler):
                # submitit checkpoints (``checkpoint`` below), requeues and exits the job.
                submitit_handler(signal.SIGUSR2, None)
        if rc != 0:
            # submitit records the failure (the job's state: FAILED) from the exception; the
            # worker said why in the log already, so the exception is one line, not a traceback.
            _one_line_for_worker_exit()
            raise WorkerExitError(
                f"archsearch worker {worker_id} exited with status {rc}{_killed(rc)}"
            )
        return rc

    def checkpoint(self) -> Any:
        """What submitit requeues: a fresh job with the same options."""
        import submitit

        return submitit.helpers.DelayedSubmission(WorkerJob(self.worker_args, self.requeue))


@dataclasses.dataclass
class SlurmOptions:
    """How to submit the array (the ``fleet slurm`` flags)."""

    workers: int
    folder: Path
    time_minutes: int
    gpus_per_worker: int = 0
    cpus_per_worker: int | None = None
    mem_gb: float | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int | None = None
    signal_delay_s: int = 90
    setup: list[str] = dataclasses.field(default_factory=list)
    extra: dict[str, str | bool] = dataclasses.field(default_factory=dict)
    python: str | None = None
    job_name: str = "archsearch-worker"
    requeue: bool = False
    #: time limits a job is requeued after (submitit's ``max_num_timeout``; its default, 3,
    #: shrank a long study's array after three time limits)
    max_requeues: int = 100

    def slurm_parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "job_name": self.job_name,
            "time": self.time_minutes,
            "nodes": 1,
            "ntasks_per_node": 1,
            "signal_delay_s": self.signal_delay_s,
            "stderr_to_stdout": True,
        }
        optional = {
            "partition": self.partition,
            "account": self.account,
            "qos": self.qos,
            "constraint": self.constraint,
            "cpus_per_task": self.cpus_per_worker,
            "array_parallelism": self.array_parallelism,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        if self.gpus_per_worker:
            params["gpus_per_node"] = self.gpus_per_worker
        if self.mem_gb is not None:
            params["mem"] = f"{int(self.mem_gb * 1024)}M"
        if self.setup:
            params["setup"] = list(self.setup)
        extra = dict(self.extra)
        if self.requeue:
            extra.setdefault("requeue", True)  # sbatch --requeue: pre-empted jobs come back
        if extra:
            params["additional_parameters"] = extra
        return params


def _slurm_executor_class(dry_run: bool) -> Any:
    import submitit

    if not dry_run:
        return submitit.SlurmExecutor

    class _ScriptOnly(submitit.SlurmExecutor):  # type: ignore[misc]
        """submitit's own SLURM executor where no ``srun`` is needed: only its script."""

        @classmethod
        def affinity(cls) -> int:
            return 1

    return _ScriptOnly


def sbatch_script(opts: SlurmOptions) -> str:
    """The sbatch script ``submit`` would send for ``opts`` (submitit's own text)."""
    ex = _slurm_executor_class(dry_run=True)(
        opts.folder, max_num_timeout=opts.max_requeues, python=opts.python
    )
    ex.update_parameters(**opts.slurm_parameters())
    if opts.workers > 1:
        ex.parameters["map_count"] = opts.workers  # as submitit does for an array
    return str(ex._make_submission_file_text(ex._submitit_command_str, uid="dry-run"))


def have_slurm() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("srun") is not None


def submit(opts: SlurmOptions, worker_args: list[str], cluster: str = "slurm") -> list[str]:
    """Submits ``opts.workers`` jobs running ``archsearch worker worker_args``; their ids.

    Args:
        cluster: "slurm" (one job array) or "local" (processes on this machine, through
            submitit's local executor; the SLURM-only options are not used there).

    Raises:
        ValueError: a parameter submitit or sbatch refused.
    """
    import submitit

    job = WorkerJob(worker_args, requeue=opts.requeue)
    opts.folder.mkdir(parents=True, exist_ok=True)
    ex: Any
    if cluster == "local":
        ex = submitit.LocalExecutor(opts.folder, max_num_timeout=opts.max_requeues)
        ex.update_parameters(
            timeout_min=opts.time_minutes,
            gpus_per_node=opts.gpus_per_worker,
            signal_delay_s=opts.signal_delay_s,
            stderr_to_stdout=True,
        )
    else:
        ex = _slurm_executor_class(dry_run=False)(
            opts.folder, max_num_timeout=opts.max_requeues, python=opts.python
        )
        ex.update_parameters(**opts.slurm_parameters())
    with _local_jobs_detached(cluster == "local"), ex.batch():
        jobs = [ex.submit(job) for _ in range(opts.workers)]
    return [str(j.job_id) for j in jobs]


@contextlib.contextmanager
def _local_jobs_detached(local: bool) -> Iterator[None]:
    """Local jobs outlive this command: their controllers must not inherit its standard
    streams (a pipe reading our output would stay open until the last job ends)."""
    if not local:
        yield
        return
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        yield
    finally:
        for fd, old in zip((0, 1, 2), saved, strict=True):
            os.dup2(old, fd)
            os.close(old)
        os.close(devnull)


# ------------------------------------------------------------------ status and stop


def _local_alive(job_id: str) -> bool:
    """Whether the local job's controller (its pid is the job id) still runs submitit."""
    try:
        cmdline = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return b"submitit" in cmdline


def job_states(folder: Path, cluster: str, job_ids: list[str]) -> dict[str, str]:
    """Each job's state: SLURM's (through sacct, as submitit reads it) or, for local jobs,
    RUNNING / FINISHED / FAILED from the controller process and submitit's result file."""
    import submitit

    states: dict[str, str] = {}
    if cluster == "slurm":
        jobs: list[Any] = [submitit.SlurmJob(folder, jid) for jid in job_ids]
        for j in jobs:
            states[j.job_id] = str(j.state)
        return states
    for jid in job_ids:
        if _local_alive(jid):
            states[jid] = "RUNNING"
            continue
        job: Any = submitit.LocalJob(folder, jid)
        if not job.paths.result_pickle.exists():
            states[jid] = "STOPPED"
            continue
        try:
            outcome, _ = submitit.core.utils.pickle_load(job.paths.result_pickle)
        except Exception:  # an unreadable result: say so rather than guess
            states[jid] = "UNKNOWN"
            continue
        states[jid] = "COMPLETED" if outcome == "success" else "FAILED"
    return states


#: an exception's line at the end of a traceback: ``RuntimeError: CUDA error: ...``
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b(: .*)?$")
#: what says why a job failed, most telling first: the worker's own error line (the CLI's
#: prefix), SLURM's (time limit, out of memory), an exception, the worker's exit status
_REASONS = (
    lambda line: line.startswith("archsearch: "),
    lambda line: line.startswith("slurmstepd: error:"),
    lambda line: bool(_EXCEPTION_LINE.match(line)) and "WorkerExitError" not in line,
    lambda line: line.startswith("archsearch fleet: worker ") and " exited with " in line,
)
_LOG_TAIL_BYTES = 256 * 1024
_REASON_CHARS = 300


def last_error_line(text: str) -> str | None:
    """The line of a job's log that best says why it failed, or None."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for telling in _REASONS:
        for line in reversed(lines):
            if telling(line):
                return line if len(line) <= _REASON_CHARS else line[: _REASON_CHARS - 3] + "..."
    return None


def failure_reason(folder: Path, cluster: str, job_id: str) -> str | None:
    """Why a failed job failed, from its log (:func:`last_error_line`); None when the log is
    not readable here (another machine's folder) or says nothing telling."""
    import submitit

    job: Any = (submitit.SlurmJob if cluster == "slurm" else submitit.LocalJob)(folder, job_id)
    text = ""
    for path in (job.paths.stdout, job.paths.stderr):  # one file: stderr goes to stdout
        try:
            with open(path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - _LOG_TAIL_BYTES))
                text += f.read().decode("utf-8", errors="replace") + "\n"
        except OSError:
            continue
    return last_error_line(text)


def stop_jobs(folder: Path, cluster: str, job_ids: list[str]) -> list[str]:
    """Stops the jobs; their workers hand their trials back. Returns the ids signalled.

    SLURM: ``scancel`` (SIGTERM to every process of the job, the worker included; SIGKILL
    after SLURM's KillWait, 30 s by default, longer than the worker's 10 s stop grace).
    Local: SIGTERM to the job's controller, which passes it on to the job.
    """
    import submitit

    if cluster == "slurm":
        for jid in job_ids:
            submitit.SlurmJob(folder, jid).cancel(check=False)
        return list(job_ids)
    stopped = []
    for jid in job_ids:
        if _local_alive(jid):
            try:
                os.kill(int(jid), signal.SIGTERM)
                stopped.append(jid)
            except ProcessLookupError:
                pass
    return stopped
