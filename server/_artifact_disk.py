"""The artifact folder on disk (``serve --artifact-dir``, or the folder next to a SQLite file):
checked at start, never made again while serving, and its OS errors said as statuses.

At start the folder must be a folder the server can write (a regular file there, a read-only
file system or a folder of another user gave a Python traceback, or went unnoticed until the
first upload), and when the storage lists artifacts of which the folder holds none, the log
says so: a wrong ``--artifact-dir`` or an unmounted volume otherwise showed up only as
DATA_LOSS on each download.

While serving, the folder is not made again when it vanished (an upload made a fresh empty one,
and the server went on beside the real one); an upload that cannot be stored answers a precise
status naming the folder and the fix (a full disk RESOURCE_EXHAUSTED, a folder it may not write
FAILED_PRECONDITION, a vanished one UNAVAILABLE: it may come back), never INTERNAL, and leaves
nothing: neither part of the file in the store nor Optuna's record of it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy
from optuna.artifacts import upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import RDBStorage
from optuna.storages._rdb import models

from archsearch.server._errors import (
    FailedPrecondition,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from archsearch.server._storage import delete_trial_system_attrs

log = logging.getLogger("archsearch.server")

#: Prefix of Optuna's artifact records (its ``optuna.artifacts._upload``).
ARTIFACT_RECORD_PREFIX = "artifacts:"
#: How many of the storage's artifact records the start-up check looks for in the folder.
SAMPLE = 20

_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


class FolderError(ValueError):
    """A folder the server cannot keep artifacts in (the app says it as a config error)."""


def prepare(folder: str) -> Path:
    """The artifact folder ``folder``, made when missing and checked writable (a probe file in
    its ``.uploads``, where uploads are received).

    Raises:
        FolderError: Not a folder, or one the server cannot make or write; names the fix.
    """
    root = Path(folder).expanduser().resolve()
    where = f"artifact folder {root} (--artifact-dir)"
    if root.exists() and not root.is_dir():
        raise FolderError(
            f"{where} is not a folder (a file is there); pass a folder to --artifact-dir, "
            "or move the file away"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        spool = root / ".uploads"
        spool.mkdir(exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix="probe-", dir=spool)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise FolderError(f"cannot write the {where}: {e.strerror}; {_fix(e, root)}") from None
    return root


def _fix(e: OSError, root: Path) -> str:
    if e.errno in _FULL:
        return f"free space on the disk of {root} (or raise its quota)"
    if e.errno == errno.EROFS:
        return "pass an --artifact-dir on a writable file system"
    if e.errno in _DENIED:
        return f"make {root} writable by this server's user, or pass another --artifact-dir"
    if e.errno == errno.ENOTDIR:
        return "a part of its path is a file: pass another --artifact-dir"
    return "pass another --artifact-dir"


def as_status(e: OSError, root: Path | None) -> ServiceError | None:
    """The status of an upload that failed writing the artifact folder ``root`` with ``e``
    (logged as one line); None for an error that is not the folder's."""
    where = f"the artifact folder {root}" if root is not None else "the artifact store"
    error: ServiceError | None = None
    if e.errno in _FULL:
        error = ResourceExhausted(
            f"{where} is full ({e.strerror}); nothing stored: free space on its disk (or "
            "raise its quota), then upload again"
        )
    elif e.errno in _DENIED:
        error = FailedPrecondition(
            f"{where} cannot be written ({e.strerror}); nothing stored: make it writable by "
            "the server, then upload again"
        )
    elif root is not None and not root.is_dir():
        error = Unavailable(
            f"{where} is gone (moved away, or its volume unmounted?); nothing stored: put it "
            "back, or restart the server with the right --artifact-dir"
        )
    if error is not None:
        log.warning("an upload could not be stored: %s", error)
    return error


def write_whole(store: Any, artifact_id: str, body: BinaryIO) -> None:
    """``store.write``, removing what it wrote when it fails (a full disk left part a file)."""
    try:
        store.write(artifact_id, body)
    except BaseException:
        with contextlib.suppress(Exception):
            store.remove(artifact_id)
        raise


class _WholeWrites:
    """An artifact store whose failed writes leave nothing; remembers the id written."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.artifact_id: str | None = None

    def write(self, artifact_id: str, body: BinaryIO) -> None:
        self.artifact_id = artifact_id
        write_whole(self.store, artifact_id, body)

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.store.open_reader(artifact_id)  # type: ignore[no-any-return]

    def remove(self, artifact_id: str) -> None:
        self.store.remove(artifact_id)


def store_file(store: Any, rdb: RDBStorage, frozen: Any, path: Path) -> str:
    """``upload_artifact`` of ``path`` for trial ``frozen``; when the bytes cannot be stored,
    Optuna's record (written before the bytes) goes too, so the trial lists no artifact
    without bytes (a retry of the upload then got ALREADY_EXISTS)."""
    whole = _WholeWrites(store)
    try:
        return upload_artifact(
            artifact_store=whole, file_path=str(path), study_or_trial=frozen, storage=rdb
        )
    except BaseException:
        if whole.artifact_id is not None:
            with contextlib.suppress(Exception):
                delete_trial_system_attrs(
                    rdb, frozen._trial_id, [ARTIFACT_RECORD_PREFIX + whole.artifact_id]
                )
        raise


def restore_if_missing(store: Any, artifact_id: str, path: Path) -> bool:
    """Writes ``path`` as ``artifact_id`` when the store lacks it (a retried upload of the same
    bytes restores a file that went missing); whether it did."""
    try:
        store.open_reader(artifact_id).close()
        return False
    except ArtifactNotFound:
        pass
    with path.open("rb") as body:
        write_whole(store, artifact_id, body)
    log.warning("artifact %s was missing from the artifact store: restored by its upload", path)
    return True


def missing_note(root: Path | None) -> str:
    """What a download of an artifact whose bytes are missing says about where they were."""
    if root is None:
        return "missing from the artifact store"
    return (
        f"missing from the artifact folder {root} (wrong --artifact-dir? restart the server "
        "with the folder that holds them; or the file was removed)"
    )


def warn_if_wrong_folder(rdb: RDBStorage, root: Path) -> bool:
    """Logs a warning when the storage lists artifacts and ``root`` holds none of the last
    :data:`SAMPLE` of them (a wrong ``--artifact-dir``, an unmounted volume); whether it did.
    The server starts all the same: the folder may be mounted later."""
    attrs = models.TrialSystemAttributeModel.__table__
    is_record = attrs.c.key.like(ARTIFACT_RECORD_PREFIX + "%")
    with rdb.engine.connect() as conn:
        n = conn.execute(sqlalchemy.select(sqlalchemy.func.count()).where(is_record)).scalar()
        keys = conn.execute(
            sqlalchemy.select(attrs.c.key)
            .where(is_record)
            .order_by(attrs.c.trial_system_attribute_id.desc())
            .limit(SAMPLE)
        ).scalars()
        ids = [k[len(ARTIFACT_RECORD_PREFIX) :] for k in keys]
    if not ids or any((root / i).is_file() for i in ids if "/" not in i):
        return False
    log.warning(
        "wrong --artifact-dir? the artifact folder %s holds none of the %d artifacts the "
        "storage lists (an unmounted volume?); downloads of them will fail until the server "
        "runs with the folder that holds them",
        root,
        n or 0,
    )
    return True
