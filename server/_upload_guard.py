"""Uploads may not take the server's threads: at most so many at once, none idle for long.

An UploadArtifact stream holds one of the server's RPC threads from its first message to its
last. Three hundred streams opened and left silent (a careless or hostile client) held every
thread of the pool: heartbeats waited behind them, and other workers' leases expired. So:

* at most ``max_uploads`` run at once; one more answers UNAVAILABLE at once (a worker retries
  an upload the server is too busy for, as one it cannot reach);
* a stream that sends nothing for ``idle_s`` seconds is cancelled (``context.cancel()`` ends
  its request iterator, which frees the thread; nothing of it is stored), said in one line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

import grpc

from archsearch.server._errors import ServiceError, Unavailable
from archsearch.server._logsafe import loggable

log = logging.getLogger("archsearch.server")

T = TypeVar("T")

#: What an upload refused for want of a slot says (the client waits and tries again).
BUSY = "uploads already; retry shortly"
#: Uploads at once, by default (each holds one RPC thread while its bytes arrive).
MAX_UPLOADS = 16
#: Seconds an upload may send nothing before it is cancelled (a worker sends 1 MiB chunks).
UPLOAD_IDLE_S = 60.0


class UploadGuard:
    """The upload slots and the idle watch (see the module docstring)."""

    def __init__(self, max_uploads: int = MAX_UPLOADS, idle_s: float = UPLOAD_IDLE_S) -> None:
        self.max_uploads = max_uploads
        self.idle_s = idle_s
        self._slots = threading.BoundedSemaphore(max_uploads)

    def enter(self) -> None:
        """Takes a slot. Raises Unavailable when every slot is taken."""
        if not self._slots.acquire(blocking=False):
            raise Unavailable(f"the server is receiving {self.max_uploads} {BUSY}")

    def leave(self) -> None:
        self._slots.release()

    def watched(self, messages: Iterator[T], context: grpc.ServicerContext) -> Iterator[T]:
        """``messages``, cancelled when none arrives for ``idle_s`` seconds."""
        idle = threading.Event()

        def cancel() -> None:
            idle.set()
            context.cancel()

        while True:
            timer = threading.Timer(self.idle_s, cancel)
            timer.daemon = True
            timer.start()
            try:
                message = next(messages, None)
            except Exception:
                if context.is_active():
                    raise
                message = None  # the client went away: nothing more comes, nothing to log
            finally:
                timer.cancel()
            if idle.is_set():
                log.warning(
                    "UploadArtifact from %s: nothing for %.0fs; cancelled",
                    loggable(_peer(context)),
                    self.idle_s,
                )
                raise UploadIdle(f"nothing arrived for {self.idle_s:.0f}s; upload cancelled")
            if message is None:
                return
            yield message


class UploadIdle(ServiceError):
    """An upload that sent nothing for too long (its stream is cancelled already)."""

    code = "CANCELLED"


def _peer(context: Any) -> str:
    try:
        return str(context.peer())
    except Exception:  # a test's stand-in context
        return "?"
