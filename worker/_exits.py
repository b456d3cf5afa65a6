"""How a worker ends for good: the ``SystemExit`` kinds the CLI turns into exit statuses
(README, "Scripting"), which fleets read to decide whether to start the worker again."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import grpc

from archsearch.server._errors import OTHER_TRAINER_FIX, STUDY_ENDED

if TYPE_CHECKING:
    from archsearch.server.client import ClientError

log = logging.getLogger("archsearch.worker")


class NeverReached(SystemExit):
    """``--idle-exit`` ran out before the server ever answered (the CLI exits 3, as for any
    server that cannot be reached)."""


class NoSuchStudy(SystemExit):
    """The ``--study`` this worker was started for does not exist (the CLI exits 4)."""


class BadSetup(SystemExit):
    """The server refuses this worker's own setup: its token, or its trainers for its
    ``--study``. A restart would be refused the same way (the CLI exits 2, which a fleet does
    not restart: Ray restarted such a worker every few seconds, for ever)."""


#: Refusals of the worker's setup (:class:`BadSetup`), whichever call met them.
SETUP_REFUSALS = (
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
)


def end_refused(e: ClientError, study_name: str, study_seen: bool) -> None:
    """An acquire refused for good: returns when the ``--study`` this worker serves has
    ended, before or after it trained any (the worker exits 0: a fleet's late worker has
    nothing to do, which is no failure, and a Kubernetes Job does not restart it); else
    SystemExit with the server's one line: :class:`BadSetup` for a refused token, or a
    study trained by a trainer this worker lacks; :class:`NoSuchStudy` for NOT_FOUND.
    ``study_seen``: the server answered an acquire for the study (a NOT_FOUND is a delete)."""
    if e.code == grpc.StatusCode.NOT_FOUND and study_seen:
        # deleted under a worker that served or waited for it: ended, as a completed one
        log.info("study %s was deleted; %s; exiting", study_name, STUDY_ENDED)
        return
    if e.code == grpc.StatusCode.NOT_FOUND:
        raise NoSuchStudy(f"worker: {e.details}")
    if e.code in SETUP_REFUSALS:
        raise BadSetup(f"worker: {e}")
    if e.code != grpc.StatusCode.FAILED_PRECONDITION:
        raise SystemExit(f"worker: {e}")
    if OTHER_TRAINER_FIX in e.details:  # its study needs another trainer
        raise BadSetup(f"worker: {e.details}")
    if not (study_name and e.details.endswith(STUDY_ENDED)):
        raise SystemExit(f"worker: {e.details}")  # e.g. a study this server cannot serve
    log.info("%s; exiting", e.details)
