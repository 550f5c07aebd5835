"""Opening the server's ports: the address a ``HOST:PORT`` setting names, and the one error of
a port that cannot be opened, with its reason (docs/operations.md, "Exit codes")."""

from __future__ import annotations

import errno
import socket

from keys.errors import (
    AddressInUseError,
    AddressUnavailableError,
    ListenError,
    ListenPermissionError,
)


def host_port(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``, ``*:PORT``) as a host and port to bind."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    return ("::" if host in ("", "*") else host), int(port)


def listen_error(what: str, listen: str, code: int | None = None) -> ListenError:
    """The error of a listener (``what``: "gRPC", "metrics", "probe") that could not open
    ``listen``: ``code`` is the bind's errno, or found by binding a socket there once more
    (grpc says only "Failed to bind")."""
    if code is None:
        code = _bind_errno(listen)
    where = f"cannot open the {what} port {listen}"
    if code == errno.EADDRINUSE:
        return AddressInUseError(f"{where}: in use by another process")
    if code in (errno.EACCES, errno.EPERM):
        return ListenPermissionError(
            f"{where}: not permitted (a port below 1024 needs CAP_NET_BIND_SERVICE)"
        )
    if code in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.ENOENT):
        return AddressUnavailableError(f"{where}: the address is not one of this machine's")
    detail = f": {errno.errorcode.get(code, code)}" if code else ""
    return ListenError(f"{where}{detail}")


def _bind_errno(listen: str) -> int | None:
    """The errno of binding ``listen`` as a server would (``None``: it binds now)."""
    host, port = host_port(listen)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        return errno.EADDRNOTAVAIL
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return exc.errno
    return None
