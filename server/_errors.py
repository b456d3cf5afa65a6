"""Domain errors of the service; the servicers turn each into one precise gRPC status."""

from __future__ import annotations


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
