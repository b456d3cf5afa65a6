"""What every ``archsearch`` subcommand shares: the error type, logging, the connection
options and the one-line explanation of an RPC error."""

from __future__ import annotations

import argparse
import logging
import math
import os
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


class CliError(Exception):
    """An error to print as ``archsearch: <message>`` and exit with ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------ helpers


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


def server_address(text: str) -> str:
    """An argparse type for ``--server``: the client's own check of HOST:PORT, at parse time."""
    try:
        return check_target(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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
        raise CliError(f"cannot read token file {args.token_file}: {e.strerror}") from e
    except ValueError as e:
        raise CliError(str(e)) from e


def _search_client(args: argparse.Namespace) -> SearchClient:
    try:
        return SearchClient(args.server, token=_token(args), tls_ca=args.tls_ca, tls=args.tls)
    except ValueError as e:  # an unreadable --tls-ca file
        raise CliError(f"{e} (pass --tls-ca FILE, the PEM certificate of the server's CA)") from e


def _add_conn(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        default=os.environ.get("ARCHSEARCH_SERVER", DEFAULT_SERVER),
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
        return CliError(cause, 1)
    if e.code == grpc.StatusCode.UNAVAILABLE:
        return CliError(no_server(server, e.details), 1)
    if e.code == grpc.StatusCode.UNAUTHENTICATED:
        return CliError(f"{e.details} (the server at {server} requires an admin token)", 1)
    return CliError(
        f"{e.code.name.lower().replace('_', ' ')}: {e.details}",
        2
        if e.code
        in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.ALREADY_EXISTS,
        )
        else 1,
    )
