"""Kubernetes manifests for a worker fleet, and optionally the server it talks to.

``render`` returns plain objects (dicts), one per manifest, that ``kubectl apply -f -``
takes as they are:

- workers: a Deployment (``kubectl scale`` to grow or shrink; a worker that exits is started
  again) or a Job (``parallelism`` workers that end when the study is done: ``--study NAME``
  or ``--idle-exit``), with ``nvidia.com/gpu`` limits, the worker token mounted from a Secret, and a
  ``terminationGracePeriodSeconds`` longer than the worker's hand-back time (``--stop-grace``)
  so Kubernetes' SIGTERM is followed by a hand-back, not by SIGKILL mid-way;
- the server (unless ``--server`` names one outside): a one-replica Deployment (one writer,
  ``Recreate``), its Service, gRPC probes on the server's standard health service, the
  storage URL (PostgreSQL) and the tokens from Secrets, and its uploaded files
  (``--artifact-dir``) on a PersistentVolumeClaim (rendered, ``NAME-artifacts``, unless
  ``--artifact-pvc`` names one).

Secrets are referenced by name; they are rendered only when their content is given
(``--token-file``, ``--admin-token-file``, ``--storage-url``), since the output then holds it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

PORT = 50051
TOKEN_DIR = "/var/run/archsearch"
TLS_DIR = "/etc/archsearch/tls"
ARTIFACT_DIR = "/artifacts"
#: seconds of termination grace beyond the worker's own stop grace (process exit, API lag)
GRACE_MARGIN_S = 20


@dataclasses.dataclass
class K8sOptions:
    """What to render (the ``fleet k8s`` flags)."""

    workers: int = 1
    gpus_per_worker: int = 0
    worker_image: str = "archsearch-worker:latest"
    server_image: str = "archsearch-server:latest"
    namespace: str | None = None
    name: str = "archsearch"
    server: str | None = None  # HOST:PORT of a server outside; None: render the server too
    kind: str = "deployment"  # or "job"
    token_secret: str = "archsearch-tokens"
    db_secret: str = "archsearch-db"
    worker_token: str | None = None
    admin_token: str | None = None
    storage_url: str | None = None
    stop_grace_s: float = 10.0
    cpus_per_worker: float | None = None
    mem_gb: float | None = None
    data_pvc: str | None = None
    data_mount: str = "/data"
    artifact_pvc: str | None = None  # None: render NAME-artifacts of artifact_size
    artifact_size: str = "20Gi"
    worker_args: list[str] = dataclasses.field(default_factory=list)
    #: the workers dial ``server`` with TLS (``tls_ca``: the CA certificate's PEM text, rendered
    #: as a ConfigMap; else the system's CAs)
    tls: bool = False
    tls_ca: str | None = None

    @property
    def tls_ca_name(self) -> str:
        return f"{self.name}-tls-ca"

    @property
    def server_name(self) -> str:
        return f"{self.name}-server"

    @property
    def server_address(self) -> str:
        return self.server or f"{self.server_name}:{PORT}"

    @property
    def artifact_claim(self) -> str:
        return self.artifact_pvc or f"{self.name}-artifacts"

    @property
    def termination_grace_s(self) -> int:
        return max(30, math.ceil(self.stop_grace_s) + GRACE_MARGIN_S)


def _meta(opts: K8sOptions, name: str, component: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": _labels(opts, component)}
    if opts.namespace:
        meta["namespace"] = opts.namespace
    return meta


def _labels(opts: K8sOptions, component: str | None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "archsearch", "app.kubernetes.io/instance": opts.name}
    if component:
        labels["app.kubernetes.io/component"] = component
    return labels


def _security() -> dict[str, Any]:
    # The images run as the unprivileged user the Dockerfile creates.
    return {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000}


def _secret(opts: K8sOptions, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(opts, name),
        "type": "Opaque",
        "stringData": data,
    }


def _worker_pod(opts: K8sOptions) -> dict[str, Any]:
    args = [
        "worker",
        "--server",
        opts.server_address,
        "--token-file",
        f"{TOKEN_DIR}/token",
        "--stop-grace",
        f"{opts.stop_grace_s:g}",
        *opts.worker_args,
    ]
    if opts.gpus_per_worker and not any(a.split("=")[0] == "--device" for a in opts.worker_args):
        args += ["--device", "cuda"]
    if opts.tls_ca is not None:
        args += ["--tls-ca", f"{TLS_DIR}/ca.pem"]
    elif opts.tls:
        args.append("--tls")
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    if opts.gpus_per_worker:
        limits["nvidia.com/gpu"] = str(opts.gpus_per_worker)
    if opts.cpus_per_worker:
        requests["cpu"] = f"{opts.cpus_per_worker:g}"
    if opts.mem_gb:
        requests["memory"] = limits["memory"] = f"{int(opts.mem_gb * 1024)}Mi"
    resources = {k: v for k, v in (("limits", limits), ("requests", requests)) if v}
    mounts: list[dict[str, Any]] = [
        {"name": "token", "mountPath": TOKEN_DIR, "readOnly": True},
        {"name": "cache", "mountPath": "/cache"},
    ]
    volumes: list[dict[str, Any]] = [
        {
            "name": "token",
            "secret": {
                "secretName": opts.token_secret,
                "items": [{"key": "worker", "path": "token"}],
                "defaultMode": 0o440,
            },
        },
        {"name": "cache", "emptyDir": {}},
    ]
    if opts.tls_ca is not None:  # a CA certificate is public: a ConfigMap, not a Secret
        mounts.append({"name": "tls-ca", "mountPath": TLS_DIR, "readOnly": True})
        volumes.append({"name": "tls-ca", "configMap": {"name": opts.tls_ca_name}})
    if opts.data_pvc:
        mounts.append({"name": "data", "mountPath": opts.data_mount, "readOnly": True})
        claim = {"claimName": opts.data_pvc, "readOnly": True}
        volumes.append({"name": "data", "persistentVolumeClaim": claim})
    container: dict[str, Any] = {
        "name": "worker",
        "image": opts.worker_image,
        "command": ["archsearch"],
        "args": args,
        # the worker's caches (teachers, splits) in the pod's own scratch space
        "env": [{"name": "ARCHSEARCH_CACHE_DIR", "value": "/cache"}],
        "volumeMounts": mounts,
    }
    if resources:
        container["resources"] = resources
    return {
        "metadata": {"labels": _labels(opts, "worker")},
        "spec": {
            # SIGTERM, then the worker hands its trial back within --stop-grace, then exits.
            "terminationGracePeriodSeconds": opts.termination_grace_s,
            "securityContext": _security(),
            "containers": [container],
            "volumes": volumes,
            "restartPolicy": "Always" if opts.kind == "deployment" else "OnFailure",
        },
    }


def _workers(opts: K8sOptions) -> dict[str, Any]:
    name = f"{opts.name}-worker"
    pod = _worker_pod(opts)
    if opts.kind == "job":
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": _meta(opts, name, "worker"),
            # A work queue: `parallelism` workers, none started again once one has ended
            # well (its --study completed, or --idle-exit: no work left); the Job is done when
            # all have ended.
            "spec": {
                "parallelism": opts.workers,
                "backoffLimit": max(6, 3 * opts.workers),
                "template": pod,
            },
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(opts, name, "worker"),
        "spec": {
            "replicas": opts.workers,
            "selector": {"matchLabels": _labels(opts, "worker")},
            "template": pod,
        },
    }


def _server(opts: K8sOptions) -> list[dict[str, Any]]:
    container = {
        "name": "server",
        "image": opts.server_image,
        "command": ["archsearch"],
        "args": [
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(PORT),
            "--storage",
            "$(ARCHSEARCH_STORAGE)",  # expanded by Kubernetes from the env below
            "--worker-token-file",
            f"{TOKEN_DIR}/worker",
            "--admin-token-file",
            f"{TOKEN_DIR}/admin",
            # uploaded checkpoints, progress and plots: on a claim, kept across restarts (with
            # a PostgreSQL storage the server keeps no files unless told where)
            "--artifact-dir",
            ARTIFACT_DIR,
        ],
        "env": [
            {
                "name": "ARCHSEARCH_STORAGE",
                "valueFrom": {"secretKeyRef": {"name": opts.db_secret, "key": "url"}},
            },
            {"name": "ARCHSEARCH_CACHE_DIR", "value": "/cache"},
        ],
        "ports": [{"name": "grpc", "containerPort": PORT, "protocol": "TCP"}],
        # the server's standard grpc.health.v1 service (no token needed)
        "startupProbe": {"grpc": {"port": PORT}, "periodSeconds": 2, "failureThreshold": 60},
        "readinessProbe": {"grpc": {"port": PORT}, "periodSeconds": 5},
        "livenessProbe": {"grpc": {"port": PORT}, "periodSeconds": 10, "failureThreshold": 3},
        "volumeMounts": [
            {"name": "tokens", "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": "cache", "mountPath": "/cache"},
            {"name": "artifacts", "mountPath": ARTIFACT_DIR},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(opts, opts.server_name, "server"),
        "spec": {
            "replicas": 1,  # the one writer of its studies
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": _labels(opts, "server")},
            "template": {
                "metadata": {"labels": _labels(opts, "server")},
                "spec": {
                    "securityContext": _security(),
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "tokens",
                            "secret": {
                                "secretName": opts.token_secret,
                                "items": [
                                    {"key": "worker", "path": "worker"},
                                    {"key": "admin", "path": "admin"},
                                ],
                                "defaultMode": 0o440,
                            },
                        },
                        {"name": "cache", "emptyDir": {}},
                        {
                            "name": "artifacts",
                            "persistentVolumeClaim": {"claimName": opts.artifact_claim},
                        },
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(opts, opts.server_name, "server"),
        "spec": {
            "selector": _labels(opts, "server"),
            "ports": [{"name": "grpc", "port": PORT, "targetPort": "grpc", "protocol": "TCP"}],
        },
    }
    if opts.artifact_pvc:  # the user's own claim
        return [deployment, service]
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(opts, opts.artifact_claim, "server"),
        "spec": {
            "accessModes": ["ReadWriteOnce"],  # the one server pod
            "resources": {"requests": {"storage": opts.artifact_size}},
        },
    }
    return [claim, deployment, service]


def render(opts: K8sOptions) -> list[dict[str, Any]]:
    """The manifests: Secrets given, then the server (unless outside), then the workers."""
    objs: list[dict[str, Any]] = []
    tokens = {k: v for k, v in (("worker", opts.worker_token), ("admin", opts.admin_token)) if v}
    if tokens:
        objs.append(_secret(opts, opts.token_secret, tokens))
    if opts.storage_url and opts.server is None:
        objs.append(_secret(opts, opts.db_secret, {"url": opts.storage_url}))
    if opts.server is None:
        objs += _server(opts)
    if opts.tls_ca is not None:
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _meta(opts, opts.tls_ca_name),
                "data": {"ca.pem": opts.tls_ca},
            }
        )
    objs.append(_workers(opts))
    return objs


def to_yaml(objs: list[dict[str, Any]]) -> str:
    import yaml

    class _Plain(yaml.SafeDumper):
        """No ``&id001`` anchors: every manifest spelled out, as kubectl users expect."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump_all(objs, Dumper=_Plain, sort_keys=False, default_flow_style=False)
