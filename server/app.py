"""Building and running the gRPC server: services, auth, TLS, bounds, health and reflection
(its settings and their checks: ``_server_config``, imported from here)."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
from concurrent import futures
from pathlib import Path

import grpc
import sqlalchemy
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from archsearch.server._artifact_disk import FolderError, prepare, warn_if_wrong_folder
from archsearch.server._artifact_rpcs import ArtifactWorkerServicer
from archsearch.server._auth import TokenAuthInterceptor
from archsearch.server._rpc import method_handlers
from archsearch.server._server_config import DEFAULT_MAX_MESSAGE_BYTES as DEFAULT_MAX_MESSAGE_BYTES
from archsearch.server._server_config import MIN_MESSAGE_BYTES as MIN_MESSAGE_BYTES
from archsearch.server._server_config import ConfigError as ConfigError
from archsearch.server._server_config import ServerConfig as ServerConfig
from archsearch.server._server_config import check_bind as check_bind
from archsearch.server._server_config import check_limits as check_limits
from archsearch.server._server_config import is_loopback as is_loopback
from archsearch.server._server_config import read_token_file as read_token_file
from archsearch.server._servicers import SearchServicer
from archsearch.server._storage_lock import (
    StorageInUse,
    StorageLock,
    lock_storage,
    missing_driver,
    relative_sqlite_note,
    safe_url,
    sqlite_database,
)
from archsearch.server._studies import StudyManager
from archsearch.server._trial_artifacts import (
    TrialArtifacts,
    default_artifact_dir,
)
from archsearch.server._upload_guard import UploadGuard
from archsearch.v1 import archsearch_pb2 as pb

log = logging.getLogger("archsearch.server")
SERVICES = ("", "archsearch.v1.SearchService", "archsearch.v1.WorkerService")  # health names


class StorageLost(RuntimeError):
    """Another server took this one's storage lock; the message says which and what to do."""


def _credentials(cfg: ServerConfig) -> grpc.ServerCredentials | None:
    if not cfg.tls_cert:
        return None
    try:
        key = Path(cfg.tls_key or "").read_bytes()
        cert = Path(cfg.tls_cert).read_bytes()
        ca = Path(cfg.tls_client_ca).read_bytes() if cfg.tls_client_ca else None
    except OSError as e:
        raise ConfigError(f"cannot read TLS file {e.filename}: {e.strerror}") from e
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


def _lock(storage: str) -> StorageLock | None:
    """The storage's one-server lock (``_storage_lock``), or a ConfigError saying who holds it."""
    try:
        return lock_storage(storage)
    except StorageInUse as e:
        raise ConfigError(str(e)) from None
    except OSError as e:
        raise ConfigError(
            f"cannot create the lock file beside the database of {storage}: "
            f"{e.strerror} ({e.filename})"
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        detail = getattr(e, "orig", None) or e
        raise ConfigError(f"cannot open storage {safe_url(storage)}: {detail}") from None
    except ImportError as e:  # the URL's database driver
        raise ConfigError(missing_driver(storage, e)) from None


def _addresses_in_use(host: str, port: int) -> tuple[int, int]:
    """(addresses of ``host``, how many of them another socket listens on at ``port``): a probe
    bind like grpc's own (SO_REUSEADDR, so only a listener, not TIME_WAIT, counts)."""
    if port == 0:
        return 0, 0
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except OSError:
        return 0, 0
    addrs = {(family, addr) for family, _, _, _, addr in infos}
    busy = 0
    for family, addr in addrs:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
            except OSError as e:
                busy += e.errno == errno.EADDRINUSE
    return len(addrs), busy


def _port_in_use(cfg: ServerConfig) -> str:
    return (
        f"port {cfg.port} on {cfg.host} is in use (another server?); "
        "pass another --port (0 picks a free one)"
    )


class ArchsearchServer:
    """A running server: the study manager plus the gRPC server around it."""

    def __init__(self, cfg: ServerConfig) -> None:
        check_limits(cfg)
        check_bind(cfg)
        self.cfg = cfg
        db = sqlite_database(cfg.storage)
        self.database = str(db) if db is not None else None  # the SQLite file, absolute
        note = relative_sqlite_note(cfg.storage)
        if note:
            log.warning("%s", note)
        self._lock = _lock(cfg.storage)  # before anything opens the storage
        self._done = threading.Event()  # serve_forever's end: a signal, or the lock lost
        #: why this server stopped serving on its own (its storage lock taken by another)
        self.lost: str | None = None
        try:
            self._build(cfg)
        except BaseException:
            manager: StudyManager | None = getattr(self, "manager", None)
            if manager is not None:
                manager.close()
            self._release_lock()
            raise

    def _build(self, cfg: ServerConfig) -> None:
        n, busy = _addresses_in_use(cfg.host, cfg.port)
        if n and busy == n:  # refused before grpc tries (and logs a line of its own)
            raise ConfigError(_port_in_use(cfg))
        folder = self._artifact_folder(cfg)  # before the manager, whose pictures go there
        self.manager = StudyManager(
            cfg.storage,
            cfg.lease_duration_s,
            cfg.heartbeat_interval_s,
            artifact_dir=cfg.artifact_dir,
        )
        artifacts = self._artifacts(cfg, folder)
        self.manager.remove_files = artifacts.remove_all  # delete takes a study's files too
        auth = TokenAuthInterceptor(cfg.admin_tokens, cfg.worker_tokens)
        options = [
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        # long polls and uploads have their own caps: 32 threads are left for the rest
        threads = cfg.threads or cfg.max_long_polls + cfg.max_uploads + 32
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rpc"),
            interceptors=[auth],
            options=options,
            maximum_concurrent_rpcs=threads * 4,
        )
        # Registered with raw-bytes deserialisers: a body that is not a valid message gets
        # INVALID_ARGUMENT from the servicers' ``rpc`` wrapper, not grpc-python's INTERNAL.
        self.grpc_server.add_generic_rpc_handlers(
            (
                method_handlers(SearchServicer(self.manager, cfg.max_message_bytes)),
                method_handlers(
                    ArtifactWorkerServicer(
                        self.manager,
                        artifacts,
                        UploadGuard(cfg.max_uploads, cfg.upload_idle_s),
                        max_long_polls=cfg.max_long_polls,
                        max_poll_s=cfg.max_poll_s,
                    )
                ),
            )
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc_server)
        names = (
            pb.DESCRIPTOR.services_by_name["SearchService"].full_name,
            pb.DESCRIPTOR.services_by_name["WorkerService"].full_name,
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, self.grpc_server)
        self.port = self._listen(cfg, _credentials(cfg))
        self.address = f"{cfg.host}:{self.port}"

    def _listen(self, cfg: ServerConfig, creds: grpc.ServerCredentials | None) -> int:
        """Binds the port; the bound port (the free one picked for port 0)."""
        address = f"{cfg.host}:{cfg.port}"
        try:
            if creds is None:
                port = self.grpc_server.add_insecure_port(address)
            else:
                port = self.grpc_server.add_secure_port(address, creds)
        except RuntimeError as e:  # grpc 1.85: "Failed to bind to address ...; set GRPC_..."
            port, reason = 0, str(e).split("; set GRPC_VERBOSITY", 1)[0]
        else:
            reason = "port in use or address not local"  # older grpc returned 0
        if port == 0:
            if _addresses_in_use(cfg.host, cfg.port)[1]:
                raise ConfigError(_port_in_use(cfg))
            raise ConfigError(f"cannot listen on {address}: {reason}")
        return port

    def _artifact_folder(self, cfg: ServerConfig) -> str | None:
        """The artifact folder (absolute), made when missing and checked writable; None: no
        folder (a store given in code, or a storage with no file to put one beside)."""
        if cfg.max_artifact_bytes < 0:
            raise ConfigError("--max-artifact-bytes must be >= 0")
        folder = cfg.artifact_dir or default_artifact_dir(cfg.storage)
        if cfg.artifact_store is not None or not folder:
            return None
        folder = os.path.abspath(os.path.expanduser(folder))  # the same, wherever one stands
        try:
            prepare(folder)
        except FolderError as e:
            raise ConfigError(str(e)) from None
        return folder

    def _artifacts(self, cfg: ServerConfig, folder: str | None) -> TrialArtifacts:
        self.artifact_dir: str | None = None
        if cfg.artifact_store is not None:
            return TrialArtifacts(self.manager, cfg.artifact_store, cfg.max_artifact_bytes)
        self.artifact_dir = folder  # what optuna-dashboard --artifact-dir needs (None: none)
        self.manager.keeps_artifacts = folder is not None  # launch refuses what needs uploads
        self.manager.artifact_dir = folder or ""  # what delete names when files were missing
        try:
            artifacts = TrialArtifacts.in_folder(self.manager, folder, cfg.max_artifact_bytes)
        except FolderError as e:  # changed since _artifact_folder looked
            raise ConfigError(str(e)) from None
        if artifacts.folder is not None:
            warn_if_wrong_folder(self.manager.rdb, artifacts.folder)
        return artifacts

    def start(self) -> None:
        # The restart grace counts from when workers can reach this server, not from when
        # its lease table was made: rebuilding many studies' indexes took longer than a
        # lease, and the leases of live workers expired as the port opened.
        self.manager.leases.grace_from_now()
        self.manager.start()
        self.grpc_server.start()
        self.manager.leases.grace_from_now()
        for svc in SERVICES:
            self.health.set(svc, health_pb2.HealthCheckResponse.SERVING)
        if self._lock is not None:
            self._lock.watch(self._lock_lost, self.cfg.lock_check_s)
        auth = (
            "tokens"
            if (self.cfg.admin_tokens or self.cfg.worker_tokens)
            else "no tokens (loopback only)"
        )
        tls = "TLS" if self.cfg.tls_cert else "plaintext"
        where = [f"database {self.database}"] if self.database else []
        where += [f"artifacts {self.artifact_dir}"] if self.artifact_dir else []
        log.info(
            "archsearch server on %s (%s, %s), storage %s%s",
            self.address,
            tls,
            auth,
            safe_url(self.cfg.storage),  # a database password stays out of logs
            f" ({', '.join(where)})" if where else "",
        )

    def stop(self, grace: float = 2.0) -> None:
        self.health.enter_graceful_shutdown()
        self.grpc_server.stop(grace).wait()
        self.manager.close()
        self._release_lock()  # after the last write: the next server may start now

    def _lock_lost(self, message: str) -> None:
        """Another server took the storage lock (this one's database session had ended): stop
        serving at once, so that no RPC of this server writes the database any more."""
        log.error("%s", message)
        self.lost = message
        for svc in SERVICES:
            self.health.set(svc, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.grpc_server.stop(0)
        self.manager.close()
        self._done.set()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def serve_forever(self) -> None:
        """Runs until SIGINT/SIGTERM, then drains in-flight calls and exits.

        Raises:
            StorageLost: another server took the storage lock; this one stopped serving.
        """

        def _stop(signum: int, _frame: object) -> None:
            log.info("signal %d: shutting down", signum)
            self._done.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        self.start()
        self._done.wait()
        self.stop()
        if self.lost is not None:
            raise StorageLost(self.lost)
