"""Kept checkpoints through the server, so that neither weight transfer nor the user who
wants the model needs a shared file system.

A trial that keeps its checkpoint (``recipe.keep_checkpoint``) on a worker connected to a
server uploads every file of the checkpoint folder as an artifact of its trial, named as
:mod:`archsearch.spaces._checkpoint_names` says (``checkpoint-<file>``), and lists them in its
``info`` (``checkpoint_artifacts``); ``archsearch fetch STUDY N`` downloads them. A later
FlexiBERT candidate's ``recipe.transfer_from`` may name that trial instead of a folder:
``"trial:N"`` (trial N of the same study) or ``"trial:STUDY:N"``; the worker downloads the two
files weight transfer reads (sha256 checked; under their bare names when an older worker
uploaded them so) into ``<checkpoint root>/transfers/<study>/<N>`` and transfers from there. A
plain path keeps its old meaning: a checkpoint folder on this worker.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path

from archsearch.spaces._checkpoint_names import checkpoint_artifact, parse_trial_ref
from archsearch.worker._backoff import Backoff
from archsearch.worker._flexibert_config import CONFIG_FILE, WEIGHTS_FILE
from archsearch.worker._plan import TrainingPlan
from archsearch.worker._trainer import CandidateError, TrainContext

log = logging.getLogger("archsearch.worker")

#: The files weight transfer reads.
CHECKPOINT_FILES = (WEIGHTS_FILE, CONFIG_FILE)
#: How long a checkpoint's upload waits for an unreachable server before the trial's result is
#: reported without it (the result itself waits as long as it takes).
UPLOAD_PATIENCE_S = 600.0
#: ``info`` key listing the uploaded checkpoint artifacts (what the loops look for).
INFO_KEY = "checkpoint_artifacts"


def upload_checkpoint(
    context: TrainContext, folder: str | Path, task: str | None = None
) -> dict[str, str]:
    """Uploads every file of a kept checkpoint folder (of ``task`` in a multi-task trial) as
    an artifact of this trial; returns the ``info`` to add: ``checkpoint_artifacts`` (the
    names), or ``checkpoint_upload_error`` when the server refused (the trial's result stands;
    only the download and later transfers from it are lost); empty without a server."""
    if not context.has_server:
        return {}
    from archsearch.server.client import ClientError

    names = []
    try:
        for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
            name = checkpoint_artifact(path.name, task)
            if name is None:
                log.warning("checkpoint file %s not uploaded: no artifact name fits it", path)
                continue
            upload_patiently(context, path, name)
            names.append(name)
    except (ClientError, OSError) as e:
        log.warning("could not upload the checkpoint in %s: %s", folder, e)
        return {"checkpoint_upload_error": str(e)[:500]}
    return {INFO_KEY: " ".join(names)}


def upload_patiently(
    context: TrainContext, path: Path, name: str, patience_s: float = UPLOAD_PATIENCE_S
) -> None:
    """``context.upload(path, name)``, tried again while the server is unreachable (a restart,
    a network blip), as the worker retries its report of the result: the trial's lease is kept
    alive by its heartbeats meanwhile, and a retried upload of the same bytes is accepted.

    Raises:
        ClientError: The server refused (anything but unreachable), the trial must end
            (``context.stop_requested()``: the lease was lost, or the worker is stopping), or it
            stayed unreachable for ``patience_s`` seconds.
    """
    from archsearch.server.client import ClientError

    backoff = Backoff(cap=10.0)
    give_up = time.monotonic() + patience_s
    while True:
        try:
            context.upload(path, name)
            return
        except ClientError as e:
            left = give_up - time.monotonic()
            # RESOURCE_EXHAUSTED is transient elsewhere; here it is a file over the size limit
            unreachable = e.code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
            if not unreachable or left <= 0 or context.stop_requested():
                raise
            delay = min(backoff.next(), left)
            log.warning(
                "upload of %s: server unreachable (%s); retrying in %.1fs", name, e.code.name, delay
            )
            time.sleep(delay)


def upload_files(
    context: TrainContext, folder: str | Path, files: tuple[str, ...]
) -> dict[str, str]:
    """Uploads ``files`` of ``folder`` under their own names as artifacts of this trial; the
    ``info`` to add (as :func:`upload_checkpoint`'s)."""
    if not context.has_server:
        return {}
    from archsearch.server.client import ClientError

    try:
        for name in files:
            upload_patiently(context, Path(folder) / name, name)
    except (ClientError, OSError) as e:
        log.warning("could not upload the files in %s: %s", folder, e)
        return {"checkpoint_upload_error": str(e)[:500]}
    return {INFO_KEY: " ".join(files)}


def fetch_transfer_source(context: TrainContext, ref: str, root: Path) -> str:
    """The local checkpoint folder of ``recipe.transfer_from``: ``ref`` itself for a path;
    for a trial reference, the folder its artifacts were downloaded into.

    Raises:
        CandidateError: A malformed reference, no server to download from, or an unknown
            study, trial or artifact (the trial kept no checkpoint).
    """
    return fetch_trial_files(
        context,
        ref,
        root / "transfers",
        CHECKPOINT_FILES,
        aliases={f: (checkpoint_artifact(f) or f, f) for f in CHECKPOINT_FILES},
        field="recipe.transfer_from",
        missing_hint="the trial must keep its checkpoint: recipe.keep_checkpoint on a "
        "flexibert candidate",
    )


def fetch_trial_files(
    context: TrainContext,
    ref: str,
    root: Path,
    files: tuple[str, ...],
    *,
    field: str,
    missing_hint: str,
    aliases: Mapping[str, tuple[str, ...]] | None = None,
) -> str:
    """The local folder of a reference to another trial's uploaded ``files``: ``ref`` itself
    for a path; for ``trial:N`` / ``trial:STUDY:N``, ``root/<study>/<N>`` with the files
    downloaded into it.

    Args:
        field: The spec field ``ref`` came from, named in errors.
        missing_hint: What to do when the trial lacks the files.
        aliases: The artifact names to try, in order, for a file (default: its own name).

    Raises:
        CandidateError: A malformed reference, no server to download from, or an unknown
            study, trial or artifact.
        ClientError: The server is unreachable or the bytes were corrupted (retry elsewhere).
    """
    try:
        parsed = parse_trial_ref(ref)
    except ValueError as e:
        raise CandidateError(str(e).replace("recipe.transfer_from", field)) from e
    if parsed is None:
        return ref
    if not context.has_server:
        raise CandidateError(
            f"{field} {ref!r} names a trial: only a worker connected to a server can fetch "
            "its files; give a local folder instead"
        )
    from archsearch.server.client import ClientError

    study, number = parsed
    study = study or context.study_name
    dest = reference_folder(root, study, number)
    dest.mkdir(parents=True, exist_ok=True)
    for file in files:
        names = (aliases or {}).get(file, (file,))
        for i, name in enumerate(names):
            try:
                context.download(number, name, dest / file, study=study)
                break
            except ClientError as e:
                if e.code.name not in ("NOT_FOUND", "INVALID_ARGUMENT"):
                    raise
                if i == len(names) - 1:
                    raise CandidateError(f"{field} {ref!r}: {e.details} ({missing_hint})") from e
    return str(dest)


def reference_folder(root: Path, study: str, number: int) -> Path:
    """Where :func:`fetch_trial_files` puts trial ``number`` of ``study``'s files under
    ``root`` (a trial that uploads files it will be asked for again may keep them there)."""
    return root / _safe(study) / str(number)


def _safe(study: str) -> str:
    """A folder name for a study name (which may hold any character)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", study)[:100] or "_"


def with_local_transfer(plan: TrainingPlan, context: TrainContext, root: Path) -> TrainingPlan:
    """``plan`` with a trial reference in ``transfer_from`` replaced by the folder its
    checkpoint was downloaded into (see :func:`fetch_transfer_source`); ``plan`` otherwise."""
    ref = plan.fidelity.transfer_from
    if ref is None:
        return plan
    local = fetch_transfer_source(context, ref, root)
    if local == ref:
        return plan
    fidelity = dataclasses.replace(plan.fidelity, transfer_from=local)
    return dataclasses.replace(plan, fidelity=fidelity)
