"""Running ``archsearch worker`` as a child process and forwarding stop signals to it.

The engines deliver their warnings to the process they started, and each in its own way:
SLURM (through submitit) sends USR2 some seconds before a time limit or a pre-emption and
makes submitit's process ignore SIGTERM; submitit's local executor sends SIGINT or SIGTERM;
Ray kills the actor's process. The worker hands its lease back on SIGTERM only, so the
supervisor here turns USR2, SIGTERM and SIGINT into one SIGTERM for the child, and the child
asks the kernel for a SIGTERM of its own should the supervisor die first (Linux's
parent-death signal), so a killed supervisor still gets the lease handed back.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("archsearch.fleet")

#: the signals that mean "stop soon": SLURM's warning (USR2), a cancel, an interrupt
STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1


def worker_argv(python: str | None = None) -> list[str]:
    """The command that starts ``archsearch worker`` with this installation's interpreter."""
    return [python or sys.executable, "-m", "archsearch.server.cli", "worker"]


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    # SLURM may send USR2 to every process of the step: its default action would kill the
    # worker before it hands back; the supervisor turns it into SIGTERM instead. An ignored
    # signal stays ignored across exec. libc directly: signal.signal refuses to run here when
    # the supervisor forked from a thread other than the main one (a Ray actor's method).
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.signal(int(signal.SIGUSR2), 1)  # 1 == SIG_IGN
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    else:
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class WorkerChild:
    """One ``archsearch worker`` process and the signal forwarding around it.

    Args:
        argv: the full command line of the worker.
        env: extra environment variables for the worker.
    """

    def __init__(
        self, argv: Sequence[str], env: dict[str, str] | None = None, keep_error: bool = False
    ) -> None:
        self.argv = list(argv)
        self.env = dict(os.environ, **(env or {}))
        self.proc: subprocess.Popen[bytes] | None = None
        #: the stop signals received so far (names), for the job's log and its caller
        self.signals: list[str] = []
        #: with ``keep_error``: the worker's last ``archsearch: ...`` line on stderr (its error)
        self.last_error = ""
        self._keep_error = keep_error
        self._copier: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> WorkerChild:
        """Starts the worker; its output goes to this process's stdout and stderr (with
        ``keep_error``, stderr through this process, its last error line kept)."""
        stderr = subprocess.PIPE if self._keep_error else None
        self.proc = subprocess.Popen(
            self.argv, env=self.env, preexec_fn=_child_setup, stderr=stderr
        )
        if self.proc.stderr is not None:
            self._copier = threading.Thread(target=self._copy_stderr, args=(self.proc.stderr,))
            self._copier.daemon = True
            self._copier.start()
        log.info("archsearch fleet: worker pid %d: %s", self.proc.pid, " ".join(self.argv))
        return self

    def _copy_stderr(self, pipe: Any) -> None:
        for raw in pipe:
            sys.stderr.buffer.write(raw)
            sys.stderr.flush()
            line = raw.decode(errors="replace").strip()
            if line.startswith("archsearch: "):  # the CLI's one-line errors
                self.last_error = line

    def stop(self, why: str = "stop") -> None:
        """Sends the worker SIGTERM (once is enough; more are harmless)."""
        with self._lock:
            self.signals.append(why)
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)

    def install_forwarding(self) -> dict[int, Callable[..., object] | int | None]:
        """Makes this process's stop signals stop the worker; returns the handlers replaced.

        Must be called from the main thread (Python installs signal handlers only there).
        """
        previous: dict[int, Callable[..., object] | int | None] = {}

        def forward(signum: int, _frame: object) -> None:
            name = signal.Signals(signum).name
            log.warning("archsearch fleet: %s received; the worker hands its trial back", name)
            self.stop(name)

        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, forward)
        return previous

    def wait(self) -> int:
        """Waits for the worker to exit; returns its exit status (negative: killed by it)."""
        assert self.proc is not None, "start() first"
        rc = self.proc.wait()
        if self._copier is not None:  # its last lines, ``last_error`` among them
            self._copier.join(timeout=10)
        return rc
