"""One upload in progress (``UploadArtifact``): chunks go to a private temporary file, checked
against the header's size and sha256 before anything is stored (``_trial_artifacts``)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from archsearch.server._errors import InvalidArgument, ServiceError

if TYPE_CHECKING:
    from archsearch.server._trial_artifacts import ArtifactInfo, TrialArtifacts


class DataLoss(ServiceError):
    """The bytes do not match their declared (or recorded) size or sha256."""

    code = "DATA_LOSS"


class Upload:
    """One upload in progress: chunks go to a private temporary file (see the module
    docstring); :meth:`finish` checks and stores it, :meth:`discard` drops it."""

    def __init__(self, owner: TrialArtifacts, lease_id: str, name: str, size: int, sha: str):
        self._owner = owner
        self.lease_id, self.name, self.size, self.sha256 = lease_id, name, size, sha
        if owner.spool_dir is not None:  # made again if removed, never the folder above it
            owner.spool_dir.mkdir(exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix="upload-", dir=owner.spool_dir))
        self._path = self._dir / name  # upload_artifact names the artifact after the file
        self._file: BinaryIO | None = self._path.open("wb")
        self._hash = hashlib.sha256()
        self.received = 0

    def write(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.size:
            raise InvalidArgument(
                f"artifact {self.name!r}: more than the declared {self.size} bytes received"
            )
        self._hash.update(chunk)
        assert self._file is not None
        self._file.write(chunk)

    def finish(self) -> ArtifactInfo:
        """Checks the bytes against the header and stores them; returns the artifact."""
        try:
            assert self._file is not None
            self._file.close()
            self._file = None
            if self.received != self.size:
                raise DataLoss(
                    f"artifact {self.name!r}: {self.received} bytes received, "
                    f"{self.size} declared; nothing stored"
                )
            if self._hash.hexdigest() != self.sha256:
                raise DataLoss(
                    f"artifact {self.name!r}: sha256 of the bytes received is "
                    f"{self._hash.hexdigest()}, not the declared {self.sha256}; nothing stored"
                )
            return self._owner._store_upload(self, self._path)
        finally:
            self.discard()

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        shutil.rmtree(self._dir, ignore_errors=True)
