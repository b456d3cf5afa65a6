"""The Python client: ``SearchClient`` for people and scripts, ``WorkerClient`` for workers.

Imports only grpc and the generated stubs, so a worker machine needs none of the search stack.
Every call carries a deadline; errors surface as :class:`ClientError` with the gRPC status code
and the server's message, which names the problem and the fix.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from archsearch.v1 import archsearch_pb2 as pb
from archsearch.v1 import archsearch_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from archsearch.spaces import TrainerInfo

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


class ClientError(Exception):
    """A failed call. ``code`` is the ``grpc.StatusCode``; ``details`` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str, method: str = "") -> None:
        self.code = code
        self.details = details
        self.method = method
        super().__init__(
            f"{method}: {code.name}: {details}" if method else f"{code.name}: {details}"
        )

    @property
    def transient(self) -> bool:
        """True for errors worth retrying (server down or busy, deadline passed)."""
        return self.code in TRANSIENT


def connection_cause(e: ClientError, target: str, tls: bool) -> str | None:
    """One line naming why a connection failed and the flag that fixes it, from the text grpc
    puts in an UNAVAILABLE status; None when it names no cause this can explain.

    What grpc reports (checked against grpc 1.7x): a plain-text client of a TLS server sees
    the server close the socket ("Socket closed"); a TLS client of a plain-text server
    "WRONG_VERSION_NUMBER"; an untrusted certificate "CERTIFICATE_VERIFY_FAILED"; a
    certificate for another name a "Peer name ... is not in peer certificate" error.

    Args:
        e: the failed call.
        target: HOST:PORT the client dialled.
        tls: whether the client used TLS (``--tls`` or ``--tls-ca``).
    """
    if e.code != grpc.StatusCode.UNAVAILABLE:
        return None
    text = e.details
    if "CERTIFICATE_VERIFY_FAILED" in text:
        why = text.rpartition("CERTIFICATE_VERIFY_FAILED:")[2].strip().removesuffix(": OK")
        return (
            f"the server at {target} speaks TLS, but its certificate is not trusted ({why}): "
            "pass --tls-ca FILE, the CA certificate that signed it (for a self-signed "
            "certificate, the certificate itself)"
        )
    if "WRONG_VERSION_NUMBER" in text:
        return (
            f"the server at {target} does not speak TLS: drop --tls/--tls-ca, or start the "
            "server with --tls-cert and --tls-key"
        )
    if "Peer name" in text and "not in peer certificate" in text:
        return (
            f"the server's TLS certificate is not made out to {target.rpartition(':')[0]}: "
            "connect with a name the certificate lists (its subjectAltName), or reissue it"
        )
    if "handshake" in text.lower() or "ssl" in text.lower():
        return f"the TLS handshake with {target} failed ({text.rpartition(': ')[2] or text})"
    if "Socket closed" in text and not tls:
        return (
            f"the server at {target} closed the connection at once: it most likely speaks "
            "TLS; pass --tls-ca FILE (the CA certificate that signed the server's "
            "certificate) or --tls (a certificate the system trusts)"
        )
    return None


def resolve_token(token: str | None = None, token_file: str | None = None) -> str | None:
    """The token to send: explicit, else from ``token_file``, else ``$ARCHSEARCH_TOKEN``."""
    if token:
        return token
    if token_file:
        lines = [ln.strip() for ln in Path(token_file).read_text().splitlines()]
        tokens = [ln for ln in lines if ln and not ln.startswith("#")]
        if not tokens:
            raise ValueError(f"token file {token_file} holds no token")
        return tokens[0]
    return os.environ.get("ARCHSEARCH_TOKEN") or None


def check_target(target: str) -> str:
    """``target`` if its port, when it names one (HOST:PORT), is in 1..65535; gRPC would take
    a larger port modulo 65536 (99999 dials 34463) or dial port 0. Raises ValueError."""
    host, sep, port = target.rpartition(":")
    if sep and host and port.isascii() and port.isdigit() and not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be in 1..65535, got {target!r} (HOST:PORT)")
    return target


def make_channel(
    target: str,
    tls_ca: str | None = None,
    tls: bool = False,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> grpc.Channel:
    """A channel to ``target`` (HOST:PORT); TLS when ``tls`` or a CA file is given."""
    check_target(target)
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # Reconnect quickly after a server restart (the default backoff grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]
    if tls or tls_ca:
        root = _read_pem("CA certificate", tls_ca)
        cert = _read_pem("client certificate", client_cert)
        key = _read_pem("client key", client_key)
        creds = grpc.ssl_channel_credentials(root, key, cert)
        return grpc.secure_channel(target, creds, options=options)
    return grpc.insecure_channel(target, options=options)


def _read_pem(what: str, path: str | None) -> bytes | None:
    """The bytes of a PEM file; ValueError naming the file and the problem."""
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {what} file {path}: {e.strerror}") from e
    if b"-----BEGIN" not in data:
        raise ValueError(f"{what} file {path} is not a PEM file (no -----BEGIN line)")
    return data


def _poll_deadline(timeout_s: float) -> float:
    """Call deadline of a long poll: the poll itself plus a margin (robust to bad input, which
    the server answers with INVALID_ARGUMENT rather than the client timing out)."""
    return (min(timeout_s, 3600.0) if math.isfinite(timeout_s) else 0.0) + 10.0


def _acquire_request(
    worker_id: str, capabilities: pb.WorkerCapabilities, timeout_s: float, study_name: str
) -> pb.AcquireTrialRequest:
    return pb.AcquireTrialRequest(
        worker_id=worker_id, capabilities=capabilities, study_name=study_name, timeout_s=timeout_s
    )


class _Base:
    def __init__(
        self,
        target: str,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        channel: grpc.Channel | None = None,
        tls_ca: str | None = None,
        tls: bool = False,
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._token = resolve_token(token)
        self._channel = channel or make_channel(target, tls_ca=tls_ca, tls=tls)
        self._metadata = (("authorization", f"Bearer {self._token}"),) if self._token else ()
        self.tls = bool(tls or tls_ca)
        self._last_cause: str | None = None

    def _call(self, stub_method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return stub_method(request, timeout=timeout or self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as e:
            name = getattr(stub_method, "_method", b"")
            method = name.decode().rsplit("/", 1)[-1] if isinstance(name, bytes) else ""
            raise ClientError(e.code(), e.details() or "", method) from None

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Blocks until the channel connects; ClientError(UNAVAILABLE) after ``timeout_s``."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise ClientError(
                grpc.StatusCode.UNAVAILABLE,
                f"no archsearch server answers at {self.target} after {timeout_s:.0f}s; "
                "is `archsearch serve` running there?",
            ) from None

    def cause_once(self, e: ClientError) -> str | None:
        """:func:`connection_cause` of ``e`` when it differs from the previous call's, else
        None: a retry loop logs a cause once, not on every retry."""
        cause = connection_cause(e, self.target, self.tls)
        if cause == self._last_cause:
            return None
        self._last_cause = cause
        return cause

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SearchClient(_Base):
    """Launch, inspect and stop searches. Needs an admin token when the server has tokens."""

    def __init__(self, target: str, **kw: Any) -> None:
        super().__init__(target, **kw)
        self._stub = pb_grpc.SearchServiceStub(self._channel)

    def launch(self, spec: dict[str, Any] | str) -> pb.Study:
        text = spec if isinstance(spec, str) else json.dumps(spec)
        return self._call(self._stub.LaunchSearch, pb.LaunchSearchRequest(spec_json=text)).study

    def get_study(self, name: str) -> pb.Study:
        return self._call(self._stub.GetStudy, pb.GetStudyRequest(name=name)).study

    def list_studies(self) -> list[pb.Study]:
        return list(self._call(self._stub.ListStudies, pb.ListStudiesRequest()).studies)

    def iter_trials(
        self, study_name: str, page_size: int = 200, states: tuple[int, ...] = ()
    ) -> Iterator[pb.Trial]:
        """Every trial of a study, fetched page by page."""
        token = ""
        while True:
            req = pb.ListTrialsRequest(
                study_name=study_name, page_size=page_size, page_token=token, states=list(states)
            )
            resp = self._call(self._stub.ListTrials, req)
            yield from resp.trials
            token = resp.next_page_token
            if not token:
                return

    def list_trials(self, study_name: str, **kw: Any) -> list[pb.Trial]:
        return list(self.iter_trials(study_name, **kw))

    def stop(self, name: str) -> pb.Study:
        return self._call(self._stub.StopSearch, pb.StopSearchRequest(name=name)).study


class WorkerClient(_Base):
    """The worker's side of the protocol: thin, typed wrappers around WorkerService."""

    def __init__(self, target: str, **kw: Any) -> None:
        super().__init__(target, **kw)
        self.stub = pb_grpc.WorkerServiceStub(self._channel)

    def register(
        self,
        worker_id: str,
        capabilities: pb.WorkerCapabilities,
        trainer_info: Sequence[TrainerInfo] = (),
    ) -> pb.RegisterWorkerResponse:
        """Registers, describing each trainer in ``trainer_info`` (what it trains and reports)."""
        return self._call(
            self.stub.RegisterWorker,
            pb.RegisterWorkerRequest(
                worker_id=worker_id,
                capabilities=capabilities,
                trainer_info=[trainer_info_to_pb(t) for t in trainer_info],
            ),
        )

    def acquire_future(
        self,
        worker_id: str,
        capabilities: pb.WorkerCapabilities,
        timeout_s: float,
        study_name: str = "",
    ) -> grpc.Future:
        """Starts a long poll; the caller waits on (or cancels) the returned future."""
        req = _acquire_request(worker_id, capabilities, timeout_s, study_name)
        return self.stub.AcquireTrial.future(
            req, timeout=_poll_deadline(timeout_s), metadata=self._metadata
        )

    def acquire(
        self,
        worker_id: str,
        capabilities: pb.WorkerCapabilities,
        timeout_s: float = 0.0,
        study_name: str = "",
    ) -> pb.AcquireTrialResponse:
        req = _acquire_request(worker_id, capabilities, timeout_s, study_name)
        return self._call(self.stub.AcquireTrial, req, timeout=_poll_deadline(timeout_s))

    def heartbeat(self, lease_id: str) -> pb.HeartbeatResponse:
        return self._call(self.stub.Heartbeat, pb.HeartbeatRequest(lease_id=lease_id))

    def report(self, lease_id: str, step: int, value: float) -> pb.ReportIntermediateResponse:
        return self._call(
            self.stub.ReportIntermediate,
            pb.ReportIntermediateRequest(lease_id=lease_id, step=step, value=value),
        )

    def complete(
        self, lease_id: str, metrics: dict[str, float], info: dict[str, str] | None = None
    ) -> pb.CompleteTrialResponse:
        return self._call(
            self.stub.CompleteTrial,
            pb.CompleteTrialRequest(lease_id=lease_id, metrics=metrics, info=info or {}),
        )

    def fail(self, lease_id: str, reason: str, retryable: bool) -> pb.FailTrialResponse:
        return self._call(
            self.stub.FailTrial,
            pb.FailTrialRequest(lease_id=lease_id, reason=reason, retryable=retryable),
        )

    def release(self, lease_id: str, reason: str = "") -> pb.ReleaseTrialResponse:
        return self._call(
            self.stub.ReleaseTrial, pb.ReleaseTrialRequest(lease_id=lease_id, reason=reason)
        )

    def upload_artifact(
        self, lease_id: str, path: str | Path, name: str = "", timeout_s: float | None = None
    ) -> str:
        """Uploads a file for the lease's trial (chunked, sha256 checked by the server);
        returns its artifact id. ``name`` defaults to the file's name. The default deadline
        allows 1 MB/s. Raises ClientError (see UploadArtifact in the proto for each status)."""
        from archsearch.server import _artifact_client

        path = Path(path)
        artifact = _artifact_client.upload(self, lease_id, path, name or path.name, timeout_s)
        return artifact.artifact_id

    def download_artifact(
        self,
        study_name: str,
        trial_number: int,
        name: str,
        dest_path: str | Path,
        artifact_id: str = "",
        timeout_s: float | None = None,
    ) -> pb.Artifact:
        """Downloads an artifact of a trial (by ``name``, or by ``artifact_id`` with an empty
        name) into ``dest_path``, which appears only once the bytes matched the sha256
        recorded at upload; returns its description. Raises ClientError (DATA_LOSS on a
        mismatch; see DownloadArtifact in the proto)."""
        from archsearch.server import _artifact_client

        request = pb.DownloadArtifactRequest(
            study_name=study_name, trial_number=trial_number, name=name, artifact_id=artifact_id
        )
        return _artifact_client.download(self, request, Path(dest_path), timeout_s)

    def list_artifacts(self, study_name: str, trial_number: int) -> list[pb.Artifact]:
        """The artifacts of a trial, sorted by name."""
        resp = self._call(
            self.stub.ListArtifacts,
            pb.ListArtifactsRequest(study_name=study_name, trial_number=trial_number),
        )
        return list(resp.artifacts)

    def find_artifact(self, study_name: str, name: str, limit: int = 0) -> pb.FindArtifactResponse:
        """The lowest-numbered trial of a study holding a whole upload named ``name``
        (``trial_number``) and that artifact; with ``limit`` > 0, ``holders`` lists up to that
        many holding trials, lowest-numbered first. Raises ClientError: NOT_FOUND for an
        unknown study or when no trial holds one; INVALID_ARGUMENT for an empty study, a bad
        name or a limit outside [0, 1000]."""
        return self._call(
            self.stub.FindArtifact,
            pb.FindArtifactRequest(study_name=study_name, name=name, limit=limit),
        )


def trainer_info_to_pb(info: TrainerInfo) -> pb.TrainerInfo:
    """The wire form of a trainer's metadata (the server reads it back and validates it)."""
    return pb.TrainerInfo(
        name=info.name,
        description=info.description,
        spaces=info.spaces,
        task_metrics=info.task_metrics,
        metrics=info.metrics,
        cost_metrics=info.cost_metrics,
        multi_task_metrics=info.multi_task_metrics,
        multi_task=info.multi_task,
        required_space_options=dict(info.required_space_options),
        labelled_metrics=info.labelled_metrics,
    )
