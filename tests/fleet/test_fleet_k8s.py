"""``archsearch fleet k8s --render``: its objects loaded with the ``kubernetes`` client's models.

No cluster here, so the check is structural: every rendered object deserialises into its
model class and serialises back to exactly what was rendered (a misspelt or misplaced field
would be dropped by the model and show as a difference), and the fields the fleet depends on
(GPU limits, Secret references, probes, termination grace, selectors) hold their values.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from _procs import REPO

from archsearch.fleet._k8s import GRACE_MARGIN_S
from archsearch.server.cli import main

kubernetes = pytest.importorskip("kubernetes", reason="pip install kubernetes (the dev extra)")

MODELS = {
    ("v1", "Secret"): "V1Secret",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("batch/v1", "Job"): "V1Job",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("v1", "ConfigMap"): "V1ConfigMap",
}


def _render(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    assert main(["fleet", "k8s", "--render", *argv]) == 0
    return list(yaml.safe_load_all(capsys.readouterr().out))


def _model(obj: dict[str, Any]) -> Any:
    """The kubernetes client's model of ``obj``, checked to lose nothing on the way."""
    client = kubernetes.client.ApiClient()
    kind = MODELS[obj["apiVersion"], obj["kind"]]
    model = client.deserialize(json.dumps(obj), kind, "application/json")
    assert client.sanitize_for_serialization(model) == obj  # no unknown or misplaced field
    return model


def test_server_and_gpu_workers_round_trip_through_the_models(capsys) -> None:
    objs = _render(
        capsys, "--workers", "8", "--gpus-per-worker", "2", "--namespace", "nas",
        "--image", "reg.example/archsearch-worker:1", "--stop-grace", "25",
        "--data-pvc", "glue", "--", "--trainer", "bert", "--glue-dir", "/data/glue",
    )  # fmt: skip
    models = [_model(o) for o in objs]
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("PersistentVolumeClaim", "archsearch-artifacts"),
        ("Deployment", "archsearch-server"),
        ("Service", "archsearch-server"),
        ("Deployment", "archsearch-worker"),
    ]
    claim, server, service, workers = models
    assert all(m.metadata.namespace == "nas" for m in models)

    # Workers: replicas, GPU limits, the token from the Secret, grace beyond the hand-back.
    assert workers.spec.replicas == 8
    pod = workers.spec.template.spec
    (c,) = pod.containers
    assert c.resources.limits == {"nvidia.com/gpu": "2"}
    assert c.image == "reg.example/archsearch-worker:1"
    assert c.command == ["archsearch"]
    assert c.args[:7] == [
        "worker", "--server", "archsearch-server:50051",
        "--token-file", "/var/run/archsearch/token", "--stop-grace", "25",
    ]  # fmt: skip
    assert c.args[7:] == ["--trainer", "bert", "--glue-dir", "/data/glue", "--device", "cuda"]
    assert pod.termination_grace_period_seconds == 25 + GRACE_MARGIN_S > 25
    volumes = {v.name: v for v in pod.volumes}
    assert volumes["token"].secret.secret_name == "archsearch-tokens"
    assert [(i.key, i.path) for i in volumes["token"].secret.items] == [("worker", "token")]
    assert volumes["data"].persistent_volume_claim.claim_name == "glue"
    mounts = {m.name: m.mount_path for m in c.volume_mounts}
    assert mounts["token"] == "/var/run/archsearch" and mounts["data"] == "/data"
    assert workers.spec.selector.match_labels == workers.spec.template.metadata.labels

    # Server: one writer, gRPC health probes, storage URL and tokens from Secrets.
    assert server.spec.replicas == 1 and server.spec.strategy.type == "Recreate"
    (s,) = server.spec.template.spec.containers
    for probe in (s.readiness_probe, s.liveness_probe, s.startup_probe):
        assert probe.grpc.port == 50051
    env = {e.name: e for e in s.env}
    ref = env["ARCHSEARCH_STORAGE"].value_from.secret_key_ref
    assert (ref.name, ref.key) == ("archsearch-db", "url")
    assert s.args[s.args.index("--storage") + 1] == "$(ARCHSEARCH_STORAGE)"
    assert s.args[s.args.index("--host") + 1] == "0.0.0.0"
    assert "--worker-token-file" in s.args and "--admin-token-file" in s.args
    (tokens,) = [v for v in server.spec.template.spec.volumes if v.secret]
    assert {i.key for i in tokens.secret.items} == {"worker", "admin"}
    # Uploaded files on the claim rendered beside it (with PostgreSQL the server keeps none
    # unless told where; the rendered server had no --artifact-dir, so no checkpoints)
    assert s.args[s.args.index("--artifact-dir") + 1] == "/artifacts"
    (files,) = [v for v in server.spec.template.spec.volumes if v.persistent_volume_claim]
    assert files.persistent_volume_claim.claim_name == claim.metadata.name
    assert {m.name: m.mount_path for m in s.volume_mounts}["artifacts"] == "/artifacts"
    assert claim.spec.resources.requests == {"storage": "20Gi"}

    # The Service reaches the server's pods, on the port the workers dial.
    assert service.spec.selector == server.spec.template.metadata.labels
    assert server.spec.selector.match_labels == server.spec.template.metadata.labels
    assert service.spec.ports[0].port == 50051 and service.spec.ports[0].target_port == "grpc"
    assert s.ports[0].name == "grpc" and s.ports[0].container_port == 50051


def test_workers_dial_an_outside_tls_server(capsys, tmp_path) -> None:
    """`--tls`/`--tls-ca` were refused after `--` and missing before it: workers for an
    outside server could only dial it in plain text, their token on the network."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    objs = _render(capsys, "--server", "nas.example.org:443", "--tls-ca", str(ca))
    assert [o["kind"] for o in objs] == ["ConfigMap", "Deployment"]
    config, workers = (_model(o) for o in objs)
    assert config.metadata.name == "archsearch-tls-ca"
    assert config.data == {"ca.pem": ca.read_text()}
    pod = workers.spec.template.spec
    args = pod.containers[0].args
    assert args[args.index("--tls-ca") + 1] == "/etc/archsearch/tls/ca.pem"
    mount = next(m for m in pod.containers[0].volume_mounts if m.name == "tls-ca")
    assert mount.mount_path == "/etc/archsearch/tls" and mount.read_only
    volume = next(v for v in pod.volumes if v.name == "tls-ca")
    assert volume.config_map.name == "archsearch-tls-ca"
    plain = _render(capsys, "--server", "nas.example.org:443", "--tls")
    assert "--tls" in plain[-1]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [o["kind"] for o in plain] == ["Deployment"]


def test_job_workers_of_one_study_end_with_it(capsys) -> None:
    """``--study`` is a Job's ending condition as --idle-exit is (it was refused)."""
    objs = _render(capsys, "--kind", "job", "--", "--trainer", "table", "--study", "s")
    job = next(o for o in objs if o["kind"] == "Job")
    assert "--study" in job["spec"]["template"]["spec"]["containers"][0]["args"]


def test_job_workers_for_an_outside_server_with_rendered_secrets(capsys, tmp_path) -> None:
    (tmp_path / "w.txt").write_text("worker-token-123\n")
    (tmp_path / "a.txt").write_text("admin-token-456\n")
    objs = _render(
        capsys, "--kind", "job", "--workers", "4", "--server", "nas.example.org:443",
        "--token-file", str(tmp_path / "w.txt"), "--admin-token-file", str(tmp_path / "a.txt"),
        "--storage-url", "postgresql://u:p@db/nas", "--", "--trainer", "table",
        "--idle-exit", "120",
    )  # fmt: skip
    models = [_model(o) for o in objs]
    # An outside server: no server objects and no db Secret (the URL is that server's).
    assert [o["kind"] for o in objs] == ["Secret", "Job"]
    secret, job = models
    assert secret.string_data == {"worker": "worker-token-123", "admin": "admin-token-456"}
    assert job.spec.parallelism == 4
    pod = job.spec.template.spec
    assert pod.restart_policy == "OnFailure"  # an idle exit (0) ends a worker for good
    (c,) = pod.containers
    assert c.args[c.args.index("--server") + 1] == "nas.example.org:443"
    assert c.resources is None  # no GPUs asked for, none limited
    assert "--device" not in c.args


def test_token_file_alone_renders_no_secret_the_server_cannot_mount(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "w.txt").write_text("worker-token\n")
    assert main(["fleet", "k8s", "--render", "--token-file", str(tmp_path / "w.txt")]) == 2
    assert "--token-file without --admin-token-file" in capsys.readouterr().err
    outside = ["--server", "nas.example.org:443", "--token-file", str(tmp_path / "w.txt")]
    assert [o["kind"] for o in _render(capsys, *outside)] == ["Secret", "Deployment"]


def test_a_name_may_start_with_a_digit_when_no_service_is_rendered(capsys) -> None:  # type: ignore[no-untyped-def]
    objs = _render(capsys, "--server", "search.example:50051", "--name", "1fleet")
    assert [o["metadata"]["name"] for o in objs] == ["1fleet-worker"]


def test_an_artifact_claim_of_ones_own_is_mounted_not_rendered(capsys) -> None:
    objs = _render(capsys, "--artifact-pvc", "nas.files-1", "--namespace", "n" * 63)
    assert [o["kind"] for o in objs] == ["Deployment", "Service", "Deployment"]
    (files,) = [
        v for v in objs[0]["spec"]["template"]["spec"]["volumes"] if v["name"] == "artifacts"
    ]
    assert files["persistentVolumeClaim"] == {"claimName": "nas.files-1"}


def test_rendered_server_secret_holds_the_storage_url(capsys) -> None:
    objs = _render(capsys, "--storage-url", "postgresql://u:p@db/nas")
    db = _model(objs[0])
    assert db.metadata.name == "archsearch-db" and db.string_data == {
        "url": "postgresql://u:p@db/nas"
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "fleet k8s renders manifests and applies nothing: pass --render"),
        (["--render", "--kind", "job"], "pass `-- --study NAME` (they end when it completes)"),
        (["--render", "--", "--stop-grace", "5"], "--stop-grace after `--`"),
        (["--render", "--tls"], "--tls/--tls-ca are for a server outside the cluster"),
        (["--render", "--server", "h:1", "--tls-ca", "/nonexistent.pem"], "cannot read --tls-ca"),
        (["--render", "--server", "h:1", "--tls-ca", "/etc/passwd"], "holds no PEM certificate"),
        (["--render", "--", "--server", "x:1"], "--server after `--`"),
        (["--render", "--", "--nonsense"], "--nonsense after `--`: not an option"),
        (
            ["--render", "--server", "h:1", "--token-file", "/nonexistent/t"],
            "cannot read --token-file",
        ),
        # manifests that would fail on apply or lose data (they were rendered, exit 0)
        (["--render", "--admin-token-file", "/a.tok"], "--admin-token-file without --token-file"),
        (["--render", "--storage-url", "sqlite:///as.db"], "lost when the pod restarts"),
        (["--render", "--server", "127.0.0.1:50051"], "a loopback or wildcard address"),
        (["--render", "--", "--idle-exit", "60"], "--idle-exit with a Deployment"),
        # a --study worker exits 0 when its study completes: restarted for ever
        (["--render", "--", "--study", "s"], "--study with a Deployment: its workers exit"),
        (["--render", "--name", "Bad_Name!"], "argument --name: 'Bad_Name!': Kubernetes takes"),
        (["--render", "--namespace", "UPPER"], "argument --namespace"),
        (["--render", "--artifact-size", "lots"], "a size such as 20Gi"),
        (["--render", "--name", "1abc"], "a letter first"),  # the Service 1abc-server
        (["--render", "--token-secret", "Bad_Secret"], "argument --token-secret"),
        (["--render", "--data-pvc", "Bad_PVC"], "argument --data-pvc"),
        (["--render", "--storage-url", "SQLITE:///x.db"], "lost when the pod restarts"),
        (["--render", "--server", "LOCALHOST:50051"], "loopback or wildcard"),
        (["--render", "--server", "0.0.0.0:50051"], "loopback or wildcard"),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys) -> None:
    try:
        code = main(["fleet", "k8s", *argv])
    except SystemExit as e:
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("archsearch: "), err
    assert len(err.strip().splitlines()) == 1


def test_dockerfile_pins_the_projects_torch_and_copies_every_package() -> None:
    """The image installs the torch pyproject pins, before the extras (so they pull no other
    build), and copies every folder pyproject maps to a package."""
    text = (REPO / "Dockerfile").read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    (pin,) = {d for d in project["project"]["optional-dependencies"]["worker"] if "torch" in d}
    assert f"ARG TORCH_VERSION={pin.split('==')[1]}" in text
    assert text.index('"torch==${TORCH_VERSION}"') < text.index("pip install '.[worker]'")
    copied = set(re.findall(r"^COPY (\S+)/ ", text, flags=re.M))
    folders = {Path(p).parts[0] for p in project["tool"]["setuptools"]["package-dir"].values()}
    assert folders <= copied, folders - copied
    assert {"worker", "server"} <= set(re.findall(r"^FROM base AS (\w+)$", text, flags=re.M))
