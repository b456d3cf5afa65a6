"""A throw-away PostgreSQL server for the tests that run against the PostgreSQL backend.

``PostgresServer`` runs its own cluster with ``initdb``/``pg_ctl`` in a temporary directory:
listening on 127.0.0.1 only, on a free port, with its unix socket inside that directory, trust
authentication (local test use only) and fsync off. It never touches the cluster the Debian
package sets up for itself (that one listens on 5432 and may be up or down; it does not matter).

When the binaries are missing and the tests run as root (a fresh CI machine) the server is
installed with ``apt-get install -y postgresql``. PostgreSQL refuses to run as root, so as root
the cluster runs as the ``postgres`` OS user (``runuser -u postgres --``).

If PostgreSQL cannot be installed or started, the ``postgres_url`` fixture fails every test
that needs it with the reason. With ``ARCHSEARCH_SKIP_POSTGRES=1`` nothing is installed and
those tests are skipped instead when no working PostgreSQL is at hand.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

SKIP_ENV = "ARCHSEARCH_SKIP_POSTGRES"
TEST_DATABASE = "archsearch_test"
OS_USER = "postgres"
START_TIMEOUT_S = 60
INSTALL_TIMEOUT_S = 900


class PostgresUnavailable(RuntimeError):
    """PostgreSQL could not be installed or started; the message says why."""


def _bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding initdb and pg_ctl, if any."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        d = Path(initdb).parent
        version = d.parent.name
        if (d / "pg_ctl").exists() and version.isdigit():
            found.append((int(version), d))
    return max(found)[1] if found else None


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", "-o", "DPkg::Lock::Timeout=300", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )


def ensure_installed() -> Path:
    """The PostgreSQL bin directory, installing the Debian package first when it is missing."""
    found = _bin_dir()
    if found is not None:
        return found
    if os.environ.get(SKIP_ENV) == "1":
        raise PostgresUnavailable(f"initdb/pg_ctl not found and {SKIP_ENV}=1: not installing")
    if os.geteuid() != 0:
        raise PostgresUnavailable(
            "initdb/pg_ctl not found under /usr/lib/postgresql/*/bin and not running as root; "
            "install PostgreSQL (apt-get install postgresql) or set "
            f"{SKIP_ENV}=1 to skip these tests"
        )
    if shutil.which("apt-get") is None:
        raise PostgresUnavailable("initdb/pg_ctl not found and there is no apt-get to install it")
    install = ("install", "-y", "--no-install-recommends", "postgresql")
    try:
        result = _apt_get(*install)
        if _bin_dir() is None:  # a fresh machine has no package lists yet
            update = _apt_get("update")
            if update.returncode != 0:
                raise PostgresUnavailable(f"apt-get update failed:\n{update.stderr[-2000:]}")
            result = _apt_get(*install)
    except subprocess.TimeoutExpired as e:
        raise PostgresUnavailable(f"installing PostgreSQL timed out: {e}") from e
    # The exit status is not the verdict: the package's own cluster service may fail to start
    # in a container, which does not matter to a cluster run with pg_ctl.
    found = _bin_dir()
    if found is None:
        raise PostgresUnavailable(
            "apt-get install -y postgresql left no initdb/pg_ctl under /usr/lib/postgresql:\n"
            f"{(result.stdout + result.stderr)[-2000:]}"
        )
    return found


def _temp_parent() -> str:
    """Where the cluster's directory goes: the temp dir, unless the ``postgres`` user could not
    reach it (a root-only TMPDIR) or the socket path would pass the 107-byte unix limit."""
    tmp = Path(tempfile.gettempdir()).resolve()
    reachable = all(p.stat().st_mode & stat.S_IXOTH for p in (tmp, *tmp.parents))
    if (os.geteuid() == 0 and not reachable) or len(str(tmp)) > 60:
        return "/tmp"
    return str(tmp)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; ``start``/``stop`` or a ``with`` block.

    Attributes:
        url: SQLAlchemy URL of the ``archsearch_test`` database (set by ``start``).
        port: the TCP port on 127.0.0.1.
    """

    def __init__(self) -> None:
        self.bin_dir: Path | None = None
        self.root: Path | None = None
        self.port = 0
        self.url = ""
        self.startup_s = 0.0

    # -------------------------------------------------------------- process plumbing

    def _as_owner(self) -> list[str]:
        """Command prefix that runs a PostgreSQL binary as a user it accepts."""
        if os.geteuid() != 0:
            return []
        return ["runuser", "-u", OS_USER, "--"]

    def _run(self, tool: str, *args: str, timeout: float = START_TIMEOUT_S) -> str:
        assert self.bin_dir is not None and self.root is not None
        cmd = [*self._as_owner(), str(self.bin_dir / tool), *args]
        try:
            result = subprocess.run(
                cmd,
                cwd=self.root,  # the postgres user must be able to stat its cwd
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise PostgresUnavailable(f"{tool} timed out after {timeout}s: {e}") from e
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"{' '.join(cmd)} failed ({result.returncode}):\n"
                f"{(result.stdout + result.stderr)[-3000:]}{self._log_tail()}"
            )
        return result.stdout

    def _log_tail(self) -> str:
        if self.root is None or not (self.root / "server.log").exists():
            return ""
        return "\nserver.log:\n" + (self.root / "server.log").read_text(errors="replace")[-3000:]

    # -------------------------------------------------------------- life cycle

    def start(self) -> str:
        """Initialises and starts the cluster, creates the test database, returns its URL."""
        t0 = time.monotonic()
        self.bin_dir = ensure_installed()
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            raise PostgresUnavailable(
                "running as root, but there is no runuser to drop to postgres"
            )
        self.root = Path(tempfile.mkdtemp(prefix="archsearch-pg-", dir=_temp_parent()))
        data, sock = self.root / "data", self.root / "sock"
        data.mkdir(mode=0o700)
        sock.mkdir(mode=0o700)
        if os.geteuid() == 0:
            try:
                shutil.chown(self.root, OS_USER, OS_USER)
                for p in (data, sock):
                    shutil.chown(p, OS_USER, OS_USER)
            except (LookupError, PermissionError) as e:
                raise PostgresUnavailable(
                    f"cannot hand {self.root} to the {OS_USER!r} OS user ({e}); "
                    "PostgreSQL refuses to run as root"
                ) from e
        self._run(
            "initdb",
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",  # local test use only: the server listens on 127.0.0.1 alone
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )
        for attempt in range(3):  # another process may grab the free port before we bind it
            self.port = _free_port()
            conf = (
                "\n# archsearch tests\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{sock}'\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "shared_buffers = 32MB\n"
                "max_connections = 200\n"
            )
            with (data / "postgresql.auto.conf").open("a") as f:
                f.write(conf)  # later lines win, so a retry's port replaces the last one
            try:
                self._run(
                    "pg_ctl",
                    "start",
                    "-D",
                    str(data),
                    "-l",
                    str(self.root / "server.log"),
                    "-w",
                    "-t",
                    str(START_TIMEOUT_S),
                    timeout=START_TIMEOUT_S + 10,
                )
                break
            except PostgresUnavailable:
                if attempt == 2:
                    raise
        self.url = self.create_database(TEST_DATABASE)
        self.startup_s = time.monotonic() - t0
        return self.url

    def stop(self) -> None:
        """Stops the cluster (fast shutdown) and removes its directory; safe to call twice."""
        try:
            # postmaster.pid, not whether start() returned: a start that timed out may be up.
            if self.root is not None and (self.root / "data" / "postmaster.pid").exists():
                try:
                    self._run("pg_ctl", "stop", "-D", str(self.root / "data"), "-m", "fast", "-w")
                except PostgresUnavailable:
                    self._kill_postmaster()
        finally:
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None

    def _kill_postmaster(self) -> None:
        assert self.root is not None
        pidfile = self.root / "data" / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(int(pidfile.read_text().splitlines()[0]), signal.SIGQUIT)
            time.sleep(1)

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- databases

    def create_database(self, name: str) -> str:
        """Creates an empty database and returns its SQLAlchemy URL."""
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"
        _admin(url, f'CREATE DATABASE "{name}"')
        return url


def _admin(url: str, sql: str) -> None:
    """Runs one statement on the ``postgres`` database of the server of ``url``."""
    import psycopg2  # the server extra's driver; imported here so its absence fails clearly

    u = sqlalchemy.engine.make_url(url)
    conn = psycopg2.connect(
        host=u.host, port=u.port, user=u.username, dbname="postgres", connect_timeout=10
    )
    try:
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def unavailable(reason: str) -> None:
    """Fails (or, with ARCHSEARCH_SKIP_POSTGRES=1, skips) a test that needs PostgreSQL."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"PostgreSQL unavailable ({SKIP_ENV}=1): {reason}")
    pytest.fail(
        f"PostgreSQL is needed and could not be provided: {reason}\n"
        f"(set {SKIP_ENV}=1 to skip the PostgreSQL tests, or deselect them with -m 'not postgres')",
        pytrace=False,
    )


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``server_url``, dropped afterwards.

    Each test gets its own so that no test sees another's studies.
    """
    name = f"t_{uuid.uuid4().hex[:16]}"
    _admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        url = sqlalchemy.engine.make_url(server_url).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a database on a PostgreSQL server started for this test session."""
    server = PostgresServer()
    try:
        reason = ""
        try:
            server.start()
        except PostgresUnavailable as e:
            reason = str(e)
        except Exception as e:  # e.g. psycopg2 missing or the first connection refused
            reason = f"{type(e).__name__}: {e}"
        if reason:
            unavailable(reason)  # outside the except: the reason alone, no chained traceback
        yield server.url
    finally:
        server.stop()
