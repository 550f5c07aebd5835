"""The two tiers of the suite, and the guard that keeps the fast one honest.

- **unit** (every test not marked): in process, no network socket, no other process: the whole
  tier runs in seconds (``pytest -m "not integration"``).
- **integration** (``@pytest.mark.integration``, or ``pytestmark`` for a whole module): a real
  gRPC server on a loopback port, a metrics endpoint, a subprocess (``trustgw serve``, the
  examples, the demo).

While a unit-tier test runs (its setup, call and teardown), the guard makes every way out of the
process fail: a Python socket of an internet family (asyncio's own AF_UNIX socketpair stays),
gRPC servers and channels (their sockets live in gRPC's C core, which no Python socket patch
sees: why this guard and not pytest-socket), and subprocesses (whose sockets no guard sees).
A refused attempt is also recorded, so a test whose code swallows the error still fails: the
guard holds in every run, the whole suite included, and a new test that needs a server says so
with the marker.
"""

from __future__ import annotations

import socket
import subprocess
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import grpc.aio

MARKER = "integration"
_INET = {socket.AF_INET, socket.AF_INET6}


class UnitTierError(OSError):
    """A unit-tier test tried to open a socket, a gRPC server or channel, or a process."""


class Hits(list[str]):
    """What a guarded test tried (one line each, with where from)."""


def _where() -> str:
    frames = [f for f in traceback.extract_stack()[:-3] if "/support/tiers.py" not in f.filename]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


@contextmanager
def guard() -> Iterator[Hits]:
    """Refuse (and record) sockets, gRPC servers/channels and subprocesses while active."""
    hits = Hits()

    def refuse(what: str) -> UnitTierError:
        hits.append(f"{what} (at {_where()})")
        return UnitTierError(f"the unit tier opens no {what}: mark the test integration")

    real_socket = socket.socket

    class GuardedSocket(real_socket):  # type: ignore[misc, valid-type]
        def __init__(
            self, family: int = -1, type: int = -1, proto: int = -1, fileno: Any = None
        ) -> None:
            if fileno is None and (socket.AF_INET if family == -1 else family) in _INET:
                raise refuse("network socket")
            super().__init__(family, type, proto, fileno)

    class GuardedPopen(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise refuse("subprocess")

    def refusing(what: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise refuse(what)

        return call

    patches: list[tuple[Any, str, Any]] = [
        (socket, "socket", GuardedSocket),
        (subprocess, "Popen", GuardedPopen),
        (grpc, "server", refusing("gRPC server")),
        (grpc.aio, "server", refusing("gRPC server")),
        (grpc, "insecure_channel", refusing("gRPC channel")),
        (grpc, "secure_channel", refusing("gRPC channel")),
        (grpc.aio, "insecure_channel", refusing("gRPC channel")),
        (grpc.aio, "secure_channel", refusing("gRPC channel")),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        yield hits
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
