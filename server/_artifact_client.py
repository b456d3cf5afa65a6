"""The client side of the artifact streams (``WorkerClient.upload_artifact`` and
``download_artifact`` call these). Imports only grpc and the stubs, like ``client``.

Both directions check sha256: the uploader sends the file's hash in the header and the server
refuses bytes that do not match it; the downloader compares the bytes it received with the
hash recorded at upload, and the file appears at its destination only when they match (it is
written beside it first, then renamed). Retries are the caller's choice.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from archsearch.server._upload_guard import BUSY
from archsearch.v1 import archsearch_pb2 as pb

if TYPE_CHECKING:
    from archsearch.server.client import WorkerClient

#: Bytes per upload message, well below the 4 MiB default message limit.
CHUNK_BYTES = 1 << 20
#: Slowest transfer rate an upload's default deadline allows for (bytes per second).
MIN_RATE = 1_000_000
#: Default deadline of a download, whose size is known only once it starts.
DOWNLOAD_TIMEOUT_S = 3600.0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _holds(path: Path, artifact: pb.Artifact) -> bool:
    """Whether ``path`` is a file with the artifact's recorded size and sha256 (never for an
    artifact stored without them)."""
    try:
        if not artifact.sha256 or path.stat().st_size != artifact.size_bytes:
            return False
        return file_sha256(path) == artifact.sha256
    except OSError:  # unreadable (another user's, a folder): downloaded over, as before
        return False


def _error(e: grpc.RpcError, method: str) -> Exception:
    from archsearch.server.client import ClientError

    return ClientError(e.code(), e.details() or "", method)


#: How long an upload waits for a slot on a busy server before it gives up.
BUSY_PATIENCE_S = 300.0


def upload(
    client: WorkerClient, lease_id: str, path: Path, name: str, timeout_s: float | None
) -> pb.Artifact:
    """Streams ``path`` as artifact ``name`` of the lease's trial; returns what was stored."""
    size = path.stat().st_size
    header = pb.UploadArtifactHeader(
        lease_id=lease_id, name=name, size_bytes=size, sha256=file_sha256(path)
    )

    def requests() -> Iterator[pb.UploadArtifactRequest]:
        yield pb.UploadArtifactRequest(header=header)
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                yield pb.UploadArtifactRequest(chunk=chunk)

    timeout = timeout_s or max(client.timeout_s, 60.0 + size / MIN_RATE)
    # a server receiving as many uploads as it takes at once says so: wait and try again
    # (every caller, not only checkpoints: a fleet stopped at once shares its progress files)
    give_up, delay = time.monotonic() + BUSY_PATIENCE_S, 0.5
    while True:
        try:
            stub = client.stub.UploadArtifact
            resp = stub(requests(), timeout=timeout, metadata=client._metadata)
            return resp.artifact
        except grpc.RpcError as e:
            error = _error(e, "UploadArtifact")
            busy = e.code() == grpc.StatusCode.UNAVAILABLE and BUSY in (e.details() or "")
        if not busy or time.monotonic() + delay > give_up:
            raise error from None
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 10.0)


def download(
    client: WorkerClient,
    request: pb.DownloadArtifactRequest,
    dest: Path,
    timeout_s: float | None,
) -> pb.Artifact:
    """Streams one artifact into ``dest`` (replaced only once its sha256 matched). The bytes
    go to a partial file of this download's own (two workers sharing a checkpoint folder
    fetched one supernet at once into one ``.part`` file, and the second rename failed).

    A ``dest`` that already holds the artifact (its recorded size and sha256) is kept and the
    stream cancelled after its description: a worker asked for one supernet by a rank job and
    each picked student's job, or holding the one it trained, reads it from its disk."""
    from archsearch.server.client import ClientError

    part = dest.with_name(f"{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    digest = hashlib.sha256()
    received = 0
    artifact: Any = None
    stream = client.stub.DownloadArtifact(
        request, timeout=timeout_s or DOWNLOAD_TIMEOUT_S, metadata=client._metadata
    )
    try:
        with part.open("wb") as f:
            for msg in stream:
                if msg.WhichOneof("part") == "artifact":
                    artifact = msg.artifact
                    if _holds(dest, artifact):
                        stream.cancel()
                        return artifact
                    continue
                if artifact is None:
                    raise ClientError(
                        grpc.StatusCode.DATA_LOSS, "bytes before the artifact's description"
                    )
                digest.update(msg.chunk)
                received += len(msg.chunk)
                f.write(msg.chunk)
        if artifact is None:
            raise ClientError(grpc.StatusCode.DATA_LOSS, "the stream carried no artifact")
        if artifact.sha256 and (
            digest.hexdigest() != artifact.sha256 or received != artifact.size_bytes
        ):
            raise ClientError(
                grpc.StatusCode.DATA_LOSS,
                f"artifact {artifact.name!r}: {received} bytes with sha256 "
                f"{digest.hexdigest()} received, {artifact.size_bytes} with "
                f"{artifact.sha256} expected",
                "DownloadArtifact",
            )
        os.replace(part, dest)
    except grpc.RpcError as e:
        raise _error(e, "DownloadArtifact") from None
    finally:
        part.unlink(missing_ok=True)
    return artifact
