"""The ``archsearch`` command line: serve, worker, launch, studies, show, stop, demo.

Every error names the problem and the fix, and exits non-zero (2 for bad input, 1 otherwise).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from archsearch.server.client import ClientError, SearchClient, resolve_token

DEFAULT_SERVER = "127.0.0.1:50051"
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
    return SearchClient(args.server, token=_token(args), tls_ca=args.tls_ca, tls=args.tls)


def _add_conn(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        default=os.environ.get("ARCHSEARCH_SERVER", DEFAULT_SERVER),
        help=f"HOST:PORT of the server (default $ARCHSEARCH_SERVER or {DEFAULT_SERVER})",
    )
    p.add_argument(
        "--token-file", help="file whose first line is the token (default $ARCHSEARCH_TOKEN)"
    )
    p.add_argument("--tls", action="store_true", help="use TLS with the system's root certificates")
    p.add_argument(
        "--tls-ca", help="CA certificate file that signed the server's certificate (implies --tls)"
    )


def _explain(e: ClientError, args: argparse.Namespace) -> CliError:
    import grpc

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
    except json.JSONDecodeError:
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
        except json.JSONDecodeError as e:
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
    artifacts = f" --artifact-dir {args.artifact_dir}" if args.artifact_dir else ""
    print(f"dashboard: optuna-dashboard {cfg.storage}{artifacts}", flush=True)
    server.serve_forever()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from archsearch.server.client import WorkerClient
    from archsearch.worker import Trainer, Worker

    trainers: dict[str, Trainer] = {}
    for name in args.trainer or ["bert"]:
        if name == "table":
            if not args.table:
                raise CliError(
                    "--trainer table needs --table PATH (a FlexiBERT table JSON, e.g. "
                    "../shared/data/flexibert-small/dataset_small_sst2.json)"
                )
            from archsearch.worker import TableTrainer

            try:
                trainers["table"] = TableTrainer(args.table, duration_s=args.duration)
            except ValueError as e:
                raise CliError(str(e)) from e
        elif name == "bert":
            from archsearch.worker import BertTrainer

            trainers["bert"] = BertTrainer(glue_dir=args.glue_dir)
        else:
            raise CliError(f"unknown trainer {name!r}: use bert or table")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CliError(f"--device {args.device}: no CUDA device here; use --device cpu")
    client = WorkerClient(args.server, token=_token(args), tls_ca=args.tls_ca, tls=args.tls)
    worker = Worker(
        client,
        trainers,
        device=args.device,
        study_name=args.study or "",
        worker_id=args.worker_id or "",
        poll_s=args.poll_seconds,
        max_trials=args.max_trials,
        idle_exit_s=args.idle_exit,
    )
    worker.install_signal_handlers()
    worker.run()
    client.close()
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    from archsearch.server._spec import SearchSpec
    from archsearch.spaces import SpecError

    spec = build_spec(args)
    try:
        SearchSpec.from_dict(spec)  # the same validation the server runs, before any RPC
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
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    from archsearch.server._format import STUDY_STATE_NAMES, table

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
            f"{s.n_complete}/{s.n_trials}",
            s.n_running,
            s.n_pruned,
            s.n_fail,
        ]
        for s in studies
    ]
    print(table(["study", "state", "space", "loop", "done", "running", "pruned", "failed"], rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from archsearch.server._format import format_study

    with _search_client(args) as client:
        study = client.get_study(args.name)
        trials = client.list_trials(args.name)
    if args.json:
        out = study_dict(study)
        out["trials"] = [trial_dict(t) for t in trials]
        print(json.dumps(out, indent=2))
    else:
        print(format_study(study, trials, limit=args.limit))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    with _search_client(args) as client:
        study = client.stop(args.name)
    print(f"stopped {study.name}: no new trials; {study.n_running} running trial(s) will finish")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from archsearch.server._demo import run_demo

    return run_demo(args)


def study_dict(s: Any) -> dict[str, Any]:
    from archsearch.server._format import STUDY_STATE_NAMES

    return {
        "name": s.name,
        "state": STUDY_STATE_NAMES[s.state],
        "spec": json.loads(s.spec_json),
        "n_trials": s.n_trials,
        "counts": {
            "complete": s.n_complete,
            "pruned": s.n_pruned,
            "fail": s.n_fail,
            "running": s.n_running,
            "waiting": s.n_waiting,
        },
        "best_trials": [trial_dict(t) for t in s.best_trials],
        "created_at": s.created_at,
    }


def trial_dict(t: Any) -> dict[str, Any]:
    from archsearch.server._format import TRIAL_STATE_NAMES

    return {
        "number": t.number,
        "state": TRIAL_STATE_NAMES[t.state],
        "values": list(t.values),
        "params": json.loads(t.params_json or "{}"),
        "metrics": dict(t.metrics),
        "candidate": json.loads(t.candidate_json or "{}"),
        "intermediate_values": {int(k): v for k, v in t.intermediate_values.items()},
        "attempt": t.attempt,
        "worker_id": t.worker_id,
        "fail_reason": t.fail_reason,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
    }


# ------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="archsearch", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the search server")
    s.add_argument(
        "--storage",
        default="sqlite:///archsearch.db",
        help="Optuna storage URL: sqlite:///FILE.db (default) or postgresql://USER:PASS@HOST/DB",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=50051, help="port (0 picks a free one)")
    s.add_argument("--admin-token-file", help="admin tokens, one per line (can call everything)")
    s.add_argument("--worker-token-file", help="worker tokens, one per line (worker RPCs only)")
    s.add_argument("--tls-cert", help="server certificate (PEM)")
    s.add_argument("--tls-key", help="server private key (PEM)")
    s.add_argument("--tls-client-ca", help="require client certificates signed by this CA")
    s.add_argument("--lease-seconds", type=int, default=60, help="lease duration without heartbeat")
    s.add_argument(
        "--artifact-dir",
        help="store a picture of each trial's architecture graph here (FlexiBERT spaces); "
        "give the same folder to optuna-dashboard --artifact-dir",
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

    w = sub.add_parser("worker", help="train candidates for a server")
    _add_conn(w)
    w.add_argument(
        "--trainer",
        action="append",
        choices=["bert", "table"],
        help="trainer to run (repeatable; default bert)",
    )
    w.add_argument("--table", help="table JSON for --trainer table")
    w.add_argument("--duration", type=float, default=0.0, help="simulated seconds per table trial")
    w.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    w.add_argument(
        "--glue-dir",
        help="glue_data folder (default $ARCHSEARCH_GLUE_DIR, then ../shared/data/glue)",
    )
    w.add_argument("--study", help="only take trials of this study")
    w.add_argument("--worker-id", help="stable worker id (default host-pid-random)")
    w.add_argument("--poll-seconds", type=float, default=20.0, help="long-poll timeout")
    w.add_argument("--max-trials", type=int, help="exit after this many trials")
    w.add_argument("--idle-exit", type=float, help="exit after this many seconds without work")
    w.set_defaults(func=cmd_worker)

    la = sub.add_parser("launch", help="launch a search")
    _add_conn(la)
    la.add_argument("--spec", help="JSON file with the search spec (flags override it)")
    la.add_argument("--name", help="study name")
    la.add_argument("--space", help="bert | flexibert | flexibert-small")
    la.add_argument("--loop", help="random | tpe | nsga2 | gp | boshnas | embedding-gp")
    la.add_argument("--task", help="GLUE task id, e.g. sst2")
    la.add_argument("--trials", type=int, help="number of candidates to evaluate")
    la.add_argument("--trainer", help="bert | table")
    la.add_argument("--seed", type=int)
    la.add_argument("--table", help="flexibert-small: keep only architectures this table scores")
    la.add_argument(
        "--objective",
        action="append",
        help="METRIC:max|min, repeatable (e.g. --objective accuracy:max --objective params:min)",
    )
    la.add_argument("--pruner", choices=["none", "median", "successive_halving", "hyperband"])
    la.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any spec field by dotted path, value as JSON (e.g. recipe.max_steps=300)",
    )
    la.add_argument("--json", action="store_true")
    la.set_defaults(func=cmd_launch)

    st = sub.add_parser("studies", help="list studies")
    _add_conn(st)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_studies)

    sh = sub.add_parser("show", help="show a study's trials and best result")
    _add_conn(sh)
    sh.add_argument("name")
    sh.add_argument("--json", action="store_true")
    sh.add_argument("--limit", type=int, default=50, help="trials to print (most recent)")
    sh.set_defaults(func=cmd_show)

    sp = sub.add_parser("stop", help="stop handing out a study's trials")
    _add_conn(sp)
    sp.add_argument("name")
    sp.set_defaults(func=cmd_stop)

    d = sub.add_parser("demo", help="run an end-to-end search on this machine")
    d.add_argument("--workdir", default="demo-output", help="where the SQLite file and logs go")
    d.add_argument("--trials", type=int, default=10)
    d.add_argument("--workers", type=int, default=2)
    d.add_argument("--steps", type=int, default=300, help="training steps per candidate")
    d.add_argument("--glue-dir", help="glue_data folder")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if getattr(args, "tls_ca", None):
        args.tls = True
    try:
        return int(args.func(args) or 0)
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
