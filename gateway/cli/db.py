"""``trustgw db status`` and ``db migrate``: the store's schema version, and its upgrade.

``trustgw serve`` never migrates: it refuses a database whose schema is behind this code
(``SCHEMA_OUTDATED``), so that an upgrade is one deliberate step, run once for all replicas.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from gateway.cli._common import (
    EXIT_OK,
    EXIT_REJECTED,
    add_json,
    existing_data_dir_type,
    path_type,
    print_json,
)
from gateway.cli._store import add_database, database_target
from gateway.runtime import dburl
from gateway.runtime.datadir import DataDir
from keys.errors import PassphraseError
from keys.keystore import MANIFEST, KeyDirectory, passphrase_from_env
from keys.pseudonym import Pseudonymiser
from keys.store import CodeKeys, factory


def _state(status: factory.SchemaStatus) -> str:
    if status.current == status.expected:
        return "up to date"
    if status.current < status.expected:
        return "needs migration"
    return "newer than this gateway"


async def _status(opts: argparse.Namespace) -> dict[str, Any]:
    target = database_target(opts)
    status = await factory.schema_status(target)
    return {
        "backend": status.backend,
        "database": dburl.redact(target),
        "current": status.current,
        "expected": status.expected,
        "state": _state(status),
    }


def cmd_status(opts: argparse.Namespace) -> int:
    result = asyncio.run(_status(opts))
    if opts.json:
        print_json(result)
    else:
        print(
            f"{result['database']} ({result['backend']}): schema version {result['current']}, "
            f"this gateway expects {result['expected']}: {result['state']}"
        )
        if result["state"] == "needs migration":
            print("  run: trustgw db migrate --data-dir DIR (then start trustgw serve)")
    return EXIT_OK if result["state"] == "up to date" else EXIT_REJECTED


def _code_keys(opts: argparse.Namespace) -> CodeKeys | None:
    """The gateway's secret, for a migration that keys stored code ids (schema 4); without a
    passphrase for encrypted keys ``None``: such a migration then refuses and says why. Only a
    data directory from before the keyring has the secret in files (``keys/``): a database of
    schema 3 or older is older than the keyring."""
    if opts.data_dir is None:
        return None
    passphrase = passphrase_from_env()
    if not (DataDir(opts.data_dir).keys / MANIFEST).exists():
        return None
    try:
        keys = KeyDirectory.open(DataDir(opts.data_dir).keys, passphrase=passphrase)
    except PassphraseError:
        if passphrase is not None:
            raise  # a wrong passphrase is an error, not a missing one
        return None
    return Pseudonymiser(keys.pseudonym_secret())


async def _migrate(opts: argparse.Namespace) -> dict[str, Any]:
    target = database_target(opts)
    before = await factory.schema_status(target)
    if before.current < before.expected:
        store = await factory.open_store(target, code_keys=_code_keys(opts), migrate=True)
        await store.close()
    after = await factory.schema_status(target)
    return {
        "backend": after.backend,
        "database": dburl.redact(target),
        "before": before.current,
        "after": after.current,
        "expected": after.expected,
        "migrated": after.current != before.current,
    }


def cmd_migrate(opts: argparse.Namespace) -> int:
    result = asyncio.run(_migrate(opts))
    if opts.json:
        print_json(result)
    elif result["migrated"]:
        print(
            f"{result['database']} ({result['backend']}): migrated from schema version "
            f"{result['before']} to {result['after']}"
        )
    else:
        print(
            f"{result['database']} ({result['backend']}): already at schema version "
            f"{result['after']}, nothing to do"
        )
    return EXIT_OK


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="the store's schema: status and migration")
    area = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    for name, text, func in (
        (
            "status",
            "schema version of the store against this gateway's (exit 0 up to date, 1 not)",
            cmd_status,
        ),
        ("migrate", "bring the store's schema up to date (serve refuses an old one)", cmd_migrate),
    ):
        p = area.add_parser(name, help=text)
        # --data-dir only for the SQLite file in it (and, for migrate, its key directory): a
        # PostgreSQL database needs none.
        p.add_argument(
            "--data-dir",
            type=existing_data_dir_type,
            help="the gateway's data directory (its trustgw.db, unless --database)",
        )
        add_database(p)
        p.add_argument(
            "--config", type=path_type, metavar="FILE", help="TOML file whose database to use"
        )
        add_json(p)
        p.set_defaults(func=func)
