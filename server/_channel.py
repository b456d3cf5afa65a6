"""How a client reaches the server: the channel (the target's port, TLS files, message
limits), the token, the error of a failed call, and the one-line cause of a failed connection.
Imports only grpc, like the clients (``client``) that use it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import grpc

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


#: How the server's UNAVAILABLE status for a storage it cannot use right now begins (after the
#: method's name): a full disk, a read-only file, a lost database connection. Clients retry it
#: like a server that does not answer, and say it as the server said it.
STORAGE_DOWN = "the server's storage cannot be used right now"


class ClientError(Exception):
    """A failed call. ``code`` is the ``grpc.StatusCode``; ``details`` the server's message
    (or grpc's, when no server answered); ``hint`` what the client adds for a person: the
    likely cause and the fix (shown in ``str(e)``, not in ``details``)."""

    def __init__(
        self, code: grpc.StatusCode, details: str, method: str = "", hint: str = ""
    ) -> None:
        self.code = code
        self.details = details
        self.method = method
        self.hint = hint
        text = f"{method}: {code.name}: {details}" if method else f"{code.name}: {details}"
        super().__init__(f"{text}\n  {hint}" if hint else text)

    @property
    def transient(self) -> bool:
        """True for errors worth retrying (server down or busy, deadline passed)."""
        return self.code in TRANSIENT


def connection_cause(
    e: ClientError, target: str, tls: bool, answered_before: bool = False
) -> str | None:
    """One line naming why a connection failed and the flag that fixes it, from the text grpc
    puts in an UNAVAILABLE status; None when it names no cause this can explain.

    What grpc reports (checked against grpc 1.7x): a plain-text client of a TLS server sees
    the server close the socket ("Socket closed"); a TLS client of a plain-text server
    "WRONG_VERSION_NUMBER"; an untrusted certificate "CERTIFICATE_VERIFY_FAILED"; a
    certificate for another name a "Peer name ... is not in peer certificate" error.

    Args:
        e: the failed call.
        target: HOST:PORT the client dialled.
        tls: whether the client used TLS (``--tls`` or ``--tls-ca``).
        answered_before: whether this server already answered this client: a closed socket
            is then a server that went away, not a TLS server refusing plain text.
    """
    if e.code != grpc.StatusCode.UNAVAILABLE:
        return None
    text = e.details
    if "CERTIFICATE_VERIFY_FAILED" in text:
        why = text.rpartition("CERTIFICATE_VERIFY_FAILED:")[2].strip().removesuffix(": OK")
        return (
            f"the server at {target} speaks TLS, but its certificate is not trusted ({why}): "
            "pass --tls-ca FILE, the CA certificate that signed it (for a self-signed "
            "certificate, the certificate itself)"
        )
    if "WRONG_VERSION_NUMBER" in text:
        return (
            f"the server at {target} does not speak TLS: drop --tls/--tls-ca, or start the "
            "server with --tls-cert and --tls-key"
        )
    if "Peer name" in text and "not in peer certificate" in text:
        return (
            f"the server's TLS certificate is not made out to {target.rpartition(':')[0]}: "
            "connect with a name the certificate lists (its subjectAltName), or reissue it"
        )
    if "handshake" in text.lower() or "ssl" in text.lower():
        return f"the TLS handshake with {target} failed ({text.rpartition(': ')[2] or text})"
    if "Socket closed" in text and not tls and not answered_before:
        return (
            f"the server at {target} closed the connection at once: it most likely speaks "
            "TLS; pass --tls-ca FILE (the CA certificate that signed the server's "
            "certificate) or --tls (a certificate the system trusts)"
        )
    return None


def no_server(target: str, details: str) -> str:
    """One line for a server that does not answer at all (no TLS cause to name): where the
    client dialled, what grpc said, and the fix. The CLI and the worker both say it. A server
    that answered that its storage is down is said as it said it."""
    if STORAGE_DOWN in details:
        why = details.partition(STORAGE_DOWN)[2]
        return f"the server at {target} answers, but its storage cannot be used right now{why}"
    return (
        f"no archsearch server answers at {target} ({details}); start one with "
        "`archsearch serve` or pass --server HOST:PORT"
    )


def call_hint(
    code: grpc.StatusCode, details: str, target: str, tls: bool, timeout_s: float | None
) -> str:
    """What a Python caller is told besides grpc's text for a call no server answered: the TLS
    cause :func:`connection_cause` names, else no server at ``target`` and how to start one;
    for a deadline, which one passed and how to lengthen it. "" for any other status (the
    server's own message names the problem and the fix)."""
    if code == grpc.StatusCode.UNAVAILABLE and STORAGE_DOWN not in details:
        cause = connection_cause(ClientError(code, details), target, tls)
        return cause or (
            f"no archsearch server answers at {target}: start one with `archsearch serve`, "
            "or check the address (and TLS: tls=True or tls_ca=FILE for a TLS server)"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and timeout_s is not None:
        return (
            f"the server at {target} did not answer within {timeout_s:g}s (busy, or a "
            "restart): retry, or make the client with a longer timeout_s"
        )
    return ""


def resolve_token(token: str | None = None, token_file: str | None = None) -> str | None:
    """The token to send: explicit, else from ``token_file``, else ``$ARCHSEARCH_TOKEN``."""
    if token:
        return token
    if token_file:
        lines = [ln.strip() for ln in Path(token_file).read_text().splitlines()]
        tokens = [ln for ln in lines if ln and not ln.startswith("#")]
        if not tokens:
            raise ValueError(f"token file {token_file} holds no token")
        return tokens[0]
    return os.environ.get("ARCHSEARCH_TOKEN") or None


#: gRPC target schemes whose address needs no port (a socket path or name) or carries its own
#: (``vsock:CID:PORT``); ``dns:`` and ``ipv4:``/``ipv6:`` would dial 443 without one.
_NO_PORT_SCHEMES = ("unix:", "unix-abstract:", "vsock:")
EXAMPLE_TARGET = "127.0.0.1:50051"


def _host_port(address: str) -> tuple[str, str]:
    """HOST and PORT of ``HOST:PORT`` or ``[IPV6]:PORT``; PORT is "" when there is none (an
    unbracketed IPv6 address such as ``::1`` has none: gRPC reads it all as the host)."""
    if address.startswith("["):
        host, _, rest = address.partition("]")
        return host + "]", rest.removeprefix(":") if rest.startswith(":") else ""
    host, sep, port = address.rpartition(":")
    if not sep or ":" in host:
        return address, ""
    return host, port


def check_target(target: str, name: str = "the server address") -> str:
    """``target`` if it names a port, in 1..65535 (gRPC would dial 443 without one, take a
    larger port modulo 65536 (99999 dials 34463) or dial port 0), or is a ``unix:`` socket.
    Raises ValueError, a message that starts with ``name`` (the flag that gave the target)
    when the target is empty or has no port.

    Accepted: ``HOST:PORT``, ``[IPV6]:PORT``, ``dns:[//AUTHORITY/]HOST:PORT``,
    ``ipv4:ADDR:PORT[,...]``, ``ipv6:[ADDR]:PORT[,...]``, ``unix:PATH``, ``unix-abstract:NAME``
    and ``vsock:CID:PORT``.
    """
    fix = f"give HOST:PORT, e.g. {EXAMPLE_TARGET}"
    if not target.strip():
        raise ValueError(f"{name} is empty ({fix})")
    if target.startswith(_NO_PORT_SCHEMES):
        return target
    web = re.match(r"(https?|grpcs?)://", target)
    if web:  # a URL, not a gRPC target: gRPC would read "http" as a host name
        bare = target[web.end() :].rstrip("/")
        tls = " and --tls" if web[1] in ("https", "grpcs") else ""
        raise ValueError(
            f"{name} {target} is a URL; give HOST:PORT without {web[1]}://: {bare}{tls}"
        )
    # gRPC reads a target that starts with a resolver's name as that resolver's URI
    scheme, _, rest = target.partition(":")
    if scheme == "dns":
        addresses = [rest.removeprefix("//").partition("/")[2] if rest.startswith("//") else rest]
    elif scheme in ("ipv4", "ipv6"):
        addresses = rest.split(",")
    else:
        addresses = [target]
    for address in addresses:
        host, port = _host_port(address)
        if not port and host.count(":") > 1:  # ::1, not [::1]:50051
            raise ValueError(f"{name} {target} has no port (give [IPV6]:PORT, e.g. [::1]:50051)")
        if not port:
            raise ValueError(f"{name} {target} has no port ({fix})")
        if host in ("", "[]"):
            raise ValueError(f"{name} {target} has no host ({fix})")
        if not (port.isascii() and port.isdigit()):  # 50051/ or 50051/path: not a port
            raise ValueError(f"{name} {target}: the port {port!r} is not a number ({fix})")
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"port must be in 1..65535, got {target!r} (HOST:PORT)")
    return target


def make_channel(
    target: str,
    tls_ca: str | None = None,
    tls: bool = False,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> grpc.Channel:
    """A channel to ``target`` (HOST:PORT); TLS when ``tls`` or a CA file is given."""
    check_target(target)
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # Reconnect quickly after a server restart (the default backoff grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]
    if tls or tls_ca:
        root = _read_pem("CA certificate", tls_ca)
        cert = _read_pem("client certificate", client_cert)
        key = _read_pem("client key", client_key)
        creds = grpc.ssl_channel_credentials(root, key, cert)
        return grpc.secure_channel(target, creds, options=options)
    return grpc.insecure_channel(target, options=options)


def _read_pem(what: str, path: str | None) -> bytes | None:
    """The bytes of a PEM file; ValueError naming the file and the problem."""
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {what} file {path}: {e.strerror}") from e
    if b"-----BEGIN" not in data:
        raise ValueError(f"{what} file {path} is not a PEM file (no -----BEGIN line)")
    return data
