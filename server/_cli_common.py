"""What every ``archsearch`` subcommand shares: the error type, logging, the connection
options and the one-line explanation of an RPC error."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shlex
from collections.abc import Callable

from archsearch.server._channel import no_server
from archsearch.server.client import (
    ClientError,
    SearchClient,
    check_target,
    connection_cause,
    resolve_token,
)

DEFAULT_SERVER = "127.0.0.1:50051"
log = logging.getLogger("archsearch")


#: Exit statuses a script can tell apart (README, "Scripting"): 0 done; 1 refused or failed
#: (a study's state, the storage, a worker's trials); 2 bad input (usage, a spec, a value);
#: 3 no server answers (or its storage cannot be used): try again later; 4 no such study or
#: trial; 5 the name is taken; 124 ``wait --timeout`` ran out (as ``timeout(1)``); 130
#: interrupted.
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNREACHABLE, EXIT_NOT_FOUND, EXIT_EXISTS = 1, 2, 3, 4, 5
EXIT_TIMEOUT = 124


class CliError(Exception):
    """An error to print as ``archsearch: <message>`` and exit with ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------ helpers


def json_text(obj: object) -> str:
    """``obj`` as standard JSON for ``--json``: a value that is not a finite number (an
    AutoDistil job's ±inf, a NaN) is ``null``, because Python's
    ``Infinity`` and ``NaN`` are not JSON (``JSON.parse`` and ``jq`` refuse or mangle them)."""

    def finite(x: object) -> object:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: finite(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [finite(v) for v in x]
        return x

    return json.dumps(finite(obj), indent=2, allow_nan=False)


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in ``minimum..maximum`` (argparse names the flag)."""
    span = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected a whole number {span}, got {text!r}")
        return value

    return parse


def quantity(*, allow_zero: bool, unit: str) -> Callable[[str], float]:
    """An argparse type: a finite number of ``unit``, > 0 (or >= 0 with ``allow_zero``)."""
    span = ">= 0" if allow_zero else "> 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"expected a number of {unit} {span}, got {text!r}")
        return value

    return parse


def seconds(*, allow_zero: bool) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, > 0 (or >= 0 with ``allow_zero``)."""
    return quantity(allow_zero=allow_zero, unit="seconds")


class _FromEnv(str):
    """A default read from an environment variable (argparse converts it like a flag's value):
    an error in it names the variable, not the flag."""


def server_address(text: str) -> str:
    """An argparse type for ``--server``: the client's own check of HOST:PORT, at parse time.
    Raises CliError, one line naming ``--server`` (or ``$ARCHSEARCH_SERVER``, its default);
    ``main`` prints it as argparse's own errors are printed (exit 2)."""
    source = "ARCHSEARCH_SERVER" if isinstance(text, _FromEnv) else "--server"
    try:
        return check_target(str(text), source)
    except ValueError as e:
        said = str(e)
        raise CliError(said if said.startswith(source) else f"{source}: {said}") from None


def conn_flags(args: argparse.Namespace) -> str:
    """The connection flags for a command printed for the user to run next, so that it
    reaches this server as this command did: ``--server``, then ``--token-file`` and
    ``--tls-ca``/``--tls`` when this command had them; shell-quoted. A token from
    ``$ARCHSEARCH_TOKEN`` is not a flag: ``token_note`` says so (the token is never printed)."""
    parts = ["--server", args.server]
    if getattr(args, "token_file", None):
        parts += ["--token-file", args.token_file]
    if getattr(args, "tls_ca", None):
        parts += ["--tls-ca", args.tls_ca]
    elif getattr(args, "tls", False):
        parts.append("--tls")
    return shlex.join(parts)


def token_note(args: argparse.Namespace) -> str:
    """What to say after a printed command when this command's token came from
    ``$ARCHSEARCH_TOKEN`` (the printed command runs as it is only where it is set); ""
    otherwise."""
    if getattr(args, "token_file", None) or not os.environ.get("ARCHSEARCH_TOKEN"):
        return ""
    return " (with your token: --token-file FILE or ARCHSEARCH_TOKEN)"


def worker_flags(args: argparse.Namespace) -> tuple[str, str]:
    """The connection flags of a printed ``archsearch worker`` command, and what to say after
    it: as :func:`conn_flags`, but a token is never this command's own (an admin's token,
    copied onto every GPU machine, gives each one admin rights): ``--token-file
    WORKER_TOKEN_FILE``, named after the command."""
    if not (getattr(args, "token_file", None) or os.environ.get("ARCHSEARCH_TOKEN")):
        return conn_flags(args), ""
    plain = argparse.Namespace(**{**vars(args), "token_file": None})
    flags = f"{conn_flags(plain)} --token-file WORKER_TOKEN_FILE"
    return flags, (
        " (WORKER_TOKEN_FILE: a file holding one of the server's worker tokens, from its "
        "--worker-token-file; not an admin token)"
    )


def hint(args: argparse.Namespace, command: str) -> str:
    """A command to run next, in backticks: `archsearch COMMAND` with this command's
    connection flags (``conn_flags``), then ``token_note``."""
    return f"`archsearch {command} {conn_flags(args)}`{token_note(args)}"


# A word the shell split off a --set value: brace expansion makes two `KEY=...` words of
# `--set data.selection={"method":"dsir","k":300}` (and drops the quotes); spaces make
# `dsir",` or `300}` words of an unquoted `{"method": "dsir", "k": 300}`.
_SPLIT_SET_WORD = re.compile(r"[\w.]+=\S*|\S*[{}\[\]:,\"]\S*")


def _split_set_hint(message: str) -> str:
    """For ``unrecognized arguments:`` that look like pieces of a ``--set`` value the shell
    split: say to quote the value."""
    head, _, rest = message.partition("unrecognized arguments: ")
    words = [w for w in rest.split() if not w.startswith("-")]
    if head or not any(_SPLIT_SET_WORD.fullmatch(w) for w in words):
        return ""
    return (
        "; if they are part of a --set value, the shell split it: put the whole value in "
        """single quotes, e.g. --set 'data.selection={"method": "dsir", "k": 300}'"""
    )


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _token(args: argparse.Namespace) -> str | None:
    try:
        return resolve_token(None, getattr(args, "token_file", None))
    except OSError as e:
        raise CliError(
            f"cannot read token file {args.token_file}: {e.strerror}; pass the file the server "
            "admin gave you (or set ARCHSEARCH_TOKEN)"
        ) from e
    except ValueError as e:
        raise CliError(str(e)) from e


def _search_client(args: argparse.Namespace) -> SearchClient:
    try:
        return SearchClient(args.server, token=_token(args), tls_ca=args.tls_ca, tls=args.tls)
    except ValueError as e:  # an unreadable --tls-ca file
        raise CliError(f"{e} (pass --tls-ca FILE, the PEM certificate of the server's CA)") from e


def _add_conn(p: argparse.ArgumentParser) -> None:
    env = os.environ.get("ARCHSEARCH_SERVER")
    p.add_argument(
        "--server",
        default=DEFAULT_SERVER if env is None else _FromEnv(env),
        type=server_address,
        help=f"HOST:PORT of the server (default: $ARCHSEARCH_SERVER, else {DEFAULT_SERVER})",
    )
    p.add_argument(
        "--token-file", help="file whose first line is the token (default: $ARCHSEARCH_TOKEN)"
    )
    p.add_argument("--tls", action="store_true", help="use TLS with the system's root certificates")
    p.add_argument(
        "--tls-ca",
        help="CA certificate (PEM) that signed the server's certificate; for a self-signed "
        "one, the certificate itself (implies --tls)",
    )


def _explain(e: ClientError, args: argparse.Namespace) -> CliError:
    import grpc

    # Commands that start their own server (demo) have no --server.
    server = getattr(args, "server", None) or "the local server"
    tls = bool(getattr(args, "tls", False) or getattr(args, "tls_ca", None))
    cause = connection_cause(e, server, tls)
    if cause is not None:
        return CliError(cause, EXIT_UNREACHABLE)
    if e.code == grpc.StatusCode.UNAVAILABLE:
        return CliError(no_server(server, e.details), EXIT_UNREACHABLE)
    if e.code == grpc.StatusCode.UNAUTHENTICATED:
        return CliError(
            f"{e.details} (the server at {server} requires an admin token)", EXIT_FAILED
        )
    if e.code == grpc.StatusCode.UNIMPLEMENTED:  # gRPC's own "Method not found!"
        return CliError(
            f"the server at {server} does not know {e.method or 'this call'}: it runs an older "
            "archsearch than this command; upgrade the server (`archsearch --version` on "
            "each side says which code it runs)",
            EXIT_FAILED,
        )
    said = e.code.name.lower().replace("_", " ")  # not twice: "already exists: ... exists"
    code = {
        grpc.StatusCode.INVALID_ARGUMENT: EXIT_BAD_INPUT,
        grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS: EXIT_EXISTS,
    }.get(e.code, EXIT_FAILED)
    return CliError(e.details if said in e.details.lower() else f"{said}: {e.details}", code)
