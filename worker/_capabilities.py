"""What a worker tells the server about itself, and the artifact look-ups its trials make.

:func:`declared_trainer_info` and :func:`device_memory_bytes` fill the Register request;
:func:`artifact_holders` and :func:`first_holder` answer a trial's "which trial of this study
holds artifact X?" through the FindArtifact RPC (``TrainContext.artifact_holders`` and
``find_artifact``).
"""

from __future__ import annotations

import logging
import os

import grpc

from archsearch.server.client import ClientError, WorkerClient
from archsearch.spaces import TrainerInfo
from archsearch.worker._trainer import Trainer

log = logging.getLogger("archsearch.worker")


def artifact_holders(
    client: WorkerClient, study: str, name: str, limit: int
) -> list[tuple[int, str]]:
    """(trial number, sha256) of up to ``limit`` trials of ``study`` holding an artifact
    ``name``, lowest-numbered first; empty when none does (NOT_FOUND; any other refusal
    raises ClientError)."""
    try:
        found = client.find_artifact(study, name, limit=limit)
    except ClientError as e:
        if e.code == grpc.StatusCode.NOT_FOUND:
            return []
        raise
    return [(int(h.trial_number), str(h.artifact.sha256)) for h in found.holders]


def first_holder(client: WorkerClient, study: str, name: str) -> int | None:
    """The lowest-numbered trial of ``study`` holding an artifact ``name``; None when none."""
    holders = artifact_holders(client, study, name, 1)
    return holders[0][0] if holders else None


def declared_trainer_info(trainers: dict[str, Trainer]) -> list[TrainerInfo]:
    """Each trainer's declared metadata (trainers that declare none are sent by name only).

    Raises:
        ValueError: A trainer's metadata names another trainer.
    """
    out = []
    for name, trainer in sorted(trainers.items()):
        info = type(trainer).info
        if info is None:  # the server knows it by name only: no study can select it
            log.warning(
                "trainer %s declares no TrainerInfo (its class's info is None): the server "
                "cannot check a study against it, so launching one on it is refused; set "
                "info = TrainerInfo(name=%r, spaces=(...), metrics=(...))",
                name,
                name,
            )
            continue
        if info.name != name:
            raise ValueError(f"trainer {name!r} declares metadata for {info.name!r}")
        out.append(info)
    return out


def device_memory_bytes(device: str) -> int:
    if device.startswith("cuda"):
        try:
            import torch

            return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
        except Exception:
            return 0
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0
