"""The Python client: ``SearchClient`` for people and scripts, ``WorkerClient`` for workers.

Imports only grpc and the generated stubs, so a worker machine needs none of the search stack.
Every call carries a deadline; errors surface as :class:`ClientError` with the gRPC status code
and the server's message, which names the problem and the fix.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from archsearch.server import _client_args as args
from archsearch.server._channel import TRANSIENT as TRANSIENT
from archsearch.server._channel import ClientError as ClientError
from archsearch.server._channel import call_hint
from archsearch.server._channel import check_target as check_target
from archsearch.server._channel import connection_cause as connection_cause
from archsearch.server._channel import make_channel as make_channel
from archsearch.server._channel import resolve_token as resolve_token
from archsearch.v1 import archsearch_pb2 as pb
from archsearch.v1 import archsearch_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from archsearch.spaces import TrainerInfo

DEFAULT_TIMEOUT_S = 30.0


def _poll_deadline(timeout_s: float) -> float:
    """Call deadline of a long poll: the poll itself plus a margin (robust to bad input, which
    the server answers with INVALID_ARGUMENT rather than the client timing out)."""
    return (min(timeout_s, 3600.0) if math.isfinite(timeout_s) else 0.0) + 10.0


def _acquire_request(
    worker_id: str,
    capabilities: pb.WorkerCapabilities,
    timeout_s: float,
    study_name: str,
    skip_studies: Iterable[str] = (),
) -> pb.AcquireTrialRequest:
    return pb.AcquireTrialRequest(
        worker_id=worker_id,
        capabilities=capabilities,
        study_name=study_name,
        timeout_s=timeout_s,
        skip_studies=sorted(skip_studies),
    )


class _Base:
    #: Whether a failed call's ClientError carries :func:`call_hint` (the people's client).
    hints = False

    def __init__(
        self,
        target: str,
        token: str | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        channel: grpc.Channel | None = None,
        tls_ca: str | None = None,
        tls: bool = False,
    ) -> None:
        self.target = args.text(target, "target (HOST:PORT)")
        # None: no deadline on calls (as grpc takes it)
        self.timeout_s = None if timeout_s is None else args.seconds(timeout_s, "timeout_s")
        self._token = resolve_token(token)
        self._channel = channel or make_channel(target, tls_ca=tls_ca, tls=tls)
        self._metadata = (("authorization", f"Bearer {self._token}"),) if self._token else ()
        self.tls = bool(tls or tls_ca)
        self._last_cause: str | None = None
        self._closed = False

    def _call(self, stub_method: Any, request: Any, timeout: float | None = None) -> Any:
        if self._closed:  # grpc says "ValueError: Cannot invoke RPC on closed channel!"
            raise RuntimeError(
                f"this client of {self.target} is closed (its `with` block ended, or close() "
                "was called); make a new one"
            )
        seconds = timeout or self.timeout_s
        try:
            return stub_method(request, timeout=seconds, metadata=self._metadata)
        except grpc.RpcError as e:
            name = getattr(stub_method, "_method", b"")
            method = name.decode().rsplit("/", 1)[-1] if isinstance(name, bytes) else ""
            code, details = e.code(), e.details() or ""
            hint = call_hint(code, details, self.target, self.tls, seconds) if self.hints else ""
            raise ClientError(code, details, method, hint) from None

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
        self._closed = True
        self._channel.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SearchClient(_Base):
    """Launch, inspect and stop searches. Needs an admin token when the server has tokens.

    A refused or failed call raises :class:`ClientError` (``e.code``, a ``grpc.StatusCode``;
    ``e.details``, the server's message naming the problem and the fix; ``e.hint``, this
    client's words when no server answered); a wrong argument type or value, ``TypeError`` or
    ``ValueError`` before any call."""

    hints = True

    def __init__(self, target: str, **kw: Any) -> None:
        super().__init__(target, **kw)
        self._stub = pb_grpc.SearchServiceStub(self._channel)

    def launch(self, spec: dict[str, Any] | str) -> pb.Study:
        """Launches the study ``spec`` describes (a dict, or its JSON text; numpy numbers
        become plain ones) and returns it as stored."""
        text = args.spec_text(spec)
        return self._call(self._stub.LaunchSearch, pb.LaunchSearchRequest(spec_json=text)).study

    def get_study(self, name: str) -> pb.Study:
        """Study ``name``: its state, counts, objectives, spec and best trials."""
        request = pb.GetStudyRequest(name=args.text(name))
        return self._call(self._stub.GetStudy, request).study

    def wait(self, name: str, timeout_s: float | None = None, poll_s: float = 2.0) -> pb.Study:
        """Blocks until study ``name`` is no longer running (completed or stopped), polling
        ``GetStudy`` every ``poll_s`` seconds, and returns it (its best trials included).
        A server that stops answering meanwhile (a restart) is waited for, within
        ``timeout_s``; each call is cut to the time left.

        Raises:
            TimeoutError: still running after ``timeout_s`` seconds (or the server has not
                answered since: the message says which).
            ClientError: the server refused (NOT_FOUND: no such study, or it was deleted
                while waited for).
        """
        name = args.text(name)
        if timeout_s is not None:
            timeout_s = args.seconds(timeout_s, "timeout_s", allow_zero=True)
        poll_s = args.seconds(poll_s, "poll_s")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        silent: ClientError | None = None  # the last call's error, while the server is away
        seen = False  # whether the server has answered with the study
        while True:
            left = math.inf if deadline is None else deadline - time.monotonic()
            # each call within the time left: a hung server must not hold it longer
            call_s = max(0.05, min(self.timeout_s or 30.0, left))
            try:
                resp = self._call(
                    self._stub.GetStudy, pb.GetStudyRequest(name=name), timeout=call_s
                )
                silent, seen = None, True
                if resp.study.state != pb.STUDY_RUNNING:
                    return resp.study
            except ClientError as e:
                if e.code == grpc.StatusCode.NOT_FOUND and seen:
                    raise ClientError(
                        e.code, f"study {name} was deleted while it was waited for", "GetStudy"
                    ) from None
                if not e.transient:
                    raise
                # a call cut to the last moments of the wait: its deadline passing says
                # nothing of the server (a healthy one answers in milliseconds)
                if not (e.code == grpc.StatusCode.DEADLINE_EXCEEDED and call_s < 0.5):
                    silent = e
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(self._wait_timeout(name, timeout_s or 0.0, seen, silent))
            left = math.inf if deadline is None else deadline - time.monotonic()
            time.sleep(max(0.0, min(poll_s, left)))

    def _wait_timeout(
        self, name: str, timeout_s: float, seen: bool, silent: ClientError | None
    ) -> str:
        """What :meth:`wait` says when its time is up."""
        if not seen:
            why = f" ({silent.code.name}: {silent.hint or silent.details})" if silent else ""
            where = f"the server at {self.target}"
            return f"study {name}: no answer from {where} in {timeout_s:g}s{why}"
        why = (
            f"; the server at {self.target} has not answered since ({silent.code.name})"
            if silent is not None
            else ""
        )
        return f"study {name} is still running after {timeout_s:g}s{why}"

    def list_studies(self, unserved: dict[str, str] | None = None) -> list[pb.Study]:
        """Every study the server serves (their ``best_trials`` left empty: ``get_study``
        has them); ``unserved``, when given, gets the stored studies it cannot serve, by name,
        with why (an older server names none)."""
        out: list[pb.Study] = []
        token = ""
        while True:
            page = self._call(self._stub.ListStudies, pb.ListStudiesRequest(page_token=token))
            out.extend(page.studies)
            if unserved is not None:
                unserved.update((u.name, u.reason) for u in page.unserved)
            # an older server sends one answer with no token; a token that does not move on
            # would page for ever
            if not page.next_page_token or page.next_page_token == token:
                return out
            token = page.next_page_token

    def iter_trials(
        self, study_name: str, page_size: int = 200, states: Iterable[Any] = ()
    ) -> Iterator[pb.Trial]:
        """Every trial of a study, fetched page by page, in number order.

        Args:
            states: Only trials in these states: ``pb.TrialState`` values (``pb.COMPLETE``),
                their names (``"COMPLETE"``) or Optuna's ``TrialState`` members, read by name
                (Optuna numbers them from 0, ``pb.TrialState`` from 1). Empty: every state.
        """
        study_name = args.text(study_name)
        page_size = args.whole(page_size, "page_size", 1)
        wanted = args.trial_states(states)
        token = ""
        while True:
            req = pb.ListTrialsRequest(
                study_name=study_name, page_size=page_size, page_token=token, states=wanted
            )
            resp = self._call(self._stub.ListTrials, req)
            yield from resp.trials
            token = resp.next_page_token
            if not token:
                return

    def list_trials(self, study_name: str, **kw: Any) -> list[pb.Trial]:
        """:meth:`iter_trials` as a list (the same keywords)."""
        return list(self.iter_trials(study_name, **kw))

    def stop(self, name: str, cancel_running: bool = False) -> pb.Study:
        """Stops handing out the study's trials; ``cancel_running`` ends its running ones too
        (their workers stop at their next heartbeat; the trials end FAIL, not retried)."""
        cancel = args.flag(cancel_running, "cancel_running")
        request = pb.StopSearchRequest(name=args.text(name), cancel_running=cancel)
        return self._call(self._stub.StopSearch, request).study

    def delete(self, name: str) -> pb.DeleteSearchResponse:
        """Deletes a stopped or completed study for good (its trials and uploaded files)."""
        request = pb.DeleteSearchRequest(name=args.text(name))
        return self._call(self._stub.DeleteSearch, request)

    def resume(self, name: str, n_trials: int = 0) -> pb.ResumeSearchResponse:
        """Runs a stopped or completed study again, or changes a running study's budget:
        ``n_trials`` is the new number of distinct candidates (0 keeps it). The response has
        the study and how many never-run candidates of its stop were queued again."""
        request = pb.ResumeSearchRequest(
            name=args.text(name), n_trials=args.whole(n_trials, "n_trials")
        )
        return self._call(self._stub.ResumeSearch, request)


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
        skip_studies: Iterable[str] = (),
    ) -> grpc.Future:
        """Starts a long poll; the caller waits on (or cancels) the returned future.
        ``skip_studies``: studies this worker cannot train now (it lacks their data)."""
        req = _acquire_request(worker_id, capabilities, timeout_s, study_name, skip_studies)
        return self.stub.AcquireTrial.future(
            req, timeout=_poll_deadline(timeout_s), metadata=self._metadata
        )

    def acquire(
        self,
        worker_id: str,
        capabilities: pb.WorkerCapabilities,
        timeout_s: float = 0.0,
        study_name: str = "",
        skip_studies: Iterable[str] = (),
    ) -> pb.AcquireTrialResponse:
        req = _acquire_request(worker_id, capabilities, timeout_s, study_name, skip_studies)
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
        data_fields=info.data_fields,
    )
