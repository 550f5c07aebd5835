"""What the operator commands share: the store (chosen by ``--database``, ``TRUSTGW_DATABASE``
or the data directory's SQLite file; opened and closed), the audit actor of the CLI, and the
region-code argument."""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from gateway.cli._common import add_data_dir
from gateway.runtime import dburl
from gateway.runtime.datadir import DataDir
from gateway.runtime.settings import BY_KEY, load_database
from keys.errors import UsageError
from keys.regioncode import is_region_code
from keys.store import CodeKeys, Store, factory

OPERATOR = "operator:cli"  # the audit actor of every change made with the CLI
DATABASE = BY_KEY["database"]


def add_database(parser: argparse.ArgumentParser) -> None:
    """``--database URL-or-path``: the store, over ``TRUSTGW_DATABASE`` and the default."""
    parser.add_argument(
        "--database",
        default=None,
        metavar="URL-or-PATH",
        help=f"{DATABASE.help} [{DATABASE.env}, {DATABASE.key}]",
    )


def add_store_args(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` (an initialised data directory) and ``--database``."""
    add_data_dir(parser)
    add_database(parser)


def database_target(
    opts: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> str | Path:
    """The store a command opens: ``--database`` > ``TRUSTGW_DATABASE`` > the ``database`` of
    ``--config FILE`` (where the command takes one) > ``DATA_DIR/trustgw.db``.

    Raises :class:`keys.errors.InvalidConfigError` for a value that is not a URL or a path.
    """
    target = load_database(
        getattr(opts, "config", None),
        os.environ if environ is None else environ,
        getattr(opts, "database", None),
    )
    if target is not None:
        return target
    if getattr(opts, "data_dir", None) is None:
        raise UsageError(
            "give the store: --database URL-or-PATH, or --data-dir DIR for its trustgw.db"
        )
    return DataDir(opts.data_dir).database


async def connect(
    opts: argparse.Namespace, *, code_keys: CodeKeys | None = None, migrate: bool = True
) -> Store:
    """The store of this command line (:func:`database_target`), open: the caller closes it.
    A SQLite file must exist already (only ``trustgw init`` and ``trustgw db migrate`` create
    one).

    Raises :class:`keys.errors.StoreUnavailableError`, :class:`UsageError` for a SQLite file
    that is not there.
    """
    target = database_target(opts)
    if not factory.is_postgres_url(str(target)) and not Path(target).is_file():
        raise UsageError(
            f"{dburl.redact(target)} does not exist: run trustgw init --data-dir "
            f"{opts.data_dir}, or give the store with --database"
        )
    return await factory.open_store(target, code_keys=code_keys, migrate=migrate)


@asynccontextmanager
async def open_store(
    opts: argparse.Namespace, *, code_keys: CodeKeys | None = None, migrate: bool = True
) -> AsyncIterator[Store]:
    """:func:`connect`, closed on exit."""
    store = await connect(opts, code_keys=code_keys, migrate=migrate)
    try:
        yield store
    finally:
        await store.close()


def region_arg(value: str) -> str:
    """An argparse type: a 6-digit region code (ASCII digits)."""
    if not is_region_code(value):
        raise argparse.ArgumentTypeError(f"{value[:40]!r} is not a 6-digit region code")
    return value
