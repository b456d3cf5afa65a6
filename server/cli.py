"""The ``archsearch`` command line: serve, worker, launch, studies, show, stop, demo.

Every error is one line, ``archsearch: <problem> (<fix>)``, and exits non-zero (2 for bad
input, 1 otherwise); never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

from archsearch.server.client import ClientError, SearchClient, connection_cause, resolve_token

DEFAULT_SERVER = "127.0.0.1:50051"
DESCRIPTION = (
    "archsearch: neural-architecture search as a service. A server runs the search loops "
    "against an Optuna storage; workers train the candidates it hands out."
)
log = logging.getLogger("archsearch")


class CliError(Exception):
    """An error to print as ``archsearch: <message>`` and exit with ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------ helpers


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _token(args: argparse.Namespace) -> str | None:
    try:
        return resolve_token(None, getattr(args, "token_file", None))
    except OSError as e:
        raise CliError(f"cannot read token file {args.token_file}: {e.strerror}") from e
    except ValueError as e:
        raise CliError(str(e)) from e


def _search_client(args: argparse.Namespace) -> SearchClient:
    try:
        return SearchClient(args.server, token=_token(args), tls_ca=args.tls_ca, tls=args.tls)
    except ValueError as e:  # an unreadable --tls-ca file
        raise CliError(f"{e} (pass --tls-ca FILE, the PEM certificate of the server's CA)") from e


def _add_conn(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        default=os.environ.get("ARCHSEARCH_SERVER", DEFAULT_SERVER),
        help=f"HOST:PORT of the server (default: $ARCHSEARCH_SERVER, else {DEFAULT_SERVER})",
    )
    p.add_argument(
        "--token-file", help="file whose first line is the token (default: $ARCHSEARCH_TOKEN)"
    )
    p.add_argument("--tls", action="store_true", help="use TLS with the system's root certificates")
    p.add_argument(
        "--tls-ca",
        help="CA certificate (PEM) that signed the server's certificate; for a self-signed "
        "one, the certificate itself (implies --tls)",
    )


def _explain(e: ClientError, args: argparse.Namespace) -> CliError:
    import grpc

    cause = connection_cause(e, args.server, bool(args.tls or args.tls_ca))
    if cause is not None:
        return CliError(cause, 1)
    if e.code == grpc.StatusCode.UNAVAILABLE:
        return CliError(
            f"no archsearch server answers at {args.server} ({e.details}); start one with "
            "`archsearch serve` or pass --server HOST:PORT",
            1,
        )
    if e.code == grpc.StatusCode.UNAUTHENTICATED:
        return CliError(f"{e.details} (the server at {args.server} requires an admin token)", 1)
    return CliError(
        f"{e.code.name.lower().replace('_', ' ')}: {e.details}",
        2
        if e.code
        in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.ALREADY_EXISTS,
        )
        else 1,
    )


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return text


def _set_path(spec: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = spec
    for k in keys[:-1]:
        nxt = cur.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise CliError(f"--set {dotted}: {k} is not an object in the spec")
        cur = nxt
    cur[keys[-1]] = value


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The search spec from ``--spec FILE`` and the flags (flags win)."""
    spec: dict[str, Any] = {}
    if args.spec:
        try:
            spec = json.loads(Path(args.spec).read_text())
        except OSError as e:
            raise CliError(f"cannot read --spec {args.spec}: {e.strerror}") from e
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise CliError(f"--spec {args.spec} is not valid JSON: {e}") from e
        if not isinstance(spec, dict):
            raise CliError(f"--spec {args.spec} must hold a JSON object")
    for key in ("name", "space", "loop", "task", "trainer", "seed"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    if args.trials is not None:
        spec["n_trials"] = args.trials
    if args.objective:
        spec["objectives"] = list(args.objective)
    if args.pruner:
        spec["pruner"] = {"type": args.pruner}
    if args.table:
        spec.setdefault("space_options", {})["table"] = args.table
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(
                f"--set {item!r}: expected KEY=VALUE, for example --set recipe.max_steps=300"
            )
        _set_path(spec, key, _parse_value(value))
    # A table path is read by the server: make a local relative path absolute.
    table = (
        spec.get("space_options", {}).get("table")
        if isinstance(spec.get("space_options"), dict)
        else None
    )
    if isinstance(table, str) and not os.path.isabs(table) and os.path.exists(table):
        spec["space_options"]["table"] = os.path.abspath(table)
    return spec


# ------------------------------------------------------------------------------ commands


def cmd_serve(args: argparse.Namespace) -> int:
    from archsearch.server._errors import ServiceError
    from archsearch.server.app import ArchsearchServer, ConfigError, ServerConfig, read_token_file

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
    print(f"archsearch serving on {server.address}  storage={cfg.storage}", flush=True)
    artifacts = f" --artifact-dir {server.artifact_dir}" if server.artifact_dir else ""
    print(f"dashboard: optuna-dashboard {cfg.storage}{artifacts}", flush=True)
    server.serve_forever()
    return 0


def _non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def cmd_worker(args: argparse.Namespace) -> int:
    from archsearch.server.client import WorkerClient
    from archsearch.worker import Trainer, Worker
    from archsearch.worker._registry import create_trainer

    options = {"glue_dir": args.glue_dir, "table": args.table, "duration_s": args.duration}
    trainers: dict[str, Trainer] = {}
    for name in args.trainer or ["bert"]:
        try:
            trainers[name] = create_trainer(name, options)
        except KeyError as e:
            raise CliError(str(e.args[0])) from e
        except ValueError as e:
            raise CliError(str(e)) from e
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CliError(f"--device {args.device}: no CUDA device here; use --device cpu")
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
    )
    worker.install_signal_handlers()
    try:
        worker.run()
    except SystemExit as e:  # the worker's fatal errors, said with the CLI's one prefix
        if isinstance(e.code, str):
            raise CliError(e.code.removeprefix("worker: "), 1) from None
        raise
    finally:
        client.close()
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    from archsearch.server._format import study_dict, worker_note
    from archsearch.server._spec import SearchSpec
    from archsearch.server._trainers import TrainerCatalogue
    from archsearch.spaces import SpecError

    spec = build_spec(args)
    for key, flag, example in (
        ("name", "--name NAME", "--name sst2-tpe"),
        ("n_trials", "--trials N", "--trials 20"),
        ("space", "--space SPACE", "--space bert"),
    ):
        if key not in spec:
            raise CliError(
                f"launch needs {flag} (or {key!r} in --spec FILE), for example {example}"
            )
    local = TrainerCatalogue.installed()
    trainer = spec.get("trainer", "bert")
    # A trainer not installed here may be a plugin that a remote worker offers: the server
    # knows it from that worker's registration and validates the spec itself.
    if not isinstance(trainer, str) or local.get(trainer) is not None:
        try:
            SearchSpec.from_dict(spec, local)  # the same validation the server runs
        except SpecError as e:
            raise CliError(f"invalid search spec: {e}") from e
    with _search_client(args) as client:
        study = client.launch(spec)
    if args.json:
        print(json.dumps(study_dict(study), indent=2))
    else:
        print(
            f"launched {study.name}: {study.n_trials} trials; watch it with "
            f"`archsearch show {study.name} --server {args.server}`"
        )
        note = worker_note(study, args.server)
        if note:
            print(note)
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    from archsearch.server._format import STUDY_STATE_NAMES, study_dict, table, worker_note
    from archsearch.v1 import archsearch_pb2 as pb

    with _search_client(args) as client:
        studies = client.list_studies()
    if args.json:
        print(json.dumps([study_dict(s) for s in studies], indent=2))
        return 0
    if not studies:
        print("no studies yet; start one with `archsearch launch`")
        return 0
    rows = [
        [
            s.name,
            STUDY_STATE_NAMES[s.state],
            json.loads(s.spec_json).get("space", ""),
            json.loads(s.spec_json).get("loop", ""),
            json.loads(s.spec_json).get("trainer", ""),
            # done: every finished trial (complete, pruned or failed: retries and recorded
            # repeats included); budget: distinct candidates to evaluate (n_trials)
            s.n_complete + s.n_pruned + s.n_fail,
            s.n_trials,
            s.n_running,
            s.n_pruned,
            s.n_fail,
            s.workers_for_trainer if s.state == pb.STUDY_RUNNING else "",
        ]
        for s in studies
    ]
    headers = ["study", "state", "space", "loop", "trainer", "done", "budget", "running", "pruned"]
    print(table([*headers, "failed", "workers"], rows))
    notes = [n for s in studies if (n := worker_note(s, args.server))]
    if notes:
        print()
        print("\n".join(notes))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from archsearch.server._format import format_study, study_dict, trial_dict, worker_note

    with _search_client(args) as client:
        study = client.get_study(args.name)
        trials = client.list_trials(args.name)
    if args.json:
        out = study_dict(study)
        out["trials"] = [trial_dict(t) for t in trials]
        print(json.dumps(out, indent=2))
    else:
        print(format_study(study, trials, limit=args.limit))
        note = worker_note(study, args.server)
        if note:
            print(f"\n{note}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    with _search_client(args) as client:
        study = client.stop(args.name)
    print(f"stopped {study.name}: no new trials; {study.n_running} running trial(s) will finish")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from archsearch.server._demo import run_demo

    return run_demo(args)


class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help unless it has none to show (no default, a
    flag) or already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" not in text
            and action.option_strings
            and action.default not in (None, False, argparse.SUPPRESS)
        ):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line with the CLI's one prefix."""

    def error(self, message: str) -> Any:
        self.exit(2, f"archsearch: {message} (see `{self.prog} --help`)\n")


def _version() -> str:
    from archsearch.server import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="archsearch", description=DESCRIPTION, formatter_class=_HelpFormatter)
    p.add_argument("--version", action="version", version=f"archsearch {_version()}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=_HelpFormatter
        )

    s = command("serve", "run the search server")
    s.add_argument(
        "--storage",
        default="sqlite:///archsearch.db",
        help="Optuna storage URL: sqlite:///FILE.db or postgresql://USER:PASS@HOST/DB",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on")
    s.add_argument("--port", type=int, default=50051, help="port (0 picks a free one)")
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
    s.add_argument("--lease-seconds", type=int, default=60, help="lease duration without heartbeat")
    s.add_argument(
        "--artifact-dir",
        help="keep trial artifacts here: files workers upload (checkpoints) and a picture of "
        "each trial's architecture graph (FlexiBERT spaces); give the same folder to "
        "optuna-dashboard --artifact-dir; default: uploads in FILE-artifacts next to a SQLite "
        "FILE.db (none with PostgreSQL), no pictures",
    )
    s.add_argument(
        "--max-artifact-bytes",
        type=int,
        default=1 << 30,
        help="largest file a worker may upload (bytes)",
    )
    s.add_argument(
        "--heartbeat-seconds", type=int, default=10, help="heartbeat interval told to workers"
    )
    s.add_argument(
        "--max-long-polls", type=int, default=256, help="AcquireTrial calls waiting at once"
    )
    s.add_argument(
        "--max-poll-seconds", type=float, default=30.0, help="cap on a long poll's timeout"
    )
    s.add_argument(
        "--max-message-bytes", type=int, default=4 * 1024 * 1024, help="largest message accepted"
    )
    s.set_defaults(func=cmd_serve)

    w = command("worker", "train candidates for a server")
    _add_conn(w)
    w.add_argument(
        "--trainer",
        action="append",
        # No argparse choices: the worker's trainer registry knows the names (and says them).
        help="trainer to run (bert, table, or another registered one), repeatable; default: bert",
    )
    w.add_argument("--table", help="table JSON for --trainer table")
    w.add_argument("--duration", type=float, default=0.0, help="simulated seconds per table trial")
    w.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    w.add_argument(
        "--glue-dir",
        help="glue_data folder; default: $ARCHSEARCH_GLUE_DIR, then ../shared/data/glue",
    )
    w.add_argument("--study", help="only take trials of this study; default: any study")
    w.add_argument("--worker-id", help="stable worker id; default: host-pid-random")
    w.add_argument("--poll-seconds", type=float, default=20.0, help="long-poll timeout")
    w.add_argument("--max-trials", type=int, help="exit after this many trials; default: never")
    w.add_argument(
        "--idle-exit",
        type=float,
        help="exit after this many seconds without work; default: never",
    )
    w.add_argument(
        "--stop-grace",
        type=_non_negative_seconds,
        default=10.0,
        metavar="SECONDS",
        help="after SIGTERM, keep trying this long to hand back the current trial while the "
        "server does not answer, then exit (default 10, under Kubernetes' 30 s)",
    )
    w.set_defaults(func=cmd_worker)

    la = command("launch", "launch a search")
    _add_conn(la)
    la.add_argument("--spec", help="JSON file with the search spec (flags override it)")
    la.add_argument("--name", help="study name (required, here or in --spec)")
    la.add_argument(
        "--space", help="bert | flexibert | flexibert-small (required, here or in --spec)"
    )
    la.add_argument(
        "--loop", help="random | tpe | nsga2 | gp | boshnas | embedding-gp; default: tpe"
    )
    la.add_argument("--task", help="GLUE task id, e.g. sst2; default: sst2")
    la.add_argument(
        "--trials",
        type=int,
        help="number of candidates to evaluate (required, here or as n_trials in --spec)",
    )
    la.add_argument(
        "--trainer",
        help="bert (real training) | table (look-up; needs --table); default: bert",
    )
    la.add_argument("--seed", type=int, help="sampler seed; default: 0")
    la.add_argument(
        "--table",
        help="flexibert-small: keep only architectures this table scores (required with "
        "--trainer table: the table the workers use)",
    )
    la.add_argument(
        "--objective",
        action="append",
        help="METRIC:max|min, repeatable (e.g. --objective accuracy:max --objective "
        "params:min); default: accuracy:max",
    )
    la.add_argument(
        "--pruner",
        choices=["none", "median", "successive_halving", "hyperband"],
        help="stop unpromising trials early; default: none",
    )
    la.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any spec field by dotted path, value as JSON (e.g. recipe.max_steps=300)",
    )
    la.add_argument("--json", action="store_true", help="print the launched study as JSON")
    la.set_defaults(func=cmd_launch)

    st = command("studies", "list studies")
    _add_conn(st)
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=cmd_studies)

    sh = command("show", "show a study's trials and best result")
    _add_conn(sh)
    sh.add_argument("name", help="study name")
    sh.add_argument("--json", action="store_true", help="print JSON, every trial")
    sh.add_argument("--limit", type=int, default=50, help="trials to print (the most recent)")
    sh.set_defaults(func=cmd_show)

    sp = command("stop", "stop handing out a study's trials")
    _add_conn(sp)
    sp.add_argument("name", help="study name")
    sp.set_defaults(func=cmd_stop)

    d = command("demo", "run an end-to-end search on this machine")
    d.add_argument("--workdir", default="demo-output", help="where the SQLite file and logs go")
    d.add_argument("--trials", type=int, default=10, help="candidates to evaluate")
    d.add_argument("--workers", type=int, default=2, help="CPU worker processes")
    d.add_argument("--steps", type=int, default=300, help="training steps per candidate")
    d.add_argument(
        "--glue-dir",
        help="glue_data folder; default: $ARCHSEARCH_GLUE_DIR, then ../shared/data/glue",
    )
    d.set_defaults(func=cmd_demo)
    return p


def _quiet_broken_pipe() -> int:
    """The reader of our output went away (``archsearch show X --json | head -1``): stop
    quietly, as other command-line tools do, instead of a traceback at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
    return 128 + signal.SIGPIPE


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if getattr(args, "tls_ca", None):
        args.tls = True
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except CliError as e:
        print(f"archsearch: {e}", file=sys.stderr)
        return e.code
    except ClientError as e:
        err = _explain(e, args)
        print(f"archsearch: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
