"""Running async scenarios and a real gateway on a loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one async scenario to completion (the suite needs no asyncio plugin)."""
    return asyncio.run(coro)


@asynccontextmanager
async def serving(data_dir: Path, tls: Any = None) -> AsyncIterator[tuple[Any, int]]:
    """A real gateway on a free loopback port: yields (gateway, port). Plaintext unless ``tls``.

    Opens sockets: a test using it is in the integration tier (``pytest.mark.integration``).
    """
    from gateway.grpc.server import build_server
    from gateway.runtime.config import GatewayConfig
    from gateway.runtime.gateway import Gateway

    gateway = await Gateway.open(GatewayConfig(data_dir=data_dir, refresh_interval=0.1, tls=tls))
    running = await build_server(gateway, "127.0.0.1:0", tls)
    try:
        yield gateway, running.port
    finally:
        await running.stop(0.5)
        await gateway.close()
