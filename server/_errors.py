"""Domain errors of the service; the servicers turn each into one precise gRPC status."""

from __future__ import annotations

#: How AcquireTrial's refusal of a ``--study`` that ended (completed or stopped) ends: the
#: worker exits 0 on it (a fleet's late worker has nothing to do, which is no failure).
STUDY_ENDED = "nothing left to train"
#: How a refusal of a worker whose trainers cannot serve the study it names says the fix (the
#: worker exits 2 on it: its own setup, which a restart repeats).
OTHER_TRAINER_FIX = "start it with --trainer"
#: the fail reason of a candidate a stop ended before any worker ran it
STOPPED_REASON = "study stopped before this candidate ran"


class ServiceError(Exception):
    """Base class. ``code`` is the name of the ``grpc.StatusCode`` it maps to."""

    code = "INTERNAL"


class InvalidArgument(ServiceError):
    code = "INVALID_ARGUMENT"


class NotFound(ServiceError):
    code = "NOT_FOUND"


class AlreadyExists(ServiceError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(ServiceError):
    """Something of the server's own (its artifact folder) cannot be used right now; a client
    may retry once an operator fixed it."""

    code = "UNAVAILABLE"
