"""The ``archsearch`` subcommands that run machines: serve (the search server) and worker."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping

from archsearch.server._cli_common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
    CliError,
    _add_conn,
    _token,
    log,
    quantity,
    seconds,
    whole_number,
)
from archsearch.server.app import MIN_MESSAGE_BYTES


def cmd_serve(args: argparse.Namespace) -> int:
    from archsearch.server._errors import ServiceError
    from archsearch.server.app import (
        ArchsearchServer,
        ConfigError,
        ServerConfig,
        StorageLost,
        read_token_file,
    )

    try:
        admin = read_token_file(args.admin_token_file) if args.admin_token_file else []
        worker = read_token_file(args.worker_token_file) if args.worker_token_file else []
        if not admin and os.environ.get("ARCHSEARCH_TOKEN"):
            admin = [os.environ["ARCHSEARCH_TOKEN"]]
        cfg = ServerConfig(
            storage=args.storage,
            host=args.host,
            port=args.port,
            admin_tokens=admin,
            worker_tokens=worker,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_client_ca=args.tls_client_ca,
            lease_duration_s=args.lease_seconds,
            heartbeat_interval_s=args.heartbeat_seconds,
            max_long_polls=args.max_long_polls,
            max_poll_s=args.max_poll_seconds,
            max_message_bytes=args.max_message_bytes,
            artifact_dir=args.artifact_dir,
            max_artifact_bytes=args.max_artifact_bytes,
        )
        server = ArchsearchServer(cfg)
    except (ConfigError, ServiceError) as e:
        raise CliError(str(e)) from e
    if not (admin or worker):
        log.warning(
            "no tokens configured: listening on %s only (loopback). Give "
            "--admin-token-file/--worker-token-file to serve other machines.",
            cfg.host,
        )
    # a SQLite file by its absolute path: the same command works from any folder
    # and a database password hidden (the log may be a pod's, read by others)
    from archsearch.server._storage_lock import safe_url

    storage = f"sqlite:///{server.database}" if server.database else safe_url(cfg.storage)
    print(f"archsearch serving on {server.address}  storage={storage}", flush=True)
    artifacts = f" --artifact-dir {server.artifact_dir}" if server.artifact_dir else ""
    hidden = "  (with your database password for ***)" if "***" in storage else ""
    print(f"dashboard: optuna-dashboard {storage}{artifacts}{hidden}", flush=True)
    try:
        server.serve_forever()
    except StorageLost as e:  # logged with the time; the exit says it too, in one line
        raise CliError(str(e)) from None
    return 0


def _check_device(device: str) -> None:
    """``cpu``, ``cuda`` or ``cuda:N`` of a device this machine has."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise CliError(f"--device {device!r}: use cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CliError(f"--device {device}: no CUDA device here; use --device cpu")
        n = torch.cuda.device_count()
        if int(device.partition(":")[2] or 0) >= n:
            raise CliError(
                f"--device {device}: this machine has {n} CUDA device(s), cuda:0..{n - 1}"
            )


#: The trainers that read GLUE data (the table trainer reads its table only).
_GLUE_TRAINERS = ("bert", "lora", "autodistil")


def _say_glue_dir(glue_dir: str | None, trainers: Mapping[str, object]) -> None:
    """Logs which GLUE folder this worker's trials read, or every place it looked (a candidate
    with ``data.source`` auto then reads the hub, when online)."""
    if not any(name in _GLUE_TRAINERS for name in trainers):
        return
    from archsearch.worker._glue_dir import glue_tasks_in, resolve_glue_dir
    from archsearch.worker._hub import DEFAULT_HUB_DATASET, hub_offline

    try:
        folder, how = resolve_glue_dir(glue_dir)
    except FileNotFoundError as e:
        offline = hub_offline()
        then = (
            f"the hub fallback ({DEFAULT_HUB_DATASET}) is off because {offline} is set, so "
            "every GLUE trial here fails"
            if offline
            else f"candidates with data.source auto read the hub ({DEFAULT_HUB_DATASET})"
        )
        log.warning("GLUE data: %s; %s", e, then)
        return
    tasks = glue_tasks_in(folder)
    if not tasks:
        log.warning(
            "GLUE data: %s, but it holds no GLUE task folder with a train.tsv (such as "
            "SST-2/train.tsv): every GLUE trial here fails",
            how,
        )
        return
    log.info("GLUE data: %s: %s", how, ", ".join(tasks))


def _trainer_failed(name: str, e: Exception) -> str:
    """One line for a trainer that raised while it was built: what, and the file and line
    where (a plugin's NameError said nowhere where it was; -v logs the whole traceback)."""
    import traceback

    log.debug("building trainer %s", name, exc_info=e)
    frames = traceback.extract_tb(e.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return (
        f"trainer {name!r} failed to start: {type(e).__name__}: {e}{where}; fix the trainer "
        "(-v logs the traceback), or start the worker without it"
    )


def cmd_worker(args: argparse.Namespace) -> int:
    from archsearch.server.client import WorkerClient
    from archsearch.worker import Trainer, Worker
    from archsearch.worker._checkpoint_dir import checkpoint_root
    from archsearch.worker._exits import BadSetup, NeverReached, NoSuchStudy
    from archsearch.worker._progress_sweep import ProgressSweeper
    from archsearch.worker._registry import create_trainer

    options = {
        "glue_dir": args.glue_dir,
        "table": args.table,
        "duration_s": args.duration,
        "save_minutes": args.save_minutes,
    }
    trainers: dict[str, Trainer] = {}
    for name in args.trainer or ["bert"]:
        try:
            trainers[name] = create_trainer(name, options)
        except KeyError as e:
            raise CliError(str(e.args[0])) from e
        except (ValueError, FileNotFoundError) as e:  # FileNotFoundError: a missing --glue-dir
            raise CliError(str(e)) from e
        except Exception as e:  # a trainer's (a plugin's) own failure: where, in one line
            raise CliError(_trainer_failed(name, e)) from e
    _check_device(args.device)
    _say_glue_dir(args.glue_dir, trainers)
    try:
        client = WorkerClient(args.server, token=_token(args), tls_ca=args.tls_ca, tls=args.tls)
    except ValueError as e:  # an unreadable --tls-ca file
        raise CliError(f"{e} (pass --tls-ca FILE, the PEM certificate of the server's CA)") from e
    worker = Worker(
        client,
        trainers,
        device=args.device,
        study_name=args.study or "",
        worker_id=args.worker_id or "",
        poll_s=args.poll_seconds,
        max_trials=args.max_trials,
        idle_exit_s=args.idle_exit,
        stop_grace_s=args.stop_grace,
        sweeper=ProgressSweeper(
            checkpoint_root, args.keep_progress_days * 86400 if args.keep_progress_days else None
        ),
    )
    worker.install_signal_handlers()
    try:
        worker.run()
    except SystemExit as e:  # the worker's fatal errors, said with the CLI's one prefix
        if isinstance(e.code, str):
            code = (
                EXIT_UNREACHABLE
                if isinstance(e, NeverReached)
                else EXIT_NOT_FOUND
                if isinstance(e, NoSuchStudy)
                else EXIT_BAD_INPUT
                if isinstance(e, BadSetup)
                else EXIT_FAILED
            )
            raise CliError(e.code.removeprefix("worker: "), code) from None
        raise
    finally:
        client.close()
    return 0


def add_serve_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    s = command("serve", "run the search server")
    s.add_argument(
        "--storage",
        default="sqlite:///archsearch.db",
        help="Optuna storage URL: sqlite:///FILE.db or postgresql://USER:PASS@HOST/DB",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on")
    s.add_argument(
        "--port", type=whole_number(0, 65535), default=50051, help="port (0 picks a free one)"
    )
    s.add_argument(
        "--admin-token-file",
        help="admin tokens, one per line (can call everything); default: no tokens, loopback only",
    )
    s.add_argument(
        "--worker-token-file", help="worker tokens, one per line (worker RPCs only); default: none"
    )
    s.add_argument("--tls-cert", help="server certificate (PEM); default: no TLS")
    s.add_argument("--tls-key", help="server private key (PEM), with --tls-cert")
    s.add_argument(
        "--tls-client-ca",
        help="require client certificates signed by this CA; default: none required",
    )
    s.add_argument(
        "--lease-seconds",
        type=whole_number(1),
        default=60,
        help="lease duration without heartbeat",
    )
    s.add_argument(
        "--artifact-dir",
        help="keep trial artifacts here: files workers upload (checkpoints) and a picture of "
        "each trial's architecture graph (FlexiBERT spaces); give the same folder to "
        "optuna-dashboard --artifact-dir; default: uploads in FILE-artifacts next to a SQLite "
        "FILE.db (none with PostgreSQL), no pictures",
    )
    s.add_argument(
        "--max-artifact-bytes",
        type=whole_number(0),
        default=1 << 30,
        help="largest file a worker may upload (bytes)",
    )
    s.add_argument(
        "--heartbeat-seconds",
        type=whole_number(1),
        default=10,
        help="heartbeat interval told to workers",
    )
    s.add_argument(
        "--max-long-polls",
        type=whole_number(1),
        default=256,
        help="AcquireTrial calls waiting at once",
    )
    s.add_argument(
        "--max-poll-seconds",
        type=seconds(allow_zero=False),
        default=30.0,
        help="cap on a long poll's timeout",
    )
    s.add_argument(
        "--max-message-bytes",
        type=whole_number(MIN_MESSAGE_BYTES),
        default=4 * 1024 * 1024,
        help="largest message accepted",
    )
    s.set_defaults(func=cmd_serve)


def add_worker_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    w = command("worker", "train candidates for a server")
    _add_conn(w)
    w.add_argument(
        "--trainer",
        action="append",
        # No argparse choices: the worker's trainer registry knows the names (and says them).
        help="trainer to run (bert, lora, autodistil, table, or a plugin's), repeatable; "
        "default: bert",
    )
    w.add_argument("--table", help="table JSON for --trainer table")
    w.add_argument(
        "--duration",
        type=seconds(allow_zero=True),
        default=0.0,
        help="simulated seconds per table trial",
    )
    w.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    w.add_argument(
        "--glue-dir",
        help="glue_data folder; default: $ARCHSEARCH_GLUE_DIR, then ../shared/data/glue (beside "
        "the checkout, then the cwd); with none, data.source auto reads the hub when online",
    )
    w.add_argument(
        "--save-minutes",
        type=quantity(allow_zero=True, unit="minutes"),
        metavar="MINUTES",
        help="minutes of training between saves of a job's progress (weights, optimiser, "
        "data position), which a retried job continues from; a stopped job also saves "
        "(default 10; 0: never save)",
    )
    w.add_argument(
        "--keep-progress-days",
        type=quantity(allow_zero=True, unit="days"),
        default=7.0,
        metavar="DAYS",
        help="remove a job's saved progress that has not changed for this long (a retry "
        "that ran elsewhere, a trial never retried); looked for hourly (default 7; 0: never)",
    )
    w.add_argument("--study", help="only take trials of this study; default: any study")
    w.add_argument("--worker-id", help="stable worker id; default: host-pid-random")
    w.add_argument(
        "--poll-seconds", type=seconds(allow_zero=False), default=20.0, help="long-poll timeout"
    )
    w.add_argument(
        "--max-trials", type=whole_number(1), help="exit after this many trials; default: never"
    )
    w.add_argument(
        "--idle-exit",
        type=seconds(allow_zero=True),
        help="exit after this many seconds without a trial (none to do, or the server gone); "
        "default: never",
    )
    w.add_argument(
        "--stop-grace",
        type=seconds(allow_zero=True),
        default=10.0,
        metavar="SECONDS",
        help="after SIGTERM, keep trying this long to hand back the current trial while the "
        "server does not answer, then exit (default 10, under Kubernetes' 30 s)",
    )
    w.set_defaults(func=cmd_worker)
