"""What the operator commands share: the data directory's database (opened and closed), the
audit actor of the CLI, and the region-code argument."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from gateway.runtime.datadir import DataDir
from keys.regioncode import is_region_code
from keys.store import SQLiteStore

OPERATOR = "operator:cli"  # the audit actor of every change made with the CLI


@asynccontextmanager
async def open_store(data_dir: Path) -> AsyncIterator[SQLiteStore]:
    """The data directory's registry database, closed on exit.

    Raises :class:`keys.errors.StoreUnavailableError`.
    """
    store = await SQLiteStore.open(DataDir(data_dir).database)
    try:
        yield store
    finally:
        await store.close()


def region_arg(value: str) -> str:
    """An argparse type: a 6-digit region code (ASCII digits)."""
    if not is_region_code(value):
        raise argparse.ArgumentTypeError(f"{value[:40]!r} is not a 6-digit region code")
    return value
