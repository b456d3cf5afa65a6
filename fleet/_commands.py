"""The ``archsearch fleet`` commands (their parser is in ``cli``).

The worker's own options follow ``--`` and are checked by ``archsearch worker``'s parser
(and their trainer names by the worker's trainer registry) before anything is submitted:
``archsearch fleet slurm --server H:P --workers 8 --partition gpu --time 4:00:00 --
--trainer bert --study sst2-tpe``.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
from pathlib import Path

from archsearch.server._cli_common import CliError

#: worker options the fleet sets itself (from its own flags), so not accepted after ``--``
_FLEET_SETS = ("--server", "--token-file", "--tls", "--tls-ca", "--worker-id")
DEFAULT_FOLDER = "archsearch-fleet"


def _rest(args: argparse.Namespace) -> list[str]:
    """The worker options after ``--``, without options the fleet sets itself."""
    rest = list(args.worker_args or [])
    if rest and rest[0] == "--":
        rest = rest[1:]
    for opt in rest:
        name = opt.split("=", 1)[0]
        if name in _FLEET_SETS:
            raise CliError(
                f"{name} after `--`: the fleet sets it for every worker; give it before `--` "
                f"(as a `fleet {args.fleet_command}` option)"
                if name != "--worker-id"
                else "--worker-id after `--`: the fleet gives each worker its own id; drop it"
            )
    return rest


def _check_worker_options(options: list[str]) -> None:
    """``archsearch worker``'s own parser and trainer registry: a mistake is said now, not
    in N logs later.

    What needs the worker's machine (a ``--table`` file, a CUDA device) is left to the worker.
    """
    from archsearch.server.cli import build_parser
    from archsearch.worker._registry import trainer_class

    parsed, unknown = build_parser().parse_known_args(["worker", *options])
    if unknown:
        raise CliError(
            f"{unknown[0]} after `--`: not an option of `archsearch worker` (see `archsearch "
            "worker --help`)"
        )
    for name in parsed.trainer or []:  # the registry `archsearch worker` builds them from
        try:
            trainer_class(name)
        except KeyError as e:
            raise CliError(f"--trainer {name} after `--`: {e.args[0]}") from None


def worker_args(args: argparse.Namespace, gpus: int) -> list[str]:
    """The ``archsearch worker`` options of every worker of the fleet, checked.

    The connection flags come from the fleet's own ``--server``/``--token-file``/``--tls``
    flags; the rest follows ``--``; ``--device cuda`` is added for GPU workers that do not
    name a device.
    """
    rest = _rest(args)
    conn = ["--server", args.server]
    if args.token_file:
        conn += ["--token-file", str(Path(args.token_file).resolve())]
    if args.tls_ca:
        conn += ["--tls-ca", str(Path(args.tls_ca).resolve())]
    elif args.tls:
        conn.append("--tls")
    if gpus > 0 and not any(o.split("=", 1)[0] == "--device" for o in rest):
        rest += ["--device", "cuda"]
    _check_worker_options([*conn, *rest])
    return [*conn, *rest]


# ------------------------------------------------------------------------------ slurm


def cmd_fleet_slurm(args: argparse.Namespace) -> int:
    from archsearch.fleet import _slurm, _state
    from archsearch.server.app import is_loopback

    try:
        import submitit  # noqa: F401 - the extra is there, or say how to get it
    except ImportError:
        raise CliError(
            "submitit is not installed here; install the extra: pip install 'archsearch[fleet]'",
            1,
        ) from None
    host = args.server.rpartition(":")[0] or args.server
    if args.cluster == "slurm" and is_loopback(host):
        raise CliError(
            f"--server {args.server} is this machine's loopback address, which the SLURM "
            "nodes cannot reach; pass --server HOST:PORT of the server as the nodes see it"
        )
    try:
        minutes = _slurm.parse_time_minutes(args.time)
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.signal_delay < 15:
        raise CliError(
            f"--signal-delay {args.signal_delay}: too short for the worker to hand its trial "
            "back before SLURM kills the job; give at least 15 (default 90)"
        )
    if args.signal_delay >= minutes * 60:
        raise CliError(
            f"--signal-delay {args.signal_delay} s is not shorter than --time {args.time} "
            f"({minutes} min): SLURM's warning would come before the job starts; give a "
            "shorter --signal-delay or a longer --time"
        )
    extra: dict[str, str | bool] = {}
    for item in args.sbatch or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(
                f"--sbatch {item!r}: expected KEY=VALUE, for example --sbatch mail-type=END"
            )
        extra[key] = value
    opts = _slurm.SlurmOptions(
        workers=args.workers,
        folder=Path(args.folder).resolve(),
        time_minutes=minutes,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        mem_gb=args.mem_gb,
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        constraint=args.constraint,
        array_parallelism=args.array_parallelism,
        signal_delay_s=args.signal_delay,
        setup=list(args.setup or []),
        extra=extra,
        python=args.python,
        job_name=args.job_name,
        requeue=args.requeue,
        max_requeues=100 if args.max_requeues is None else args.max_requeues,
    )
    wargs = worker_args(args, args.gpus_per_worker)
    if args.max_requeues is not None and not args.requeue:
        raise CliError(
            "--max-requeues without --requeue: nothing is requeued; add --requeue, or drop it"
        )
    if args.dry_run and args.cluster == "local":
        raise CliError(
            "--dry-run prints the sbatch script of a SLURM fleet; --cluster local runs the "
            "workers as processes here, with no script: drop one of them"
        )
    if args.dry_run:
        try:
            print(_slurm.sbatch_script(opts), end="")
        except ValueError as e:
            raise CliError(f"sbatch parameters refused: {str(e).splitlines()[0]}") from None
        # What submitit pickles for each task, said in the script's own comment syntax.
        print(
            f"# each array task runs: archsearch worker {shlex.join(wargs)} --worker-id "
            "slurm-<job id>"
        )
        if opts.requeue:
            print(f"# requeued after at most {opts.max_requeues} time limits (--max-requeues)")
        return 0
    if args.cluster == "slurm" and not _slurm.have_slurm():
        raise CliError(
            "no SLURM here: `sbatch` and `srun` are not on PATH (run this on a SLURM login "
            "node, pass --dry-run to see the script, or --cluster local to run the workers "
            "on this machine)",
            1,
        )
    where = {"cluster": args.cluster, "server": args.server}
    try:
        _state.check(opts.folder, "slurm", where)
    except _state.FleetFileError as e:
        raise CliError(str(e)) from None
    try:
        ids = _slurm.submit(opts, wargs, cluster=args.cluster)
        path = _state.record(opts.folder, "slurm", where, ids)
    except (ValueError, _state.FleetFileError) as e:
        raise CliError(str(e).splitlines()[0]) from None
    except Exception as e:  # submitit's FailedJobError etc.: sbatch said no
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CliError(f"submission failed: {first}", 1) from None
    print(
        f"submitted {len(ids)} worker job(s) ({args.cluster}): {' '.join(ids)}\n"
        f"fleet file {path}; watch with `archsearch fleet status --folder {args.folder}`, "
        f"stop with `archsearch fleet stop --folder {args.folder}`"
    )
    return 0


# ------------------------------------------------------------------------------ ray


def cmd_fleet_ray(args: argparse.Namespace) -> int:
    from archsearch.fleet import _ray, _state

    wargs = worker_args(args, args.gpus_per_worker)
    folder = Path(args.folder).resolve()
    where = {"address": args.address, "namespace": args.namespace, "server": args.server}
    try:
        ray = _ray.connect(args.address, args.namespace, args.ray_token_file)
    except _ray.RayMissing as e:
        raise CliError(str(e), 1) from None
    except _ray.RayUnreachable as e:  # said in seconds, before ray.init would retry for minutes
        port = args.address.rpartition(":")[2]
        flag = "--ray-client-server-port" if args.address.startswith("ray://") else "--port"
        raise CliError(
            f"cannot connect to Ray at {args.address}: {e} (start the head with `ray start "
            f"--head {flag} {port}`, or pass --address HOST:PORT of a running head, or "
            "ray://HOST:10001)",
            1,
        ) from None
    except Exception as e:  # no cluster at that address, refused token, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CliError(
            f"cannot connect to Ray at {args.address}: {first} (start the cluster, or pass "
            "--address HOST:PORT of its head, or ray://HOST:10001)",
            1,
        ) from None
    try:
        _state.check(folder, "ray", where)
        names = _ray.start_actors(
            ray,
            args.name,
            args.namespace,
            args.workers,
            wargs,
            gpus=args.gpus_per_worker,
            cpus=args.cpus_per_worker,
            max_restarts=args.max_restarts,
        )
        path = _state.record(folder, "ray", where, names)
    except (ValueError, _state.FleetFileError) as e:
        raise CliError(str(e)) from None
    print(
        f"started {len(names)} worker actor(s) on Ray at {args.address} (namespace "
        f"{args.namespace}): {' '.join(names)}\nfleet file {path}; watch with `archsearch "
        f"fleet status --folder {args.folder}`, stop with `archsearch fleet stop --folder "
        f"{args.folder}`"
    )
    return 0


# ------------------------------------------------------------------------------ k8s


def _members(args: argparse.Namespace) -> tuple[dict, list[str]]:  # type: ignore[type-arg]
    from archsearch.fleet import _state

    try:
        data = _state.load(Path(args.folder))
    except _state.FleetFileError as e:
        raise CliError(str(e)) from None
    everyone = _state.members(data)
    chosen = list(getattr(args, "job", None) or [])
    unknown = [j for j in chosen if j not in everyone]
    if unknown:
        raise CliError(
            f"--job {unknown[0]}: not in this fleet; `archsearch fleet status --folder "
            f"{args.folder}` lists its jobs"
        )
    return data, chosen or everyone


def _with_reason(folder: Path, cluster: str, jid: str, state: str) -> str:
    """A failed job's state with the line of its log that says why (when readable here)."""
    if state not in ("FAILED", "OUT_OF_MEMORY"):
        return state
    from archsearch.fleet import _slurm

    try:
        reason = _slurm.failure_reason(folder, cluster, jid)
    except Exception:  # the state stands on its own; the log is a bonus
        return state
    return f"{state}: {reason}" if reason else state


def cmd_fleet_status(args: argparse.Namespace) -> int:
    from archsearch.server._format import table

    data, ids = _members(args)
    if data["backend"] == "slurm":
        from archsearch.fleet import _slurm

        folder = Path(args.folder).resolve()
        if data["cluster"] == "slurm" and shutil.which("sacct") is None:
            # submitit then says UNKNOWN for every job, with a warning per job, exit 0
            raise CliError(
                "cannot read the jobs' states: sacct (SLURM's accounting command) is not on "
                "PATH here; run `archsearch fleet status` on a machine of the cluster",
                1,
            )
        try:
            states = _slurm.job_states(folder, data["cluster"], ids)
        except Exception as e:  # sacct missing or failing
            raise CliError(f"cannot read the jobs' states: {e}", 1) from None
        rows = [
            [jid, _with_reason(folder, data["cluster"], jid, states.get(jid, "UNKNOWN"))]
            for jid in ids
        ]
        print(f"slurm fleet ({data['cluster']}) for {data['server']}")
        print(table(["job", "state"], rows))
        return 0
    from archsearch.fleet import _ray

    try:
        states = _ray.actor_states(data, ids, args.ray_token_file)
    except _ray.RayMissing as e:
        raise CliError(str(e), 1) from None
    except Exception as e:  # the cluster is gone or refuses us
        raise CliError(f"cannot reach Ray at {data['address']}: {e}", 1) from None
    rows = [[name, state] for name, state in states.items()]
    print(f"ray fleet at {data['address']} (namespace {data['namespace']}) for {data['server']}")
    print(table(["actor", "state"], rows))
    return 0


def cmd_fleet_stop(args: argparse.Namespace) -> int:
    data, ids = _members(args)
    if data["backend"] == "slurm":
        from archsearch.fleet import _slurm

        try:
            done = _slurm.stop_jobs(Path(args.folder).resolve(), data["cluster"], ids)
        except Exception as e:  # scancel missing or failing
            raise CliError(f"cannot stop the jobs: {e}", 1) from None
    else:
        from archsearch.fleet import _ray

        try:
            done = _ray.stop_actors(data, ids, args.grace, args.ray_token_file)
        except _ray.RayMissing as e:
            raise CliError(str(e), 1) from None
        except Exception as e:  # the cluster is gone or refuses us
            raise CliError(f"cannot reach Ray at {data['address']}: {e}", 1) from None
    print(
        f"stopping {len(done)} worker(s): {' '.join(done) or '(none running)'}; "
        "each hands its trial back to the server"
    )
    return 0
