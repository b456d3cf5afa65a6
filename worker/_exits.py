"""How a worker ends for good: the ``SystemExit`` kinds the CLI turns into exit statuses
(README, "Scripting"), which fleets read to decide whether to start the worker again."""

from __future__ import annotations

import grpc


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
