"""Shared fixtures: simulated partners, prepared data directories, a running gateway."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import conformance_support
import pytest

from adapters.base import Colour
from adapters.simulator import PartnerIssuer, PartnerSimulator, fake_holder

T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{conformance_support.MARKER}(reason): needs shared conformance vectors that are absent "
        f"(skipped, or failed with {conformance_support.REQUIRE_ENV}=1)",
    )
    conformance_support.required()  # a misspelt switch is a usage error before anything runs


def pytest_runtest_setup(item: pytest.Item) -> None:
    conformance_support.check(item)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one async scenario to completion (the suite needs no asyncio plugin)."""
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def simulator() -> PartnerSimulator:
    return PartnerSimulator.generate()


@dataclass
class CodeFactory:
    """Issues codes of a region relative to a reference time."""

    issuer: PartnerIssuer
    now: datetime
    rng: random.Random

    def __call__(
        self,
        colour: Colour = Colour.GREEN,
        *,
        age: timedelta = timedelta(hours=1),
        ttl: timedelta = timedelta(hours=23),
        forged: bool = False,
        holder: tuple[str, str] | None = None,
        code_id: str | None = None,
    ) -> str:
        holder_id, name = holder or fake_holder(self.rng)
        issued_at = self.now - age
        kwargs: dict[str, Any] = {
            "holder_id": holder_id,
            "holder_name": name,
            "colour": colour,
            "issued_at": issued_at,
            "expires_at": issued_at + age + ttl,
        }
        if code_id is not None:
            kwargs["code_id"] = code_id
        return self.issuer.forge(**kwargs) if forged else self.issuer.issue(**kwargs)


@pytest.fixture
def codes(simulator: PartnerSimulator) -> Callable[[str, datetime], CodeFactory]:
    """``codes(region, now)`` -> a factory issuing that region's codes around ``now``."""
    rng = random.Random(7)

    def make(region: str, now: datetime) -> CodeFactory:
        return CodeFactory(simulator.issuer(region), now, rng)

    return make


@pytest.fixture
def prepared_dir(tmp_path: Path, simulator: PartnerSimulator) -> Callable[[datetime], Path]:
    """``prepared_dir(now)`` -> a development data directory with the 14 simulated partners."""
    from gateway.demo import prepare

    def make(now: datetime) -> Path:
        data_dir = tmp_path / "data"
        data_dir.mkdir(exist_ok=True)
        run(prepare(data_dir, simulator, now))
        return data_dir

    return make


@asynccontextmanager
async def serving(data_dir: Path, tls: Any = None) -> AsyncIterator[tuple[Any, int]]:
    """A real gateway on a free loopback port: yields (gateway, port). Plaintext unless ``tls``."""
    from gateway.grpc.server import Gateway, GatewayConfig, build_server

    gateway = await Gateway.open(GatewayConfig(data_dir=data_dir, refresh_interval=0.1, tls=tls))
    running = await build_server(gateway, "127.0.0.1:0", tls)
    try:
        yield gateway, running.port
    finally:
        await running.stop(0.5)
        await gateway.close()


# --- the command line -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dev_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data directory made by ``trustgw init --dev`` once per session.

    Tests only try changes the CLI must refuse on it; anything else uses ``own_data_dir``.
    """
    from gateway.cli import main

    data_dir = tmp_path_factory.mktemp("cli") / "gw"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("TRUSTGW_PASSPHRASE", raising=False)
        patch.delenv("TRUSTGW_PASSPHRASE_FILE", raising=False)
        assert main(["init", "--data-dir", str(data_dir), "--dev", "--json"]) == 0
    yield data_dir


@pytest.fixture
def own_data_dir(dev_data_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's development data directory, free to change."""
    import shutil

    copy = tmp_path / "own-gw"
    shutil.copytree(dev_data_dir, copy)
    return copy
