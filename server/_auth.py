"""Bearer-token authentication as a gRPC server interceptor.

Tokens travel in the ``authorization`` metadata as ``Bearer <token>``. An admin token may call
every RPC; a worker token only the WorkerService. Health checking and reflection need no token
(load balancers and grpcurl probe them). With no tokens configured every call is allowed — the
server then refuses to listen anywhere but loopback (see ``_server.check_bind``).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import grpc

WORKER_SERVICE = "/archsearch.v1.WorkerService/"
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _abort_handler(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    def abort(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Checks the bearer token of every call against the admin and worker tokens."""

    def __init__(self, admin_tokens: list[str], worker_tokens: list[str]) -> None:
        self._admin = [t.encode() for t in admin_tokens]
        self._worker = [t.encode() for t in worker_tokens]

    @property
    def enabled(self) -> bool:
        return bool(self._admin or self._worker)

    @staticmethod
    def _matches(token: bytes, allowed: list[bytes]) -> bool:
        # constant-time compare against every token so timing reveals nothing
        found = False
        for t in allowed:
            found |= hmac.compare_digest(token, t)
        return found

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if not self.enabled or method.startswith(OPEN_PREFIXES):
            return continuation(handler_call_details)
        header = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode()
        if not header:
            return _abort_handler(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing token: pass --token-file or set ARCHSEARCH_TOKEN",
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _abort_handler(
                grpc.StatusCode.UNAUTHENTICATED, "authorization metadata must be 'Bearer <token>'"
            )
        raw = token.strip().encode()
        if self._matches(raw, self._admin):
            return continuation(handler_call_details)
        if self._matches(raw, self._worker):
            if method.startswith(WORKER_SERVICE):
                return continuation(handler_call_details)
            return _abort_handler(
                grpc.StatusCode.PERMISSION_DENIED,
                f"a worker token cannot call {method}; use an admin token",
            )
        return _abort_handler(
            grpc.StatusCode.UNAUTHENTICATED,
            "wrong token: the server takes none like it; use a token from its admin or worker "
            "token file (--token-file, or ARCHSEARCH_TOKEN)",
        )
