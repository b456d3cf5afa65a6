"""What both clients share: the channel, the token, deadlines and errors as ClientError."""

from __future__ import annotations

from typing import Any

import grpc

from archsearch.server import _client_args as args
from archsearch.server._channel import ClientError, call_hint, connection_cause, make_channel
from archsearch.server._channel import resolve_token as resolve_token

DEFAULT_TIMEOUT_S = 30.0


class ClientBase:
    #: Whether a failed call's ClientError carries :func:`call_hint` (the people's client).
    hints = False

    def __init__(
        self,
        target: str,
        token: str | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        channel: grpc.Channel | None = None,
        tls_ca: str | None = None,
        tls: bool = False,
    ) -> None:
        self.target = args.text(target, "target (HOST:PORT)")
        # None: no deadline on calls (as grpc takes it)
        self.timeout_s = None if timeout_s is None else args.seconds(timeout_s, "timeout_s")
        self._token = resolve_token(token)
        self._channel = channel or make_channel(target, tls_ca=tls_ca, tls=tls)
        self._metadata = (("authorization", f"Bearer {self._token}"),) if self._token else ()
        self.tls = bool(tls or tls_ca)
        self._last_cause: str | None = None
        self._closed = False

    def _call(self, stub_method: Any, request: Any, timeout: float | None = None) -> Any:
        if self._closed:  # grpc says "ValueError: Cannot invoke RPC on closed channel!"
            raise RuntimeError(
                f"this client of {self.target} is closed (its `with` block ended, or close() "
                "was called); make a new one"
            )
        seconds = timeout or self.timeout_s
        try:
            return stub_method(request, timeout=seconds, metadata=self._metadata)
        except grpc.RpcError as e:
            name = getattr(stub_method, "_method", b"")
            method = name.decode().rsplit("/", 1)[-1] if isinstance(name, bytes) else ""
            code, details = e.code(), e.details() or ""
            hint = call_hint(code, details, self.target, self.tls, seconds) if self.hints else ""
            raise ClientError(code, details, method, hint) from None

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Blocks until the channel connects; ClientError(UNAVAILABLE) after ``timeout_s``."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise ClientError(
                grpc.StatusCode.UNAVAILABLE,
                f"no archsearch server answers at {self.target} after {timeout_s:.0f}s; "
                "is `archsearch serve` running there?",
            ) from None

    def cause_once(self, e: ClientError) -> str | None:
        """:func:`connection_cause` of ``e`` when it differs from the previous call's, else
        None: a retry loop logs a cause once, not on every retry."""
        cause = connection_cause(e, self.target, self.tls)
        if cause == self._last_cause:
            return None
        self._last_cause = cause
        return cause

    def close(self) -> None:
        self._closed = True
        self._channel.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
