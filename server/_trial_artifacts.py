"""Files of trials (checkpoints, logs) kept in Optuna's artifact store, moved over gRPC.

A worker uploads a file for the trial it holds a live lease on; any worker downloads the
artifacts of any trial. The bytes are stored with ``optuna.artifacts.upload_artifact`` in an
Optuna artifact store (a ``FileSystemArtifactStore`` by default; any ``ArtifactStore``, such as
``Boto3ArtifactStore``, when ``ServerConfig.artifact_store`` is set in code), so
optuna-dashboard lists them on the trial's page. Optuna's artifact record holds no size or
hash, so the server adds one trial system attribute per upload (``SHA_ATTR_PREFIX`` + id) with
the size and sha256 it checked; downloads send them first and re-check the stored bytes.

An upload is received into a private temporary file, checked against its declared size and
sha256, and only then stored: a short, oversized or corrupted upload stores nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.artifacts import get_all_artifact_meta
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage

from archsearch.server._artifact_disk import (
    missing_note,
    prepare,
    restore_if_missing,
    store_file,
)
from archsearch.server._artifact_upload import DataLoss, Upload
from archsearch.server._errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from archsearch.server._storage import ARTIFACT_META_PREFIX, attrs_with_prefix
from archsearch.server._studies import StudyManager, parse_lease_id
from archsearch.spaces._checkpoint_names import ARTIFACT_NAME_RE

log = logging.getLogger("archsearch.server")

#: Default cap on one artifact (``archsearch serve --max-artifact-bytes``): 1 GiB.
DEFAULT_MAX_ARTIFACT_BYTES = 1 << 30
#: The most holders FindArtifact lists (its ``limit``).
MAX_HOLDERS = 1000
#: Bytes per streamed message (well below the 4 MiB default message limit).
CHUNK_BYTES = 1 << 20
#: Trial system attribute holding the checked size and sha256 of an uploaded artifact.
SHA_ATTR_PREFIX = "archsearch_artifact:"
NAME_RE = ARTIFACT_NAME_RE
#: lock stripes over (trial, artifact name) for uploads
_STRIPES = 64

SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class ArtifactInfo:
    """One artifact of a trial (``size_bytes``/``sha256`` are 0/"" when not recorded)."""

    artifact_id: str
    name: str
    size_bytes: int
    sha256: str
    mimetype: str


def default_artifact_dir(storage_url: str) -> str | None:
    """The artifact folder next to a SQLite file (``runs.db`` → ``runs-artifacts``); None for
    an in-memory database or a server database (PostgreSQL), which needs ``--artifact-dir``."""
    prefix = "sqlite:///"
    if not storage_url.startswith(prefix):
        return None
    db = storage_url[len(prefix) :].split("?", 1)[0]
    if not db or db == ":memory:":
        return None
    path = Path(db)
    return str(path.parent / f"{path.stem}-artifacts")


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidArgument(
            f"invalid artifact name {name[:60]!r}: 1-128 characters of [A-Za-z0-9._-], "
            "not starting with '.'"
        )
    return name


class TrialArtifacts:
    """Uploads, downloads and lists the artifacts of trials (see the module docstring).

    Args:
        manager: The study manager (leases and storage).
        store: An Optuna artifact store; None: no store configured, every call answers
            FAILED_PRECONDITION naming ``--artifact-dir``.
        max_bytes: Largest artifact accepted (``--max-artifact-bytes``).
        spool: Where uploads are received before they are checked and stored; None: the
            system's temporary folder.
        folder: The store's folder, named by errors (None: not a file-system store).
    """

    def __init__(
        self,
        manager: StudyManager,
        store: Any | None,
        max_bytes: int,
        spool: Path | None = None,
        folder: Path | None = None,
    ) -> None:
        self.manager = manager
        self.folder = folder
        self.rdb: RDBStorage = manager.rdb
        self.store = store
        self.max_bytes = max_bytes
        self.spool_dir = spool
        #: one lock per (trial, name) stripe: the name check and the write are one step, so
        #: concurrent uploads of one name store it once (the same bytes answer with it, other
        #: bytes get ALREADY_EXISTS), never twice or more
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]

    @classmethod
    def in_folder(cls, manager: StudyManager, folder: str | None, max_bytes: int) -> TrialArtifacts:
        """A file-system store at ``folder`` (created when missing, checked writable:
        ``_artifact_disk.prepare``), receiving uploads in its ``.uploads`` subfolder (same
        disk: no size surprise in /tmp); None: no store.

        Raises:
            FolderError: A folder the server cannot keep artifacts in.
        """
        if folder is None:
            return cls(manager, None, max_bytes)
        from optuna.artifacts import FileSystemArtifactStore

        root = prepare(folder)
        return cls(manager, FileSystemArtifactStore(str(root)), max_bytes, root / ".uploads", root)

    def _require_store(self) -> Any:
        if self.store is None:
            raise FailedPrecondition(
                "this server keeps no artifacts: its storage is not a SQLite file; "
                "restart it with `archsearch serve --artifact-dir DIR`"
            )
        return self.store

    # ------------------------------------------------------------------ upload

    def begin_upload(self, lease_id: str, name: str, size: int, sha256: str) -> Upload:
        """Checks the header and the lease (a live lease on the trial) and opens the upload."""
        self._require_store()
        if not lease_id:
            raise InvalidArgument("header.lease_id is required (from AcquireTrialResponse.lease)")
        check_name(name)
        if size < 0:
            raise InvalidArgument(f"header.size_bytes must be >= 0, got {size}")
        if size > self.max_bytes:
            raise ResourceExhausted(
                f"artifact {name!r} is {size} bytes, more than this server accepts "
                f"({self.max_bytes}); restart it with a larger --max-artifact-bytes"
            )
        if not SHA256_RE.match(sha256):
            raise InvalidArgument("header.sha256 must be 64 lower-case hex digits")
        self.manager.heartbeat(lease_id)  # NotFound / FailedPrecondition unless live
        return Upload(self, lease_id, name, size, sha256)

    def _store_upload(self, upload: Upload, path: Path) -> ArtifactInfo:
        # The lease must still be live when the bytes are stored (a long upload may outlast it).
        self.manager.heartbeat(upload.lease_id)
        _study_id, trial_id = parse_lease_id(upload.lease_id)
        with self._stripes[hash((trial_id, upload.name)) % _STRIPES]:
            return self._store_once(upload, path, trial_id)

    def _store_once(self, upload: Upload, path: Path, trial_id: int) -> ArtifactInfo:
        frozen = self.rdb.get_trial(trial_id)
        for a in self.infos(frozen):
            if a.name == upload.name:
                if a.sha256 == upload.sha256:  # a retried upload of the same bytes
                    restore_if_missing(self._require_store(), a.artifact_id, path)
                    return a
                raise AlreadyExists(
                    f"trial {frozen.number} already has an artifact {upload.name!r} with other "
                    "contents; upload under another name"
                )
        try:
            artifact_id = store_file(self._require_store(), self.rdb, frozen, path)
            record = {"size": upload.size, "sha256": upload.sha256}
            self.rdb.set_trial_system_attr(
                trial_id, SHA_ATTR_PREFIX + artifact_id, json.dumps(record)
            )
        except UpdateFinishedTrialError as e:
            raise FailedPrecondition(
                f"trial {frozen.number} finished during the upload; nothing stored"
            ) from e
        log.info(
            "artifact %s (%d bytes) stored for trial %d", upload.name, upload.size, frozen.number
        )
        mimetype = mimetypes.guess_type(upload.name)[0] or "application/octet-stream"
        return ArtifactInfo(artifact_id, upload.name, upload.size, upload.sha256, mimetype)

    # ------------------------------------------------------------------ read

    def _storage_trial_id(self, study_name: str, number: int) -> int:
        if not study_name:
            raise InvalidArgument("study_name is required")
        try:
            study_id = self.rdb.get_study_id_from_name(study_name)
        except KeyError:
            raise NotFound(f"unknown study {study_name[:100]!r}") from None
        try:
            return self.rdb.get_trial_id_from_study_id_trial_number(study_id, number)
        except KeyError:
            raise NotFound(f"study {study_name!r} has no trial {number}") from None

    def remove_all(self, frozen: Any) -> tuple[int, int]:
        """Removes trial ``frozen``'s artifact files (its study is deleted); (how many, how
        many were not there: a wrong folder leaves the real ones, ``delete`` says so)."""
        if self.store is None:
            return 0, 0
        removed = missing = 0
        for meta in get_all_artifact_meta(frozen, storage=self.rdb):
            try:
                self.store.remove(meta.artifact_id)
                removed += 1
            except ArtifactNotFound:
                missing += 1
        return removed, missing

    def infos(self, frozen: Any) -> list[ArtifactInfo]:
        out = []
        for meta in get_all_artifact_meta(frozen, storage=self.rdb):
            raw = frozen.system_attrs.get(SHA_ATTR_PREFIX + meta.artifact_id)
            record = json.loads(raw) if isinstance(raw, str) else {}
            out.append(
                ArtifactInfo(
                    meta.artifact_id,
                    meta.filename,
                    int(record.get("size", 0)),
                    str(record.get("sha256", "")),
                    meta.mimetype,
                )
            )
        return sorted(out, key=lambda a: (a.name, a.artifact_id))

    def of_trial(self, study_name: str, number: int) -> list[ArtifactInfo]:
        """The artifacts of trial ``number`` of ``study_name``."""
        return self.infos(self.rdb.get_trial(self._storage_trial_id(study_name, number)))

    def find(self, study_name: str, number: int, name: str, artifact_id: str) -> ArtifactInfo:
        """One artifact of a trial, by name or by id (exactly one of the two)."""
        if bool(name) == bool(artifact_id):
            raise InvalidArgument("give exactly one of name and artifact_id")
        if name:  # as FindArtifact: a name no upload can have is the caller's mistake
            check_name(name)
        for a in self.of_trial(study_name, number):
            if (name and a.name == name) or (artifact_id and a.artifact_id == artifact_id):
                return a
        which = f"named {name[:60]!r}" if name else f"with id {artifact_id[:60]!r}"
        raise NotFound(f"trial {number} of {study_name!r} has no artifact {which}")

    def holder(self, study_name: str, name: str) -> tuple[int, ArtifactInfo]:
        """The lowest-numbered trial of ``study_name`` (in any state) holding a whole upload
        named ``name`` (its size and sha256 recorded: the bytes were checked and stored), and
        that artifact. One query over the study's artifact records, no trial loaded.

        Raises:
            InvalidArgument: Empty ``study_name``, or a name no upload could have.
            NotFound: Unknown study, or no trial holds such an artifact.
        """
        return self.holders(study_name, name, 1)[0]

    def holders(self, study_name: str, name: str, limit: int) -> list[tuple[int, ArtifactInfo]]:
        """Up to ``limit`` trials of ``study_name`` holding a whole upload named ``name`` (see
        :meth:`holder`), lowest-numbered first, one per trial (its first such artifact).

        Raises:
            InvalidArgument: Empty ``study_name``, a name no upload could have, or ``limit``
                outside [1, :data:`MAX_HOLDERS`].
            NotFound: Unknown study, or no trial holds such an artifact.
        """
        if not study_name:
            raise InvalidArgument("study_name is required")
        check_name(name)
        if not 1 <= limit <= MAX_HOLDERS:
            raise InvalidArgument(f"limit must be in [0, {MAX_HOLDERS}], got {limit}")
        try:
            study_id = self.rdb.get_study_id_from_name(study_name)
        except KeyError:
            raise NotFound(f"unknown study {study_name[:100]!r}") from None
        metas: list[tuple[int, str, dict[str, Any]]] = []  # (trial number, id, Optuna's meta)
        records: dict[str, dict[str, Any]] = {}  # artifact id -> the checked size and sha256
        for number, key, raw in attrs_with_prefix(
            self.rdb, study_id, (ARTIFACT_META_PREFIX, SHA_ATTR_PREFIX)
        ):
            try:
                value = json.loads(raw)
                if isinstance(value, str):  # ours are stored as a JSON string of JSON
                    value = json.loads(value)
            except ValueError:
                continue
            if not isinstance(value, dict):
                continue
            if key.startswith(SHA_ATTR_PREFIX):
                records[key[len(SHA_ATTR_PREFIX) :]] = value
            else:
                metas.append((number, key[len(ARTIFACT_META_PREFIX) :], value))
        found: dict[int, ArtifactInfo] = {}
        for number, artifact_id, meta in metas:  # by trial number
            record = records.get(artifact_id)
            if number in found or not (meta.get("filename") == name and record):
                continue
            if record.get("sha256"):
                mimetype = str(meta.get("mimetype") or "application/octet-stream")
                size, sha = int(record.get("size", 0)), str(record["sha256"])
                found[number] = ArtifactInfo(artifact_id, name, size, sha, mimetype)
                if len(found) == limit:
                    break
        if not found:
            raise NotFound(f"no trial of {study_name[:100]!r} has an artifact named {name!r}")
        return list(found.items())

    def chunks(self, info: ArtifactInfo) -> Iterator[bytes]:
        """The stored bytes of ``info``, ``CHUNK_BYTES`` at a time; DataLoss at the end when
        they do not match the recorded size and sha256."""
        try:
            reader = self._require_store().open_reader(info.artifact_id)
        except ArtifactNotFound:
            raise DataLoss(
                f"artifact {info.name!r} ({info.artifact_id}) is listed but its bytes are "
                f"{missing_note(self.folder)}"
            ) from None
        digest = hashlib.sha256()
        size = 0
        with reader:
            while chunk := reader.read(CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
                yield chunk
        if info.sha256 and (digest.hexdigest() != info.sha256 or size != info.size_bytes):
            raise DataLoss(
                f"artifact {info.name!r} ({info.artifact_id}): the stored bytes no longer match "
                "the sha256 recorded at upload"
            )
