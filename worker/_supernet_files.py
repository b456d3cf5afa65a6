"""Where an AutoDistil worker keeps supernets, and how they move between machines: a
supernet job uploads its supernet's files as artifacts of its trial and keeps them where its
rank and train jobs look on this worker (``<checkpoint root>/autodistil/supernets/<study>/
<trial>``), so a worker holds each supernet once and downloads it at most once."""

from __future__ import annotations

from pathlib import Path

from archsearch.spaces import Candidate
from archsearch.worker._checkpoint_artifacts import (
    fetch_trial_files,
    reference_folder,
    upload_files,
)
from archsearch.worker._checkpoints import checkpoint_root
from archsearch.worker._trainer import TrainContext

#: The supernet's files (a plain ``BertModel.save_pretrained``), uploaded under these names.
SUPERNET_FILES = ("model.safetensors", "config.json")


def upload_supernet(context: TrainContext, folder: Path) -> dict[str, str]:
    """Uploads the supernet's files as artifacts of this trial (like ``upload_checkpoint``)."""
    return upload_files(context, folder, SUPERNET_FILES)


def _supernets() -> Path:
    """The folder of the supernets this worker downloaded or trained, by study and trial."""
    return checkpoint_root() / "autodistil" / "supernets"


def supernet_folder(context: TrainContext, candidate: Candidate) -> Path:
    """Where a supernet job keeps its supernet: with a server, the folder its rank and train
    jobs would download it into (so on this worker they read it from disk, and it is kept
    once); without one, a folder of its own."""
    if context.has_server and context.trial_number is not None:
        return reference_folder(_supernets(), context.study_name, context.trial_number)
    return checkpoint_root() / "autodistil" / candidate.fingerprint()


def fetch_supernet(context: TrainContext, ref: str) -> str:
    """The local folder of a supernet: ``ref`` itself for a path; for ``"trial:N"`` or
    ``"trial:STUDY:N"``, the folder its artifacts were downloaded into.

    Raises:
        CandidateError: A malformed reference, no server, or a trial without the files.
    """
    return fetch_trial_files(
        context,
        ref,
        _supernets(),
        SUPERNET_FILES,
        field="supernet",
        missing_hint="name a finished supernet job's trial",
    )
