"""``archsearch fleet``: start, watch and stop many workers through SLURM, Ray or Kubernetes.

Registered on the main CLI by ``server/cli.py``; the commands are in ``_commands``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from archsearch.fleet._commands import (
    DEFAULT_FOLDER,
    cmd_fleet_ray,
    cmd_fleet_slurm,
    cmd_fleet_status,
    cmd_fleet_stop,
)
from archsearch.fleet._k8s_command import cmd_fleet_k8s
from archsearch.server._cli_common import _add_conn, quantity, seconds, whole_number

GB = quantity(allow_zero=False, unit="GB")
CPUS = quantity(allow_zero=False, unit="CPUs")
#: a Ray fleet's --name: its actors are NAME-i and their workers ray-NAME-i, a worker id
_ACTOR_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}\Z")


#: ``--name``: the prefix of the objects' names (RFC 1123 label), 52 at most to leave room for
#: the suffixes added (``-server``, ``-artifacts``); a rendered Service's also starts with a
#: letter (``_k8s_command._check_k8s``)
_K8S_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?\Z")
#: a namespace (RFC 1123 label)
_K8S_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
#: a Secret's or a PersistentVolumeClaim's name (RFC 1123 subdomain)
_K8S_SUBDOMAIN = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z"
)
_K8S_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?\Z")


def _k8s(pattern: re.Pattern[str], rule: str) -> Any:
    def check(text: str) -> str:
        if not pattern.match(text):
            raise argparse.ArgumentTypeError(f"{text!r}: Kubernetes takes {rule}")
        return text

    return check


k8s_name = _k8s(
    _K8S_PREFIX,
    "1-52 of lowercase letters, digits and '-', starting and ending with a letter or digit "
    "(e.g. archsearch-sst2)",
)
k8s_namespace = _k8s(
    _K8S_LABEL,
    "1-63 of lowercase letters, digits and '-', starting and ending with a letter or digit",
)
k8s_object = _k8s(
    _K8S_SUBDOMAIN,
    "lowercase letters, digits, '-' and '.' (253 at most), each dot-separated part starting "
    "and ending with a letter or digit",
)


def k8s_quantity(text: str) -> str:
    """A storage size as Kubernetes writes it (``20Gi``, ``500Mi``)."""
    if not _K8S_QUANTITY.match(text) or float(re.sub(r"[A-Za-z]+", "", text)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a size such as 20Gi or 500Mi")
    return text


def actor_name(text: str) -> str:
    """``--name`` of a Ray fleet: letters, digits, '.', '_' and '-' (worker ids take no
    other), at most 100."""
    if not _ACTOR_NAME.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: 1-100 of letters, digits, '.', '_' or '-' (its workers are named "
            "ray-NAME-0, ray-NAME-1, ...)"
        )
    return text


def restarts(text: str) -> int:
    """``--max-restarts``: a whole number, or -1 for always."""
    try:
        value = int(text)
    except ValueError:
        value = -2
    if value < -1:
        raise argparse.ArgumentTypeError(
            f"expected a whole number >= 0, or -1 (always), got {text!r}"
        )
    return value


def add_fleet_command(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    command: Callable[[str, str], argparse.ArgumentParser],
) -> None:
    """Registers ``archsearch fleet`` and its subcommands on the CLI's subparsers."""
    fleet = command("fleet", "start, watch and stop many workers (SLURM, Ray, Kubernetes)")
    fsub = fleet.add_subparsers(
        dest="fleet_command", required=True, metavar="BACKEND", parser_class=type(fleet)
    )

    def backend(name: str, help_text: str) -> argparse.ArgumentParser:
        return fsub.add_parser(
            name, help=help_text, description=help_text, formatter_class=fleet.formatter_class
        )

    def common(p: argparse.ArgumentParser) -> None:
        _add_conn(p)
        p.add_argument("--workers", type=whole_number(1), required=True, help="how many workers")
        p.add_argument(
            "--gpus-per-worker",
            type=whole_number(0),
            default=0,
            help="GPUs each worker gets (its trainer uses --device cuda unless told otherwise)",
        )
        p.add_argument(
            "--folder",
            default=DEFAULT_FOLDER,
            help="where the fleet file (and submitit's job files and logs) go; on SLURM a "
            "folder every node can read",
        )
        p.add_argument(
            "worker_args",
            nargs=argparse.REMAINDER,
            metavar="-- WORKER OPTIONS",
            help="options of `archsearch worker` (--trainer, --study, --idle-exit, ...)",
        )

    s = backend("slurm", "run workers as a SLURM job array (through submitit)")
    common(s)
    s.add_argument("--partition", help="SLURM partition; default: the cluster's")
    s.add_argument(
        "--time", required=True, help="time limit per job, SLURM's format (4:00:00, 1-00:00:00)"
    )
    s.add_argument("--cpus-per-worker", type=whole_number(1), help="CPUs per job")
    s.add_argument("--mem-gb", type=GB, help="memory per job (GB)")
    s.add_argument("--account", help="SLURM account to charge")
    s.add_argument("--qos", help="SLURM quality of service")
    s.add_argument("--constraint", help="SLURM node features, e.g. a100")
    s.add_argument(
        "--array-parallelism", type=whole_number(1), help="most jobs of the array running at once"
    )
    s.add_argument(
        "--signal-delay",
        type=int,
        default=90,
        metavar="SECONDS",
        help="SLURM warns a job (USR2) this long before its time limit; the worker then hands "
        "its trial back",
    )
    s.add_argument(
        "--requeue",
        action="store_true",
        help="requeue a job after a time limit or pre-emption (the array keeps its size)",
    )
    s.add_argument(
        "--max-requeues",
        type=whole_number(0),
        default=None,
        help="with --requeue: time limits a job is requeued after before it ends (submitit's "
        "max_num_timeout; pre-emptions are not counted; default 100)",
    )
    s.add_argument(
        "--setup",
        action="append",
        metavar="COMMAND",
        help="shell line run before the worker, repeatable (e.g. 'module load cuda')",
    )
    s.add_argument(
        "--sbatch",
        action="append",
        metavar="KEY=VALUE",
        help="any other sbatch option, repeatable (e.g. --sbatch mail-type=END)",
    )
    s.add_argument(
        "--python",
        help="command starting Python on the nodes; default: this interpreter",
    )
    s.add_argument("--job-name", default="archsearch-worker", help="SLURM job name")
    s.add_argument(
        "--cluster",
        choices=["slurm", "local"],
        default="slurm",
        help="local: the same jobs as processes of this machine (submitit's local executor)",
    )
    s.add_argument("--dry-run", action="store_true", help="print the sbatch script; submit nothing")
    s.set_defaults(func=cmd_fleet_slurm)

    r = backend("ray", "run workers as Ray actors on an existing Ray cluster (extra: ray)")
    common(r)
    r.add_argument(
        "--address",
        required=True,
        help="the Ray cluster: HOST:PORT of its head (GCS), ray://HOST:10001, or auto",
    )
    r.add_argument("--namespace", default="archsearch", help="Ray namespace of the actors")
    r.add_argument(
        "--name",
        type=actor_name,
        default="archsearch-worker",
        help="actors are NAME-0, NAME-1, ... (a second fleet of the same folder: another name)",
    )
    r.add_argument("--cpus-per-worker", type=CPUS, default=1.0, help="CPUs Ray reserves per worker")
    r.add_argument(
        "--max-restarts",
        type=restarts,
        default=-1,
        help="how often Ray restarts a worker that died (-1: always); a worker that exits "
        "with 2 (bad input) is not restarted: `fleet status` says FAILED",
    )
    r.add_argument(
        "--ray-token-file",
        help="Ray's token for token authentication (sets RAY_AUTH_TOKEN_PATH); default: "
        "Ray's own settings (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)",
    )
    r.set_defaults(func=cmd_fleet_ray)

    k = backend("k8s", "render Kubernetes manifests for the workers (and the server)")
    k.add_argument("--render", action="store_true", help="write the manifests (YAML)")
    k.add_argument("--output", help="file to write; default: standard output")
    k.add_argument("--workers", type=whole_number(1), default=1, help="worker replicas")
    k.add_argument(
        "--gpus-per-worker", type=whole_number(0), default=0, help="nvidia.com/gpu per worker"
    )
    k.add_argument("--cpus-per-worker", type=CPUS, help="CPU request per worker")
    k.add_argument("--mem-gb", type=GB, help="memory request and limit per worker (GB)")
    k.add_argument(
        "--kind",
        choices=["deployment", "job"],
        default="deployment",
        help="workers as a Deployment (scaled with kubectl scale) or a Job that ends with "
        "the study (needs -- --idle-exit S)",
    )
    k.add_argument("--image", default="archsearch-worker:latest", help="worker image")
    k.add_argument("--server-image", default="archsearch-server:latest", help="server image")
    k.add_argument(
        "--namespace", type=k8s_namespace, help="namespace of every object; default: kubectl's"
    )
    k.add_argument(
        "--name", type=k8s_name, default="archsearch", help="prefix of the objects' names"
    )
    k.add_argument(
        "--server",
        help="HOST:PORT of a server outside the cluster; default: render the server too "
        "(Deployment and Service NAME-server)",
    )
    k.add_argument(
        "--tls",
        action="store_true",
        help="with --server: the workers dial it with TLS, trusting the system's CAs",
    )
    k.add_argument(
        "--tls-ca",
        help="with --server: the PEM certificate of the CA that signed its certificate, "
        "rendered as the ConfigMap NAME-tls-ca and mounted in every worker (implies --tls)",
    )
    k.add_argument(
        "--token-secret",
        type=k8s_object,
        default="archsearch-tokens",
        help="Secret with keys worker (the workers' token) and admin (the server's admin tokens)",
    )
    k.add_argument(
        "--db-secret",
        type=k8s_object,
        default="archsearch-db",
        help="Secret whose key url is the storage URL",
    )
    k.add_argument(
        "--token-file",
        help="render the token Secret with this worker token (the output then holds it)",
    )
    k.add_argument("--admin-token-file", help="with --token-file: the admin token for it")
    k.add_argument(
        "--storage-url", help="render the db Secret with this URL (the output then holds it)"
    )
    k.add_argument(
        "--stop-grace",
        type=seconds(allow_zero=True),
        default=10.0,
        help="the worker's hand-back time after SIGTERM; the pods get this + 20 s (at "
        "least 30) of termination grace",
    )
    k.add_argument(
        "--data-pvc", type=k8s_object, help="PersistentVolumeClaim with data (e.g. GLUE) to mount"
    )
    k.add_argument(
        "--artifact-pvc",
        type=k8s_object,
        help="the server's PersistentVolumeClaim for uploaded files (checkpoints, training "
        "progress, plots); default: render one, NAME-artifacts, of --artifact-size",
    )
    k.add_argument(
        "--artifact-size",
        type=k8s_quantity,
        default="20Gi",
        help="size of the rendered artifact claim (default 20Gi)",
    )
    k.add_argument("--data-mount", default="/data", help="where --data-pvc is mounted")
    k.add_argument(
        "worker_args",
        nargs=argparse.REMAINDER,
        metavar="-- WORKER OPTIONS",
        help="options of `archsearch worker` (--trainer, --study, --glue-dir, ...)",
    )
    k.set_defaults(func=cmd_fleet_k8s)

    st = backend("status", "show the state of a fleet's jobs or actors")
    st.add_argument("--folder", default=DEFAULT_FOLDER, help="the fleet's folder")
    st.add_argument("--job", action="append", help="only this job or actor, repeatable")
    st.add_argument("--ray-token-file", help="Ray fleets: Ray's token (see `fleet ray`)")
    st.set_defaults(func=cmd_fleet_status)

    sp = backend("stop", "stop a fleet's workers (each hands its trial back)")
    sp.add_argument("--folder", default=DEFAULT_FOLDER, help="the fleet's folder")
    sp.add_argument("--job", action="append", help="only this job or actor, repeatable")
    sp.add_argument("--ray-token-file", help="Ray fleets: Ray's token (see `fleet ray`)")
    sp.add_argument(
        "--grace",
        type=seconds(allow_zero=True),
        default=30.0,
        help="Ray: seconds to let workers hand back before their actors are killed",
    )
    sp.set_defaults(func=cmd_fleet_stop)
