"""Deleting a study: its trials, its records and its files, for good (``archsearch delete``).

What ``optuna.delete_study`` does to the storage, plus what archsearch keeps beside it: the
uploaded files of its trials (kept checkpoints, progress, pictures: the artifact store's files
outlive Optuna's records of them) and the server's in-memory handle. Refused while anything
could still write to the study: a running study (stop it first), trials on workers (wait, or
``stop --cancel-running``), or candidates being prepared.

Deletes run one at a time. A study with trials is first marked (``DELETING_ATTR``, one
commit), then its files go (the artifact store finds them through the trials' records), then
its records (one transaction): a server killed in between leaves a marked study, which the
next server does not serve and deletes when it starts (:func:`finish_deletions`), never a
study whose files are partly gone (``fetch`` said DATA_LOSS). A file that cannot be removed
is logged and left behind, unreferenced; the records go all the same.

Calls racing a delete (``stop``, ``resume``, ``show``, ``studies``) answer NOT_FOUND
(:class:`StudyDeleted`) for the study deleted under them, not an INTERNAL KeyError from
the storage: ``stop`` and ``resume`` check that the study is still served under its lock,
which the delete holds while it stops serving it; reads check it after reading
(:func:`unless_deleted`), and ``ListStudies`` leaves it out.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial

from archsearch.server._errors import FailedPrecondition, NotFound
from archsearch.server._index import RUNNING, StudyHandle

if TYPE_CHECKING:
    from archsearch.server._registry import StudyRegistry

log = logging.getLogger("archsearch.server")

#: study attribute: an ``archsearch delete`` began (its files may be partly gone)
DELETING_ATTR = "archsearch:deleting"


class StudyDeleted(NotFound):
    """The study was deleted while the call read or changed it: NOT_FOUND, as after it."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no archsearch study named {name!r} (it was just deleted)")


@contextlib.contextmanager
def unless_deleted(h: StudyHandle, serves: Callable[[StudyHandle], bool]) -> Iterator[None]:
    """Raises :class:`StudyDeleted` for a read of ``h`` that its deletion overtook: one that
    failed, or ended, once ``h`` was no longer served (what it read may be partly gone).
    A failure while ``h`` is still served is raised as it is."""
    try:
        yield
    except Exception:
        if serves(h):
            raise
        raise StudyDeleted(h.spec.name) from None
    if not serves(h):
        raise StudyDeleted(h.spec.name)


def delete(
    name: str,
    registry: StudyRegistry,
    storage: Any,
    writer: Any,
    trials: Callable[[int], list[FrozenTrial]],
    remove_files: Callable[[FrozenTrial], tuple[int, int]],
) -> tuple[int, int, int]:
    """Deletes study ``name``: a served one, one this server cannot serve, an empty Optuna
    study without an archsearch spec (a launch the server did not finish), or one whose
    deletion a stopped server did not finish; returns (trials deleted, files removed, files
    recorded but not in the store).

    Raises:
        NotFound: no such study.
        FailedPrecondition: it runs, a worker holds one of its trials, a write is on its way,
            or it is an Optuna study with trials that archsearch did not launch.
    """
    with registry.delete_lock:
        handle = registry.named(name)
        if handle is None and name not in registry.unserved:
            kind = registry.stored_kind(name)  # launches wait for the delete lock too
            if kind is None:
                raise NotFound(
                    f"no archsearch study named {name!r}; `archsearch studies` lists them"
                )
            if kind == "foreign":
                raise FailedPrecondition(
                    f"study {name!r} in the storage was not launched by archsearch and has "
                    "trials; archsearch deletes only its own studies and empty ones "
                    "(optuna.delete_study deletes any)"
                )
        return delete_study(name, handle, storage, writer, trials, remove_files, registry.forget)


def delete_study(
    name: str,
    handle: StudyHandle | None,
    storage: Any,
    writer: Any,
    trials: Callable[[int], list[FrozenTrial]],
    remove_files: Callable[[FrozenTrial], tuple[int, int]],
    forget: Callable[[str], None],
) -> tuple[int, int, int]:
    """Deletes study ``name`` (``handle``: its served handle; None for a study in the storage
    that this server does not serve); returns (trials deleted, files removed, files recorded
    but not in the store).

    Raises:
        NotFound: no such study.
        FailedPrecondition: it runs, a worker holds one of its trials, or a write is on its
            way.
    """
    if handle is not None:
        with handle.lock:  # stop and resume check under it that the study is still served
            _check_idle(handle)
            writer.barrier()  # its queued writes first
            study_id = handle.study_id
            frozen = _mark(storage, study_id, trials)
            forget(name)  # no acquire finds it from now on
    else:
        try:
            study_id = storage.get_study_id_from_name(name)
        except KeyError:
            raise NotFound(f"no study named {name!r}") from None
        frozen = _mark(storage, study_id, trials)
        forget(name)
    files = missing = 0
    for t in frozen:
        removed, gone = _remove_files(name, t, remove_files)
        files, missing = files + removed, missing + gone
    storage.delete_study(study_id)
    log.info("deleted study %s: %d trials, %d files", name, len(frozen), files)
    if missing:
        log.warning(
            "study %s: %d of its recorded files were not in the artifact store (a wrong "
            "--artifact-dir? they stay where they are)",
            name,
            missing,
        )
    return len(frozen), files, missing


def finish_deletions(names: list[str], deleted: Callable[[str], tuple[int, int, int]]) -> None:
    """Finishes the deletions a stopped server left (studies marked ``DELETING_ATTR``); one
    that fails again is logged, and ``archsearch delete`` finishes it."""
    for name in names:
        try:
            n_trials, n_files, _missing = deleted(name)
        except Exception as e:  # the server starts all the same
            log.error(
                "study %s: could not finish its deletion (%s); `archsearch delete %s --yes` "
                "tries again",
                name,
                e,
                shlex.quote(name),
            )
            continue
        log.warning(
            "study %s: finished the deletion a stopped server began (%d trials, %d files)",
            name,
            n_trials,
            n_files,
        )


def _mark(
    storage: Any, study_id: int, trials: Callable[[int], list[FrozenTrial]]
) -> list[FrozenTrial]:
    """The study's trials, after marking it as being deleted when it has any (their files go
    before their records)."""
    frozen = trials(study_id)
    if frozen:
        storage.set_study_user_attr(study_id, DELETING_ATTR, True)
    return frozen


def _remove_files(
    name: str, t: FrozenTrial, remove_files: Callable[[FrozenTrial], tuple[int, int]]
) -> tuple[int, int]:
    try:
        return remove_files(t)
    except Exception as e:  # the study goes all the same; its files stay, unreferenced
        log.warning(
            "study %s: could not remove the files of trial %d (%s: %s); they stay in the "
            "artifact store, referenced by nothing",
            name,
            t.number,
            type(e).__name__,
            e,
        )
        return 0, 0


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
