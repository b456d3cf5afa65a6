"""Workers on a Ray cluster: one detached actor per worker, restarted by Ray when it dies.

Each actor reserves the worker's resources (``num_gpus``: Ray sets CUDA_VISIBLE_DEVICES for
it) and runs ``archsearch worker`` as a child process (``WorkerChild``). A watcher thread
follows the child: when it exits 0 (its ``--idle-exit`` or ``--max-trials``, or a stop) the
actor ends itself for good; when it fails or is killed, the actor's process exits with an
error and Ray restarts the actor (``max_restarts``), which starts a new worker with the same
id, unless its exit status says a restart would fail the same way (:data:`PERMANENT_EXITS`: a
bad flag, GLUE folder or table file): that actor stays, FAILED with the worker's error line
in ``fleet status``, until ``fleet stop``. If Ray kills the actor, the child receives SIGTERM
(parent-death signal) and hands its trial back.

Ray's own settings are Ray's: the address is given to ``ray.init`` as is (``HOST:PORT``,
``ray://HOST:10001``, ``auto``), and its token authentication reads ``RAY_AUTH_MODE``,
``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH`` from the environment of this command (and
``--ray-token-file`` sets the last).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from typing import Any

from archsearch.fleet._child import WorkerChild, worker_argv

log = logging.getLogger("archsearch.fleet")


class RayMissing(RuntimeError):
    """Ray is not installed here."""


class RayUnreachable(ConnectionError):
    """Nothing accepts a connection at the cluster's address (no head runs there)."""


#: Worker exit statuses a restart would only repeat (README, "Scripting"): 2 bad input (a
#: flag, the GLUE folder, a table file). Ray does not restart those; any other failure (1; 3:
#: no server yet; 4: its --study not launched yet; a signal) it restarts, up to
#: ``--max-restarts``.
PERMANENT_EXITS = (2,)
#: how long the probe of a HOST:PORT address waits for a connection, in seconds
PROBE_TIMEOUT_S = 3.0


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``HOST:PORT`` or ``ray://HOST:PORT``; None for ``auto`` and the
    rest, which Ray resolves itself."""
    rest = address.strip().removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in rest:
        return None
    return host.strip("[]"), int(port)


def probe(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Checks that something accepts a TCP connection at ``address`` (``HOST:PORT`` or
    ``ray://HOST:PORT``; others are left to Ray).

    ``ray.init`` on an address where no head runs retries for minutes, saying only so in
    Ray's own log lines; this says it in seconds.

    Raises:
        RayUnreachable: the connection was refused, timed out, or the host is unknown.
    """
    target = _host_port(address)
    if target is None:
        return
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except socket.gaierror:
        raise RayUnreachable(f"no host {host!r} (its name does not resolve)") from None
    except OSError:  # refused, timed out, unreachable network
        raise RayUnreachable("nothing answers there") from None


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayMissing(
            "Ray is not installed here; install the extra: pip install 'archsearch[ray]'"
        ) from None
    return ray


class FleetWorker:
    """The actor: one archsearch worker process, watched.

    Args:
        worker_args: options of ``archsearch worker``.
        worker_id: the worker's id, the same after a restart.
        env: extra environment for the worker (the token, when given as ARCHSEARCH_TOKEN).
    """

    def __init__(self, worker_args: list[str], worker_id: str, env: dict[str, str]) -> None:
        ray = _ray()
        ctx = ray.get_runtime_context()
        self.worker_id = worker_id
        with warnings.catch_warnings():  # Ray's property reads its own deprecated actor_id
            warnings.filterwarnings("ignore", message=".*get_actor_id")
            self.restarted = bool(ctx.was_current_actor_reconstructed)
        self._stopping = False
        argv = [*worker_argv(), *worker_args, "--worker-id", worker_id]
        self.failed = ""  # a worker that exited with an error a restart would repeat
        self.me = ctx.current_actor
        self.child = WorkerChild(argv, env, keep_error=True).start()
        threading.Thread(target=self._watch, args=(self.me,), daemon=True).start()

    def _watch(self, me: Any) -> None:
        rc = self.child.wait()
        if rc == 0 or self._stopping:
            log.info("worker %s exited (%d); its actor ends", self.worker_id, rc)
            _ray().kill(me, no_restart=True)
            return
        if rc in PERMANENT_EXITS:  # a restart would fail the same way, again and again
            why = self.child.last_error or f"exit status {rc}"
            self.failed = f"exit {rc}: {why}"
            log.error(
                "worker %s exited with %d (%s); not restarted: fix it and start the fleet "
                "again (its actor stays until `fleet stop`, so `fleet status` can say this)",
                self.worker_id,
                rc,
                why,
            )
            return
        log.error("worker %s exited with %d; Ray restarts its actor", self.worker_id, rc)
        os._exit(1)  # an actor that dies is restarted by Ray; one that returns is not

    def info(self) -> dict[str, Any]:
        """The worker's pid and whether this actor is a restart (for ``fleet status``)."""
        proc = self.child.proc
        return {
            "worker_id": self.worker_id,
            "pid": proc.pid if proc else None,
            "running": bool(proc and proc.poll() is None),
            "restarted": self.restarted,
            "node": _ray().util.get_node_ip_address(),
            "failed": self.failed,
        }

    def stop(self) -> None:
        """SIGTERM to the worker: it hands its trial back and exits, and the actor ends (at
        once when its worker already failed for good)."""
        self._stopping = True
        if self.failed:
            _ray().kill(self.me, no_restart=True)
            return
        self.child.stop("fleet stop")


def connect(address: str, namespace: str, token_file: str | None = None) -> Any:
    """``ray.init`` on an existing cluster (never starts one).

    Raises:
        RayMissing: Ray is not installed.
        RayUnreachable: nothing answers at ``address`` (checked before ``ray.init``).
    """
    if token_file:  # before Ray reads its configuration (at import and init)
        os.environ["RAY_AUTH_TOKEN_PATH"] = os.path.abspath(token_file)
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    ray = _ray()
    if not ray.is_initialized():
        probe(address)
        ray.init(
            address=address,
            namespace=namespace,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    return ray


def start_actors(
    ray: Any,
    name: str,
    namespace: str,
    workers: int,
    worker_args: list[str],
    gpus: float,
    cpus: float,
    max_restarts: int,
) -> list[str]:
    """Starts ``workers`` detached actors named ``{name}-{i}``; their names.

    Raises:
        ValueError: an actor of that name already lives in the namespace.
    """
    env = {k: os.environ[k] for k in ("ARCHSEARCH_TOKEN",) if k in os.environ}
    remote = ray.remote(FleetWorker)
    names = [f"{name}-{i}" for i in range(workers)]
    for actor in names:
        try:
            ray.get_actor(actor, namespace=namespace)
        except ValueError:
            continue
        raise ValueError(
            f"actor {actor} already runs in Ray namespace {namespace!r}; stop that fleet "
            "(`archsearch fleet stop`) or pass another --name"
        )
    for actor in names:
        remote.options(
            name=actor,
            namespace=namespace,
            lifetime="detached",
            num_gpus=gpus,
            num_cpus=cpus,
            max_restarts=max_restarts,
        ).remote(worker_args, f"ray-{actor}", env)
    return names


def actor_states(
    data: dict[str, Any], names: list[str], token_file: str | None = None
) -> dict[str, str]:
    """Each actor's state: RUNNING pid=... (restarted), NOT READY, or GONE."""
    ray = connect(data["address"], data["namespace"], token_file)
    out: dict[str, str] = {}
    for name in names:
        try:
            handle = ray.get_actor(name, namespace=data["namespace"])
        except ValueError:
            out[name] = "GONE"
            continue
        try:
            info = ray.get(handle.info.remote(), timeout=15)
        except Exception as e:  # starting, restarting, or dying: say what Ray said
            why = type(e).__name__
            if why == "GetTimeoutError":  # scheduled nowhere yet, most often
                why = (
                    "no answer in 15 s: starting, or waiting for a node with the CPUs and GPUs "
                    "it reserves (`ray status` shows what the cluster has)"
                )
            out[name] = f"NOT READY ({why})"
            continue
        if info.get("failed"):
            out[name] = f"FAILED ({info['failed']}; not restarted) node={info['node']}"
            continue
        state = "RUNNING" if info["running"] else "ENDING"
        extra = " restarted" if info["restarted"] else ""
        out[name] = f"{state} pid={info['pid']} node={info['node']}{extra}"
    return out


def stop_actors(
    data: dict[str, Any], names: list[str], grace_s: float = 30.0, token_file: str | None = None
) -> list[str]:
    """Asks each actor's worker to hand back and exit; kills what is left after ``grace_s``.
    Returns the actors that were running."""
    ray = connect(data["address"], data["namespace"], token_file)
    handles = {}
    for name in names:
        try:
            handles[name] = ray.get_actor(name, namespace=data["namespace"])
        except ValueError:
            continue
    for handle in handles.values():
        handle.stop.remote()
    deadline = time.monotonic() + grace_s
    left = dict(handles)
    while left and time.monotonic() < deadline:
        for name in list(left):
            try:
                ray.get_actor(name, namespace=data["namespace"])
            except ValueError:
                del left[name]
        time.sleep(0.2)
    for handle in left.values():
        ray.kill(handle, no_restart=True)
    return list(handles)
