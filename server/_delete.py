"""Deleting a study: its trials, its records and its files, for good (``archsearch delete``).

What ``optuna.delete_study`` does to the storage, plus what archsearch keeps beside it: the
uploaded files of its trials (kept checkpoints, progress, pictures: the artifact store's files
outlive Optuna's records of them) and the server's in-memory handle. Refused while anything
could still write to the study: a running study (stop it first), trials on workers (wait, or
``stop --cancel-running``), or candidates being prepared.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from optuna.trial import FrozenTrial

from archsearch.server._errors import FailedPrecondition, NotFound
from archsearch.server._index import RUNNING, StudyHandle

log = logging.getLogger("archsearch.server")


def delete_study(
    name: str,
    handle: StudyHandle | None,
    storage: Any,
    writer: Any,
    trials: Callable[[int], list[FrozenTrial]],
    remove_files: Callable[[FrozenTrial], int],
    forget: Callable[[str], None],
) -> tuple[int, int]:
    """Deletes study ``name`` (``handle``: its served handle; None for a study in the storage
    that this server could not serve); returns (trials deleted, files removed).

    Raises:
        NotFound: no such study.
        FailedPrecondition: it runs, a worker holds one of its trials, or a write is on its
            way.
    """
    if handle is not None:
        with handle.lock:
            _check_idle(handle)
            writer.barrier()  # its queued writes first
            study_id = handle.study_id
            forget(name)  # no acquire finds it from now on
    else:
        try:
            study_id = storage.get_study_id_from_name(name)
        except KeyError:
            raise NotFound(f"no study named {name!r}") from None
        forget(name)
    frozen = trials(study_id)
    files = sum(remove_files(t) for t in frozen)
    storage.delete_study(study_id)
    log.info("deleted study %s: %d trials, %d files", name, len(frozen), files)
    return len(frozen), files


def _check_idle(h: StudyHandle) -> None:
    name = h.spec.name
    if h.state == RUNNING:
        raise FailedPrecondition(
            f"study {name} is running; stop it first (archsearch stop {name}), then delete it"
        )
    leased = sum(1 for live in h.index.live.values() if live.lease_id)
    if leased:
        raise FailedPrecondition(
            f"{leased} trial(s) of {name} still run on workers; wait for them, or end them "
            f"with `archsearch stop {name} --cancel-running`, then delete it"
        )
    if h.index.finishing or h.index.preparing:
        raise FailedPrecondition(f"study {name} is still writing a trial; try again in a moment")
