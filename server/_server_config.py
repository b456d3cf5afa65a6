"""What `archsearch serve` can set (``ServerConfig``), and the checks made before it starts."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import Any

from archsearch.server._trial_artifacts import CHUNK_BYTES as ARTIFACT_CHUNK_BYTES
from archsearch.server._trial_artifacts import DEFAULT_MAX_ARTIFACT_BYTES
from archsearch.server._upload_guard import MAX_UPLOADS, UPLOAD_IDLE_S

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class ConfigError(ValueError):
    """The server cannot start with this configuration; the message says how to fix it."""


@dataclasses.dataclass
class ServerConfig:
    """Everything ``archsearch serve`` can set."""

    storage: str = "sqlite:///archsearch.db"
    host: str = "127.0.0.1"
    port: int = 50051
    admin_tokens: list[str] = dataclasses.field(default_factory=list)
    worker_tokens: list[str] = dataclasses.field(default_factory=list)
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    lease_duration_s: int = 60
    heartbeat_interval_s: int = 10
    max_long_polls: int = 256
    max_poll_s: float = 30.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    threads: int = 0  # 0: max_long_polls + max_uploads + 32
    #: Artifact folder: architecture pictures and uploaded files (None: uploads go to a
    #: folder next to a SQLite file, ``_trial_artifacts.default_artifact_dir``; no pictures).
    artifact_dir: str | None = None
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES
    #: Uploads received at once (each holds an RPC thread), and the seconds one may send
    #: nothing before it is cancelled (``_upload_guard``).
    max_uploads: int = MAX_UPLOADS
    upload_idle_s: float = UPLOAD_IDLE_S
    #: Any Optuna ``ArtifactStore`` (S3, GCS, ...) for uploads, set in code; overrides the folder.
    artifact_store: Any = None
    #: Seconds between two checks that the one-server lock is still held (PostgreSQL: its
    #: session can end under the server; ``_pg_lock``).
    lock_check_s: float = 2.0

    def __post_init__(self) -> None:
        # libpq, Heroku and many hosts write postgres://, which SQLAlchemy 2 no longer reads
        if self.storage.startswith("postgres://"):
            self.storage = "postgresql://" + self.storage.removeprefix("postgres://")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token_file(path: str) -> list[str]:
    """Tokens from a file: one per line; blank lines and '#' comments ignored."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(
            f"cannot read token file {path}: {e.strerror}; pass the file that holds the tokens, "
            "one per line"
        ) from e
    tokens = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not tokens:
        raise ConfigError(f"token file {path} holds no token (one token per line)")
    for t in tokens:
        if len(t) < 16:
            raise ConfigError(
                f"token file {path}: tokens must be at least 16 characters; make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
    return tokens


#: the smallest --max-message-bytes: an artifact upload's chunk (1 MiB) and its fields must fit
MIN_MESSAGE_BYTES = ARTIFACT_CHUNK_BYTES + 64 * 1024


def check_limits(cfg: ServerConfig) -> None:
    """Refuses a port, queue or message limit that cannot work (the CLI refuses them too)."""
    if not 0 <= cfg.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535 (0 picks a free one), got {cfg.port}")
    if cfg.max_long_polls < 1:
        raise ConfigError(f"--max-long-polls must be >= 1, got {cfg.max_long_polls}")
    if cfg.max_uploads < 1 or not cfg.upload_idle_s > 0:
        raise ConfigError(
            f"max_uploads must be >= 1 and upload_idle_s > 0, got {cfg.max_uploads} and "
            f"{cfg.upload_idle_s}"
        )
    if not cfg.max_poll_s > 0:
        raise ConfigError(f"--max-poll-seconds must be > 0, got {cfg.max_poll_s}")
    if cfg.max_message_bytes < MIN_MESSAGE_BYTES:
        raise ConfigError(
            f"--max-message-bytes must be >= {MIN_MESSAGE_BYTES}, got {cfg.max_message_bytes}"
        )


def check_bind(cfg: ServerConfig) -> None:
    """Refuses to expose an unauthenticated server beyond this machine."""
    if not (cfg.admin_tokens or cfg.worker_tokens) and not is_loopback(cfg.host):
        raise ConfigError(
            f"refusing to listen on {cfg.host} without tokens: anyone who can reach it could "
            "launch searches and report results. Pass --admin-token-file and --worker-token-file "
            "(and preferably --tls-cert/--tls-key), or listen on 127.0.0.1"
        )
    if cfg.admin_tokens and set(cfg.admin_tokens) & set(cfg.worker_tokens):
        raise ConfigError("a token is both an admin and a worker token; use distinct tokens")
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if cfg.tls_client_ca and not cfg.tls_cert:
        raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
