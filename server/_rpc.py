"""The plumbing every servicer method goes through: request parsing, errors to statuses.

:func:`rpc` wraps a servicer method: it parses the raw request bytes (an undecodable body is
INVALID_ARGUMENT, not grpc-python's INTERNAL), and turns the service's exceptions into one
precise status each (``_errors`` names the mapping). :func:`method_handlers` registers a
servicer with raw-bytes deserialisers so that the bytes reach the wrapper.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError

from archsearch.server._channel import STORAGE_DOWN
from archsearch.server._errors import InvalidArgument, ServiceError
from archsearch.server._logsafe import loggable
from archsearch.server._outage import OutageLog
from archsearch.spaces import PluginFailed, SpecError

log = logging.getLogger("archsearch.server")

R = TypeVar("R")


def rpc(method: Callable[..., R]) -> Callable[..., R]:
    """Turns domain errors into gRPC statuses; unexpected errors into INTERNAL (logged). The
    wrapped methods are a servicer's: ``self.m`` is its study manager."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> R:
        try:
            if isinstance(request, bytes):  # registered by method_handlers: parse it here
                request = _parse(self.SERVICE, method.__name__, request, context)
            return method(self, request, context)
        except Exception as e:
            if storage_down(e) is not None:  # heartbeats are not stored: none counts as missed
                self.m.leases.grace_from_now()
            abort_for(method.__name__, e, context, outage_of(self))

    return wrapper


def outage_of(servicer: Any) -> OutageLog | None:
    """The outage log of a servicer's storage (its study manager's writer), if it has one."""
    writer = getattr(getattr(servicer, "m", None), "writer", None)
    return getattr(writer, "outage", None)


def abort_for(
    name: str, e: Exception, context: grpc.ServicerContext, outage: OutageLog | None = None
) -> NoReturn:
    """Aborts the call with the status of ``e``: domain errors as themselves (a plugin's
    failure logged with its traceback, which its message promises), a storage that cannot be
    used right now UNAVAILABLE (said by ``outage``, once per outage, not per call: clients
    retry it), anything else INTERNAL (logged with its traceback)."""
    if isinstance(e, PluginFailed):  # its message says the server log has the traceback
        log.error("%s: %s", name, loggable(e), exc_info=e)
    if isinstance(e, SpecError):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, details(str(e)))
    if isinstance(e, ServiceError):
        context.abort(grpc.StatusCode[e.code], details(str(e)))
    down = storage_down(e)
    if down is not None:
        if outage is not None:
            outage.down(name, down, e)
        else:
            log.warning("%s: %s: %s", name, STORAGE_DOWN, down)
        context.abort(
            grpc.StatusCode.UNAVAILABLE,
            f"{name}: {STORAGE_DOWN} ({down}); try again once it can be written (free disk "
            "space, a writable database file, the database server reachable)",
        )
    log.exception("%s failed", name)
    context.abort(grpc.StatusCode.INTERNAL, details(f"{name}: {type(e).__name__}: {e}"))
    raise AssertionError("unreachable")  # context.abort raises


#: The most characters of an error's details sent, and of its UTF-8 bytes: gRPC sends details
#: as a header, percent-encoding every byte outside printable ASCII (3 characters each), and a
#: client may drop headers past 8 KiB and always drops them past 16 KiB (the caller then saw
#: RESOURCE_EXHAUSTED, "received metadata size exceeds hard limit", for a spec error that
#: quoted a 200 KB field back): 2000 bytes stay under 8 KiB however they are encoded.
MAX_DETAILS_CHARS = 2000
_MAX_DETAILS_BYTES = 2000


def details(text: str) -> str:
    """``text`` cut to what a client receives whole, saying how much was cut."""
    if len(text) <= MAX_DETAILS_CHARS and len(text.encode()) <= _MAX_DETAILS_BYTES:
        return text
    cut = text[:MAX_DETAILS_CHARS]
    cut = cut.encode()[:_MAX_DETAILS_BYTES].decode(errors="ignore")
    return f"{cut}... ({len(text) - len(cut)} more characters)"


def storage_down(e: BaseException) -> str | None:
    """Why the storage cannot be used right now, when ``e`` says so: the database's own words
    for a full disk, a read-only or locked file, a lost connection (SQLAlchemy's
    ``OperationalError``, which Optuna's commits wrap in ``StorageInternalError``, "invalid
    data in the commit"), or the server shutting down; None for anything else."""
    import optuna
    import sqlalchemy.exc

    from archsearch.server._writer import WriterClosed

    if isinstance(e, WriterClosed):
        return str(e)
    if isinstance(e, optuna.exceptions.StorageInternalError):
        e = e.__cause__ or e
    if isinstance(e, sqlalchemy.exc.OperationalError):
        said = str(e.orig if e.orig is not None else e).strip()
        return said.splitlines()[0] if said else type(e).__name__
    return None


def _parse(service: Any, name: str, body: bytes, context: grpc.ServicerContext) -> Any:
    """The request message of ``service.name`` from its wire bytes; InvalidArgument (and one
    short log line, no traceback) when they are not a valid message of that type."""
    request_type = message_factory.GetMessageClass(service.methods_by_name[name].input_type)
    try:
        return request_type.FromString(body)
    except (DecodeError, RecursionError) as e:
        log.warning(
            "%s: %d-byte request from %s is not a valid %s",
            name,
            len(body),
            loggable(context.peer()),
            request_type.DESCRIPTOR.name,
        )
        raise InvalidArgument(
            f"request body is not a valid {request_type.DESCRIPTOR.full_name} message"
        ) from e


def method_handlers(servicer: Any) -> grpc.GenericRpcHandler:
    """The gRPC handler of ``servicer``'s service, with raw-bytes request deserialisers.

    grpc-python's own deserialisation answers an undecodable body with INTERNAL and logs a
    traceback per call (a log flood anyone with network access can cause); here the bytes
    reach the ``rpc`` wrapper, which parses them and answers INVALID_ARGUMENT.
    """
    service = servicer.SERVICE
    kinds = {  # (client streaming, server streaming) -> handler factory
        (False, False): grpc.unary_unary_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    handlers = {
        m.name: kinds[m.client_streaming, m.server_streaming](
            getattr(servicer, m.name),
            request_deserializer=None,  # bytes as received (each message of a stream)
            response_serializer=message_factory.GetMessageClass(m.output_type).SerializeToString,
        )
        for m in service.methods
    }
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise InvalidArgument(message)


def _study_name(name: str, field: str = "name") -> str:
    _require(bool(name), f"{field} is required")
    _require(len(name) <= 100, f"{field} is longer than 100 characters")
    return name


def _lease_id(lease_id: str) -> str:
    _require(bool(lease_id), "lease_id is required (from AcquireTrialResponse.lease)")
    return lease_id
