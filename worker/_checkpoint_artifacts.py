"""FlexiBERT checkpoints through the server, so weight transfer needs no shared file system.

A FlexiBERT trial that keeps its checkpoint (``recipe.keep_checkpoint``) on a worker connected
to a server uploads the two files weight transfer reads (``model.safetensors`` and
``flexibert_config.json``) as artifacts of its trial, and says so in its ``info``
(``checkpoint_artifacts``). A later candidate's ``recipe.transfer_from`` may then name that
trial instead of a folder: ``"trial:N"`` (trial N of the same study) or ``"trial:STUDY:N"``;
the worker downloads the files (sha256 checked) into
``<checkpoint root>/transfers/<study>/<N>`` and transfers from there. A plain path keeps its
old meaning: a checkpoint folder on this worker.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

from archsearch.worker._flexibert_config import CONFIG_FILE, WEIGHTS_FILE
from archsearch.worker._plan import TrainingPlan
from archsearch.worker._trainer import CandidateError, TrainContext

log = logging.getLogger("archsearch.worker")

#: The files weight transfer reads, uploaded under these names.
CHECKPOINT_FILES = (WEIGHTS_FILE, CONFIG_FILE)
#: ``info`` key listing the uploaded checkpoint artifacts (what the loops look for).
INFO_KEY = "checkpoint_artifacts"
_REF = re.compile(r"^trial:(?:(?P<study>.+):)?(?P<number>[0-9]{1,9})$")


def parse_trial_ref(text: str) -> tuple[str, int] | None:
    """(study, trial number) of ``"trial:N"`` (study "": this trial's) or
    ``"trial:STUDY:N"``; None for anything else (a path).

    Raises:
        ValueError: ``text`` starts with ``trial:`` but is not one of the two forms.
    """
    if not text.startswith("trial:"):
        return None
    m = _REF.match(text)
    if m is None:
        raise ValueError(
            f"recipe.transfer_from {text[:80]!r}: write trial:N (trial N of this study) or "
            "trial:STUDY:N"
        )
    return m.group("study") or "", int(m.group("number"))


def upload_checkpoint(context: TrainContext, folder: str | Path) -> dict[str, str]:
    """Uploads a kept FlexiBERT checkpoint's transfer files; returns the ``info`` to add
    (``checkpoint_artifacts``, or ``checkpoint_upload_error`` when the server refused: the
    trial's result stands, only later transfers from it are lost)."""
    return upload_files(context, folder, CHECKPOINT_FILES)


def upload_files(
    context: TrainContext, folder: str | Path, files: tuple[str, ...]
) -> dict[str, str]:
    """Uploads ``files`` of ``folder`` as artifacts of this trial; the ``info`` to add (see
    :func:`upload_checkpoint`; empty without a server)."""
    if not context.has_server:
        return {}
    from archsearch.server.client import ClientError

    try:
        for name in files:
            context.upload(Path(folder) / name, name)
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
) -> str:
    """The local folder of a reference to another trial's uploaded ``files``: ``ref`` itself
    for a path; for ``trial:N`` / ``trial:STUDY:N``, ``root/<study>/<N>`` with the files
    downloaded into it.

    Args:
        field: The spec field ``ref`` came from, named in errors.
        missing_hint: What to do when the trial lacks the files.

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
    dest = root / _safe(study) / str(number)
    dest.mkdir(parents=True, exist_ok=True)
    for name in files:
        try:
            context.download(number, name, dest / name, study=study)
        except ClientError as e:
            if e.code.name in ("NOT_FOUND", "INVALID_ARGUMENT"):
                raise CandidateError(f"{field} {ref!r}: {e.details} ({missing_hint})") from e
            raise
    return str(dest)


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
