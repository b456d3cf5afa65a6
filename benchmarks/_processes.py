"""Processes a service benchmark starts (``archsearch serve``, clients), all stopped at the end,
and small helpers they share (``service_overhead.py``, ``soak.py``)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[Any], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{tail(log)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server did not listen on 127.0.0.1:{port} in {timeout:.0f}s:\n{tail(log)}")


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


class Processes:
    """Every process this script starts, stopped (TERM, then KILL) by :meth:`stop_all`."""

    def __init__(self) -> None:
        self.popens: list[subprocess.Popen[Any]] = []
        self.mps: list[Any] = []

    def popen(
        self, cmd: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[Any]:
        with open(log, "ab") as fh:
            p = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=fh,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C goes to us; we stop it in order
                cwd=str(REPO),
                env=env,
            )
        self.popens.append(p)
        return p

    def stop_popen(self, p: subprocess.Popen[Any], grace: float = 5.0) -> None:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait(5)
        if p.stdout is not None:
            p.stdout.close()
        if p in self.popens:
            self.popens.remove(p)

    def stop_clients(self, grace: float = 5.0) -> None:
        deadline = time.monotonic() + grace
        for proc in self.mps:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self.mps:
            if proc.is_alive():
                proc.terminate()
        for proc in self.mps:
            proc.join(3)
            if proc.is_alive():
                proc.kill()
                proc.join(3)
        self.mps.clear()

    def stop_all(self) -> None:
        self.stop_clients(grace=0.5)
        for p in list(self.popens):
            self.stop_popen(p, grace=3.0)


def start_server_process(
    procs: Processes,
    tmp: Path,
    tag: str,
    url: str,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> tuple[str, subprocess.Popen[Any]]:
    """Starts ``archsearch serve`` on ``url`` (log: ``tmp/ours-TAG.log``); (HOST:PORT, process)."""
    log = tmp / f"ours-{tag}.log"
    exe = Path(sys.executable).with_name("archsearch")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "archsearch.server.cli"]
    cmd += [
        "serve",
        "--storage",
        url,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--lease-seconds",
        "3600",  # nothing may expire during a run
        *extra,
    ]
    p = procs.popen(cmd, log, env)
    assert p.stdout is not None
    deadline = time.monotonic() + 60
    buf = b""
    target = ""
    while time.monotonic() < deadline and not target:
        if p.poll() is not None:
            raise RuntimeError(f"archsearch serve exited with {p.returncode}:\n{tail(log)}")
        r, _, _ = select.select([p.stdout], [], [], 0.5)
        if r:
            chunk = os.read(p.stdout.fileno(), 4096)
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if line.startswith("archsearch serving on "):
                    target = line.split()[3]
    if not target:
        raise RuntimeError(f"archsearch serve did not start in 60s:\n{tail(log)}")
    return target, p


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def pct(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) * 1000.0 if values else float("nan")
