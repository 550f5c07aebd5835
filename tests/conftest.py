"""Shared fixtures: simulated partners, their codes, prepared data directories.

Helpers that tests import live in ``tests/support`` (a test never imports this file)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from support import conformance, tiers
from support.aio import run
from support.codes import CodeFactory
from support.pg import pg_module_url, pg_url  # the PostgreSQL fixtures (support/pg.py)

from adapters.simulator import PartnerSimulator


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{conformance.MARKER}(reason): needs shared conformance vectors that are absent "
        f"(skipped, or failed with {conformance.REQUIRE_ENV}=1)",
    )
    conformance.required()  # a misspelt switch is a usage error before anything runs


def pytest_runtest_setup(item: pytest.Item) -> None:
    conformance.check(item)


__all__ = ["pg_module_url", "pg_url"]


@pytest.fixture(scope="session")
def simulator() -> PartnerSimulator:
    return PartnerSimulator.generate()


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


# --- tiers: the unit tier opens no socket and starts no process (support/tiers.py) ------------

_HITS = pytest.StashKey[tiers.Hits]()


def _integration(item: pytest.Item) -> bool:
    return item.get_closest_marker(tiers.MARKER) is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """A unit-tier test runs (setup, call, teardown) under the guard."""
    if _integration(item):
        yield
        return
    with tiers.guard() as hits:
        item.stash[_HITS] = hits
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A unit-tier test that tried to leave the process fails, even if its code swallowed the
    refusal; the message says how to move it to the integration tier."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    hits = item.stash.get(_HITS, None)
    if hits:
        if not report.failed:  # (a failed report already shows the refusal)
            report.outcome = "failed"
            report.longrepr = (
                f"{item.nodeid} is in the unit tier but tried to open: {'; '.join(hits)}.\n"
                "Mark it @pytest.mark.integration (or pytestmark for its module): see "
                "tests/support/tiers.py."
            )
        hits.clear()
