"""``archsearch fleet k8s``: the manifests rendered from its flags (``_k8s.py``), after the
checks that keep them from failing on apply or losing data."""

from __future__ import annotations

import argparse
from pathlib import Path

from archsearch.fleet._commands import _check_worker_options, _rest
from archsearch.server._cli_common import CliError


def _first_line(path: str, flag: str) -> str:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise CliError(f"cannot read {flag} {path}: {e.strerror}") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise CliError(f"{flag} {path} is empty; its first line must be the token")
    return token


def _tls_ca(args: argparse.Namespace) -> str | None:
    """The ``--tls-ca`` file's PEM text (None without one), checked here: a worker that
    cannot read it fails in every pod."""
    if (args.tls or args.tls_ca) and args.server is None:
        raise CliError(
            "--tls/--tls-ca are for a server outside the cluster: pass --server HOST:PORT "
            "(the rendered server speaks plain text to the workers inside the cluster)"
        )
    if not args.tls_ca:
        return None
    try:
        text = Path(args.tls_ca).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"cannot read --tls-ca {args.tls_ca}: {e}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise CliError(
            f"--tls-ca {args.tls_ca} holds no PEM certificate (-----BEGIN CERTIFICATE-----): "
            "give the CA certificate that signed the server's"
        )
    return text


def _check_k8s(args: argparse.Namespace, rest: list[str]) -> None:
    """What would render manifests that fail on apply or lose data, refused with the fix."""
    from archsearch.server.app import is_loopback

    if args.server is None and not args.name[0].isalpha():
        raise CliError(
            f"--name {args.name}: the rendered server's Service, {args.name}-server, needs a "
            "letter first (Kubernetes' rule for Service names); start --name with a letter"
        )
    if args.admin_token_file and not args.token_file:
        raise CliError(
            "--admin-token-file without --token-file: the rendered Secret would lack the "
            "workers' key, which every pod mounts; give both, or neither (and create the "
            "Secret with kubectl)"
        )
    if args.token_file and not args.admin_token_file and args.server is None:
        raise CliError(
            "--token-file without --admin-token-file: the rendered Secret would lack the "
            "admin key, which the server's pod mounts; give both, pass --server for workers "
            "only, or neither (and create the Secret with kubectl)"
        )
    if args.storage_url and args.storage_url.lower().startswith("sqlite"):
        raise CliError(
            f"--storage-url {args.storage_url}: a SQLite file in the server's pod is lost when "
            "the pod restarts; give a PostgreSQL URL (postgresql://USER:PASS@HOST/DB)"
        )
    host = args.server.rpartition(":")[0].strip("[]").lower() if args.server else ""
    if args.server and (is_loopback(host) or host in ("0.0.0.0", "::")):
        raise CliError(
            f"--server {args.server} is a loopback or wildcard address, which each pod reads "
            "as itself; "
            "give an address the pods reach (a Service, a node's name), or leave --server "
            "out to render the server too"
        )
    for ending in ("--idle-exit", "--study"):
        if args.kind == "deployment" and _has(rest, ending):
            raise CliError(
                f"{ending} with a Deployment: its workers exit when "
                + ("they are idle" if ending == "--idle-exit" else "their study completes")
                + " and the Deployment starts every worker that exits again, for ever "
                f"(CrashLoopBackOff); use --kind job (workers that end with the study), or "
                f"drop {ending}"
            )


def _has(options: list[str], flag: str) -> bool:
    """Whether ``flag`` is among the worker ``options`` (``--flag V`` or ``--flag=V``)."""
    return any(o.split("=", 1)[0] == flag for o in options)


def cmd_fleet_k8s(args: argparse.Namespace) -> int:
    from archsearch.fleet import _k8s

    if not args.render:
        raise CliError(
            "fleet k8s renders manifests and applies nothing: pass --render and give the "
            "output to kubectl (`archsearch fleet k8s --render ... | kubectl apply -f -`)"
        )
    rest = _rest(args)
    if any(o.split("=", 1)[0] == "--stop-grace" for o in rest):
        raise CliError(
            "--stop-grace after `--`: the pods' termination grace is set from it; give it "
            "before `--` (as a `fleet k8s` option)"
        )
    if args.kind == "job" and not any(_has(rest, o) for o in ("--idle-exit", "--study")):
        raise CliError(
            "--kind job: the workers must end when the study is done; pass "
            "`-- --study NAME` (they end when it completes) or `-- --idle-exit SECONDS` "
            "(e.g. -- --idle-exit 300)"
        )
    _check_k8s(args, rest)
    options = ["--server", args.server or "archsearch-server:50051", *rest]
    _check_worker_options(options)
    opts = _k8s.K8sOptions(
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        worker_image=args.image,
        server_image=args.server_image,
        namespace=args.namespace,
        name=args.name,
        server=args.server,
        kind=args.kind,
        token_secret=args.token_secret,
        db_secret=args.db_secret,
        worker_token=_first_line(args.token_file, "--token-file") if args.token_file else None,
        admin_token=(
            _first_line(args.admin_token_file, "--admin-token-file")
            if args.admin_token_file
            else None
        ),
        storage_url=args.storage_url,
        stop_grace_s=args.stop_grace,
        cpus_per_worker=args.cpus_per_worker,
        mem_gb=args.mem_gb,
        data_pvc=args.data_pvc,
        data_mount=args.data_mount,
        artifact_pvc=args.artifact_pvc,
        artifact_size=args.artifact_size,
        worker_args=rest,
        tls=bool(args.tls or args.tls_ca),
        tls_ca=_tls_ca(args),
    )
    text = _k8s.to_yaml(_k8s.render(opts))
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as e:
            raise CliError(f"cannot write --output {args.output}: {e.strerror}", 1) from None
        print(f"wrote {args.output}; apply it with `kubectl apply -f {args.output}`")
    else:
        print(text, end="")
    return 0


# ------------------------------------------------------------------------------ status / stop
