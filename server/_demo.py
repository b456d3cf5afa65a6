"""``archsearch demo``: the whole service on one machine, with real training.

A server on a free loopback port with a SQLite file, worker processes with the ``bert`` trainer
on the CPU, a TPE search of tiny BERT students on SST-2 with median pruning, live progress, a
final table and the command that opens optuna-dashboard on the result.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from archsearch.server._cli_common import CliError
from archsearch.server._format import (
    TRIAL_STATE_NAMES,
    architecture_params,
    describe,
    format_study,
)
from archsearch.server.app import ArchsearchServer, ServerConfig
from archsearch.server.client import SearchClient
from archsearch.v1 import archsearch_pb2 as pb

DEMO_SPACE = {
    "num_hidden_layers": [1, 2, 3],
    "hidden_size": [64, 128],
    "num_attention_heads": [2, 4],
    "intermediate_ratio": [2, 4],
}


def demo_spec(name: str, trials: int, steps: int, hub: bool = False) -> dict[str, object]:
    """The demo's search; ``hub``: its SST-2 is the hub's (``data.source`` hub, which the
    offline workers read from the datasets cache), not a local folder's."""
    return {
        "name": name,
        "space": "bert",
        "space_options": DEMO_SPACE,
        "loop": "tpe",
        "loop_options": {"n_startup_trials": 4},
        "n_trials": trials,
        "task": "sst2",
        "trainer": "bert",
        "objectives": [{"metric": "accuracy", "direction": "maximize"}],
        # a pruner needs a score before the last step and a trial left after its start-up
        "pruner": (
            {"type": "median", "n_startup_trials": min(4, trials - 1), "n_warmup_steps": steps // 2}
            if steps >= 2
            else {"type": "none"}
        ),
        "recipe": {
            "max_steps": steps,
            "eval_every": max(1, steps // 3),
            "batch_size": 32,
            "max_seq_length": 64,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.1,
            "seed": 0,
        },
        # 20k training sentences (of 67k) and the whole SST-2 dev set (872).
        "data": {"train_subset": 20000, "eval_subset": 0, **({"source": "hub"} if hub else {})},
        "seed": 0,
    }


def _start_worker(
    i: int, address: str, study: str, glue_dir: Path | None, workdir: Path
) -> subprocess.Popen[bytes]:
    """A worker process for the demo's study; ``glue_dir`` None: SST-2 from the hub's copy in
    the datasets cache (the worker runs offline, as always)."""
    env = dict(os.environ)
    # One thread per worker: the workers share this machine's cores.
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    env.setdefault("HF_HUB_OFFLINE", "1")
    log = open(workdir / f"worker-{i}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "archsearch.server.cli",
            "worker",
            "--server",
            address,
            "--trainer",
            "bert",
            "--study",
            study,
            *(["--glue-dir", str(glue_dir)] if glue_dir else []),
            "--worker-id",
            f"demo-worker-{i}",
            "--poll-seconds",
            "5",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )


#: What a folder for the demo must hold (it trains and scores on SST-2 only).
DEMO_FILES = ("SST-2/train.tsv", "SST-2/dev.tsv")


def demo_data(glue_dir: str | None) -> tuple[Path | None, str]:
    """Where the demo's SST-2 comes from, checked before anything starts: a local glue_data
    folder with SST-2's train and dev files (looked for as ``archsearch worker`` does), else
    the hub (``nyu-mll/glue``) when online, read once here into the ``datasets`` cache that
    the (offline) workers then read.

    Returns:
        The folder (None: the hub's copy in the cache) and a sentence saying which was used.

    Raises:
        CliError: A named folder is missing or lacks SST-2, or no folder was found and the hub
            is offline or unreachable; the message says what was looked for and the fix.
    """
    from archsearch.worker._glue_dir import GLUE_DIR_ENV, resolve_glue_dir
    from archsearch.worker._hub import (
        DEFAULT_HUB_DATASET,
        HubUnavailableError,
        hub_offline,
        load_hub_split,
    )

    fix = (
        f"give the demo a glue_data folder with {' and '.join(DEMO_FILES)}: "
        f"`{GLUE_DIR_ENV}=/path/to/glue_data make demo` or `archsearch demo --glue-dir "
        "/path/to/glue_data`"
    )
    try:
        folder, how = resolve_glue_dir(glue_dir)
    except FileNotFoundError as e:  # the message lists every place looked at
        if glue_dir is not None or os.environ.get(GLUE_DIR_ENV):  # named: never the hub
            raise CliError(str(e)) from None
        offline = hub_offline()
        if offline:
            raise CliError(
                f"{str(e).split(' To fix:')[0]} The hub ({DEFAULT_HUB_DATASET}) was not tried "
                f"because {offline} is set. To fix: {fix}, or run it online once"
            ) from None
        print(f"GLUE data: no local folder; reading SST-2 from the hub ({DEFAULT_HUB_DATASET})")
        try:
            for split in ("train", "dev"):
                load_hub_split("sst2", split, fix=fix)
        except HubUnavailableError as hub_error:
            raise CliError(f"{str(e).split(' To fix:')[0]} Then: {hub_error}") from None
        return None, f"SST-2 from the hub ({DEFAULT_HUB_DATASET}, in the datasets cache)"
    missing = [name for name in DEMO_FILES if not (folder / name).is_file()]
    if missing:
        where = how.replace("using GLUE data from", "the GLUE folder", 1)
        raise CliError(f"{where} has no {' or '.join(missing)}; {fix}")
    return folder, how


def run_demo(args: argparse.Namespace) -> int:
    glue_dir, how = demo_data(args.glue_dir)
    print(f"GLUE data: {how.removeprefix('using GLUE data from ')}")
    workdir = Path(args.workdir).resolve()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create --workdir {workdir}: {e.strerror}") from None
    db = workdir / "archsearch-demo.db"
    storage = f"sqlite:///{db}"
    name = "demo-sst2-tpe-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")

    server_log = logging.getLogger("archsearch.server")
    was = server_log.level
    server_log.setLevel(logging.WARNING)  # the progress lines say it
    server = ArchsearchServer(
        ServerConfig(
            storage=storage, host="127.0.0.1", port=0, lease_duration_s=120, heartbeat_interval_s=10
        )
    )
    server.start()
    print(f"server on {server.address}, storage {storage}")
    workers: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    try:
        client = SearchClient(server.address)
        study = client.launch(demo_spec(name, args.trials, args.steps, hub=glue_dir is None))
        print(
            f"launched {study.name}: {args.trials} tiny BERT students on SST-2, TPE, "
            f"{args.steps} steps each, median pruning; {args.workers} CPU worker"
            f"{'s' if args.workers != 1 else ''} "
            f"(logs in {workdir})\n"
        )
        for i in range(args.workers):
            workers.append(_start_worker(i, server.address, name, glue_dir, workdir))
        seen: dict[int, int] = {}
        while True:
            study = client.get_study(name)
            for t in client.list_trials(name):
                if seen.get(t.number) == t.state:
                    continue
                seen[t.number] = t.state
                _print_event(started, t, args.steps)
            if study.state != pb.STUDY_RUNNING:
                break
            if all(w.poll() is not None for w in workers):
                print(
                    f"archsearch: every worker exited (see the worker-*.log files in {workdir})"
                    + "".join(f"\n  {line}" for line in _last_words(workdir, len(workers))),
                    file=sys.stderr,
                )
                return 1
            time.sleep(2)
        trials = client.list_trials(name)
        print()
        print(format_study(study, trials))
        print(f"\nfinished in {time.monotonic() - started:.0f}s")
        for line in next_steps(storage, name):
            print(line)
        if not study.n_complete:
            print(
                f"archsearch: no trial of the demo completed; the reasons are above (and in "
                f"the worker-*.log files in {workdir})",
                file=sys.stderr,
            )
            return 1
        return 0
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
        server.stop()
        server_log.setLevel(was)


def _last_words(workdir: Path, n: int) -> list[str]:
    """Each worker's last log line (why it exited), once each."""
    said: list[str] = []
    for i in range(n):
        try:
            lines = (workdir / f"worker-{i}.log").read_text(errors="replace").splitlines()
        except OSError:
            continue
        last = next((line.strip() for line in reversed(lines) if line.strip()), "")
        if last and last not in said:
            said.append(last[:500])
    return said


def _command(name: str) -> str:
    """The absolute path of one of this environment's commands (``archsearch`` is on PATH only
    in an activated virtualenv), or the module form when it is not installed as a script."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return str(script)
    module = {"archsearch": "archsearch.server.cli", "optuna-dashboard": "optuna_dashboard"}
    return f"{sys.executable} -m {module[name]}"


def next_steps(storage: str, name: str) -> list[str]:
    """Commands that run as printed, from any folder (absolute paths)."""
    archsearch = _command("archsearch")
    return [
        "",
        "look at it in optuna-dashboard:",
        f"  {_command('optuna-dashboard')} {storage}",
        "or serve it again and query it from the command line:",
        f"  {archsearch} serve --storage {storage} &",
        f"  {archsearch} show {name}",
        f"(`source {Path(sys.executable).parent / 'activate'}` puts `archsearch` on your PATH)",
    ]


def _print_event(started: float, t: pb.Trial, steps: int = 0) -> None:
    clock = time.monotonic() - started
    stamp = f"[{int(clock // 60):02d}:{int(clock % 60):02d}]"
    state = TRIAL_STATE_NAMES[t.state]
    arch = describe(t.candidate_json)
    if t.state == pb.RUNNING:
        print(f"{stamp} trial {t.number:2d} started   {arch}  on {t.worker_id}", flush=True)
    elif t.state == pb.COMPLETE:
        extra = f"params={t.metrics.get('params', 0) / 1e6:.2f}M"
        repeat = f"  = #{t.duplicate_of} (repeat: its result, not trained again)"
        print(
            f"{stamp} trial {t.number:2d} complete  accuracy={t.metrics['accuracy']:.4f}  "
            f"{extra}  {arch}{repeat if t.duplicate_of >= 0 else ''}",
            flush=True,
        )
    elif t.state == pb.PRUNED:
        last = max(t.intermediate_values) if t.intermediate_values else 0
        val = t.intermediate_values.get(last, float("nan"))
        params = architecture_params(t.candidate_json)
        extra = f"  params={params / 1e6:.2f}M" if params is not None else ""
        of = f" of {steps}" if steps else ""
        print(
            f"{stamp} trial {t.number:2d} pruned    at step {last}{of} (accuracy {val:.4f})"
            f"{extra}  {arch}",
            flush=True,
        )
    elif t.state in (pb.FAIL, pb.WAITING):
        print(f"{stamp} trial {t.number:2d} {state.lower():9s} {t.fail_reason}", flush=True)
