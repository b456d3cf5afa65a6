"""WorkerService's artifact RPCs: UploadArtifact (client stream), DownloadArtifact (server
stream), ListArtifacts and FindArtifact (which trials of a study hold an artifact), on top of
:class:`~archsearch.server._trial_artifacts.TrialArtifacts`.

Streams are registered with raw-bytes deserialisers like every other method
(``_rpc.method_handlers``): each message is parsed here, so an undecodable one gets
INVALID_ARGUMENT, and a domain error anywhere in a stream ends it with its precise status.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc

from archsearch.server._artifact_disk import as_status
from archsearch.server._errors import InvalidArgument
from archsearch.server._progress_cleanup import drop_progress_of_retries
from archsearch.server._rpc import _parse, abort_for, outage_of, rpc
from archsearch.server._studies import StudyManager
from archsearch.server._trial_artifacts import MAX_HOLDERS, ArtifactInfo, TrialArtifacts
from archsearch.server._upload_guard import UploadGuard
from archsearch.server._worker_servicer import WorkerServicer
from archsearch.v1 import archsearch_pb2 as pb

log = logging.getLogger("archsearch.server")


def _messages(self: Any, name: str, requests: Iterable[Any], context: Any) -> Iterator[Any]:
    for body in requests:
        yield _parse(self.SERVICE, name, body, context) if isinstance(body, bytes) else body


def stream_in_rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """``rpc`` for a client-streaming method: parses each message, maps errors to statuses."""

    @functools.wraps(method)
    def wrapper(self: Any, requests: Iterable[Any], context: grpc.ServicerContext) -> Any:
        try:
            return method(self, _messages(self, method.__name__, requests, context), context)
        except Exception as e:
            abort_for(method.__name__, e, context, outage_of(self))

    return wrapper


def stream_out_rpc(method: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """``rpc`` for a server-streaming method: an error ends the stream with its status."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            if isinstance(request, bytes):
                request = _parse(self.SERVICE, method.__name__, request, context)
            yield from method(self, request, context)
        except Exception as e:
            abort_for(method.__name__, e, context, outage_of(self))

    return wrapper


def artifact_to_pb(a: ArtifactInfo) -> pb.Artifact:
    return pb.Artifact(
        artifact_id=a.artifact_id,
        name=a.name,
        size_bytes=a.size_bytes,
        sha256=a.sha256,
        mimetype=a.mimetype,
    )


def _trial_number(n: int) -> int:
    if n < 0:
        raise InvalidArgument(f"trial_number must be >= 0, got {n}")
    return n


class ArtifactWorkerServicer(WorkerServicer):
    """WorkerService with its artifact RPCs (see the module docstring).

    Args:
        manager: The study manager.
        artifacts: Where artifacts are kept.
        uploads: The upload slots and idle watch (default: 16 at once, 60 s idle).
        **kw: The other :class:`WorkerServicer` settings.
    """

    def __init__(
        self,
        manager: StudyManager,
        artifacts: TrialArtifacts,
        uploads: UploadGuard | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(manager, **kw)
        self.artifacts = artifacts
        #: at most so many uploads at once, none silent for long (``_upload_guard``)
        self.uploads = uploads or UploadGuard()

    @rpc
    def CompleteTrial(
        self, request: pb.CompleteTrialRequest, context: grpc.ServicerContext
    ) -> pb.CompleteTrialResponse:
        """As :meth:`WorkerServicer.CompleteTrial`; then the progress files the candidate's
        earlier attempts uploaded are removed (``_progress_cleanup``): nothing reads them
        again, and each can be hundreds of MB."""
        complete = WorkerServicer.CompleteTrial.__wrapped__  # type: ignore[attr-defined]
        response: pb.CompleteTrialResponse = complete(self, request, context)
        try:
            drop_progress_of_retries(self.artifacts, request.lease_id)
        except Exception:  # the result is stored; a leftover file only costs disk
            log.exception("removing the progress files of %s failed", request.lease_id[:80])
        return response

    @stream_in_rpc
    def UploadArtifact(
        self, requests: Iterator[pb.UploadArtifactRequest], context: grpc.ServicerContext
    ) -> pb.UploadArtifactResponse:
        """The first message is the header; then chunks. Nothing is stored unless every byte
        arrived and matches the header's size and sha256 (``Upload.finish``); an artifact
        folder that cannot take them (full, not writable, gone) answers its precise status
        (``_artifact_disk.as_status``)."""
        self.uploads.enter()  # UNAVAILABLE when every upload slot is taken
        try:
            return self._upload(self.uploads.watched(requests, context))
        finally:
            self.uploads.leave()

    def _upload(self, requests: Iterator[pb.UploadArtifactRequest]) -> pb.UploadArtifactResponse:
        first = next(requests, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("the first UploadArtifactRequest must carry the header")
        h = first.header
        try:
            upload = self.artifacts.begin_upload(h.lease_id, h.name, h.size_bytes, h.sha256)
            try:
                for msg in requests:
                    if msg.WhichOneof("part") != "chunk":
                        raise InvalidArgument(
                            "only the first UploadArtifactRequest carries a header"
                        )
                    upload.write(msg.chunk)
            except BaseException:
                upload.discard()
                raise
            stored = upload.finish()
        except OSError as e:
            error = as_status(e, self.artifacts.folder)
            if error is None:
                raise
            raise error from e
        return pb.UploadArtifactResponse(artifact=artifact_to_pb(stored))

    @stream_out_rpc
    def DownloadArtifact(
        self, request: pb.DownloadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DownloadArtifactResponse]:
        info = self.artifacts.find(
            request.study_name,
            _trial_number(request.trial_number),
            request.name,
            request.artifact_id,
        )
        yield pb.DownloadArtifactResponse(artifact=artifact_to_pb(info))
        for chunk in self.artifacts.chunks(info):
            yield pb.DownloadArtifactResponse(chunk=chunk)

    @rpc
    def ListArtifacts(
        self, request: pb.ListArtifactsRequest, context: grpc.ServicerContext
    ) -> pb.ListArtifactsResponse:
        found = self.artifacts.of_trial(request.study_name, _trial_number(request.trial_number))
        return pb.ListArtifactsResponse(artifacts=[artifact_to_pb(a) for a in found])

    @rpc
    def FindArtifact(
        self, request: pb.FindArtifactRequest, context: grpc.ServicerContext
    ) -> pb.FindArtifactResponse:
        limit = request.limit
        if limit < 0:  # 0: the lowest holder only, as before limit existed
            raise InvalidArgument(f"limit must be in [0, {MAX_HOLDERS}], got {limit}")
        found = self.artifacts.holders(request.study_name, request.name, limit or 1)
        holders = [pb.ArtifactHolder(trial_number=n, artifact=artifact_to_pb(a)) for n, a in found]
        return pb.FindArtifactResponse(
            trial_number=found[0][0], artifact=holders[0].artifact, holders=holders
        )
