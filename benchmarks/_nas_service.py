"""One BOSHNAS search of ``nas_table.py --service`` through the real service: an
``archsearch serve`` subprocess on SQLite and ``table`` worker processes on 127.0.0.1, read
back as a replay :class:`Run` (distinct architectures in completion order)."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

from archsearch.server._replay_stats import Run


def run_service(
    evals: int, table_path: str, task: str, workers: int, seed: int, loop_options: dict[str, Any]
) -> Run:
    """One BOSHNAS search through a real server and ``table`` worker processes."""
    from archsearch.server.client import SearchClient

    exe = Path(sys.executable).with_name("archsearch")
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "archsearch.server.cli"]
    procs: list[subprocess.Popen[Any]] = []
    with tempfile.TemporaryDirectory(prefix="nas-table-") as tmp:
        url = f"sqlite:///{tmp}/nas.db"
        env = {**os.environ, "ARCHSEARCH_CACHE_DIR": os.environ.get("ARCHSEARCH_CACHE_DIR", "")}
        if not env["ARCHSEARCH_CACHE_DIR"]:
            del env["ARCHSEARCH_CACHE_DIR"]
        try:
            log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115 - closed below
            server = subprocess.Popen(
                [*base, "serve", "--storage", url, "--host", "127.0.0.1", "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
            )
            procs.append(server)
            assert server.stdout is not None
            address = ""
            deadline = time.monotonic() + 60
            while not address and time.monotonic() < deadline:
                line = server.stdout.readline().decode()
                if line.startswith("archsearch serving on "):
                    address = line.split()[3]
                elif not line and server.poll() is not None:
                    break
            if not address:
                raise RuntimeError("archsearch serve did not start; see its log")
            name = "nas-table-boshnas"
            with SearchClient(address) as client:
                client.wait_ready(30)
                client.launch(
                    {
                        "name": name,
                        "space": "flexibert-small",
                        "space_options": {"table": table_path},
                        "trainer": "table",
                        "task": task,
                        "loop": "boshnas",
                        "loop_options": loop_options.get("boshnas", {}),
                        "seed": seed,
                        "n_trials": evals,
                    }
                )
                t0 = time.perf_counter()
                for i in range(workers):
                    procs.append(
                        subprocess.Popen(
                            [
                                *base,
                                "worker",
                                "--server",
                                address,
                                "--trainer",
                                "table",
                                "--table",
                                table_path,
                                "--poll-seconds",
                                "1",
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=open(Path(tmp) / f"worker{i}.log", "wb"),  # noqa: SIM115
                            env=env,
                        )
                    )
                deadline = time.monotonic() + 1800
                while time.monotonic() < deadline:
                    if client.get_study(name).state == 3:  # STUDY_COMPLETED
                        break
                    time.sleep(0.5)
                else:
                    raise TimeoutError("the service run did not finish in 30 minutes")
                seconds = time.perf_counter() - t0
        finally:
            for p in reversed(procs):
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        storage = optuna.storages.RDBStorage(url)
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
        storage.engine.dispose()
    run = Run("boshnas (service)", seed, seconds=seconds, asks=len(trials))
    best = -math.inf
    seen: set[str] = set()
    order = sorted(
        (t for t in trials if t.state == optuna.trial.TrialState.COMPLETE),
        key=lambda t: (t.datetime_complete, t.number),
    )
    for t in order:
        arch = str(t.user_attrs.get("arch"))
        if arch in seen or "duplicate_of" in t.user_attrs:
            continue
        seen.add(arch)
        best = max(best, float(t.values[0]))
        run.best.append(best)
    return run
