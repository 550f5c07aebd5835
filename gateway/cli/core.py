"""``trustgw init``, ``serve`` and ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from gateway.cli._common import (
    EXIT_OK,
    add_data_dir,
    add_json,
    path_type,
    print_json,
)
from gateway.cli.config import add_settings_flags, settings_from
from gateway.observability import configure_logging
from gateway.runtime.datadir import DataDir
from keys.crypto import Algorithm
from keys.errors import ConfigurationError, UsageError
from keys.keystore import GATEWAY_ALGORITHMS, KeyDirectory, passphrase_from_env
from keys.timeutil import utcnow

log = logging.getLogger("trustgw.cli")


# --- init -------------------------------------------------------------------------------------


async def _init(
    data_dir: Path, dev: bool, now: Any, algorithm: Algorithm = Algorithm.EDDSA
) -> dict[str, Any]:
    from adapters.regions import REGION_SPECS
    from keys.model import Region
    from keys.store import SQLiteStore

    passphrase = passphrase_from_env()
    if data_dir.exists() and not data_dir.is_dir():
        raise UsageError(f"--data-dir {data_dir} exists and is not a directory")
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    paths = DataDir(data_dir)
    key_dir = paths.keys
    if key_dir.exists():
        raise ConfigurationError(f"{key_dir} already exists: this data directory is initialised")
    keys = KeyDirectory.create(
        key_dir, dev=dev, passphrase=passphrase, now=now, algorithm=algorithm
    )
    store = await SQLiteStore.open(paths.database)
    try:
        for spec in REGION_SPECS:
            await store.upsert_region(
                Region(code=spec.code, name=spec.name, mode=spec.mode, max_age=spec.max_age)
            )
    finally:
        await store.close()
    pki = paths.pki
    if not (pki / "ca.key").exists():
        from gateway.pki import DevCA

        DevCA.create(pki, now).issue("server", server=True, now=now)
    return {
        "data_dir": str(data_dir),
        "pki": str(pki),
        "dev": keys.dev,
        "regions": len(REGION_SPECS),
        "keys": [
            {"role": k.role.value, "kid": k.kid, "alg": k.public_key.alg.value}
            for k in keys.public_keys()
        ],
    }


def cmd_init(opts: argparse.Namespace) -> int:
    result = asyncio.run(
        _init(opts.data_dir, opts.dev, utcnow(), Algorithm(opts.gateway_algorithm))
    )
    if opts.json:
        print_json(result)
    else:
        print(f"initialised {result['data_dir']}: {result['regions']} partner regions")
        for key in result["keys"]:
            print(f"  gateway {key['role']} key {key['kid']} ({key['alg']})")
        print(f"  TLS: a CA and server certificate in {result['pki']}")
        print("  issue client certificates with: trustgw pki issue --data-dir DIR --role ...")
        if result["dev"]:
            print("WARNING: development mode: the gateway's private keys are NOT encrypted")
    return EXIT_OK


# --- serve ------------------------------------------------------------------------------------


async def _serve(opts: argparse.Namespace) -> None:
    from gateway.grpc.server import build_server
    from gateway.runtime.gateway import Gateway

    settings = settings_from(opts)  # flags > TRUSTGW_* environment > --config file > defaults
    config = settings.gateway_config(passphrase_from_env())
    configure_logging(settings.log_level, settings.log_format)
    if config.tls is not None:
        config.tls.read()  # fail now, with a clear message, rather than at the first call
    else:
        log.warning("serving PLAINTEXT without client authentication: local development only")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        # One handler from the start: the first signal begins the drain, any later one stops
        # at once, with no window in which a second signal would only set ``stop`` again.
        if stop.is_set():
            _exit_now()
        else:
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):  # before anything starts: no signal is missed
        loop.add_signal_handler(sig, on_signal)
    gateway = await Gateway.open(config)
    try:
        try:
            running = await build_server(gateway, config.listen, config.tls, config.metrics_listen)
        except RuntimeError as exc:  # grpc's "Failed to bind to address ..."
            if "bind" not in str(exc):
                raise
            where = " and ".join(filter(None, (config.listen, config.metrics_listen)))
            raise ConfigurationError(
                f"cannot listen on {where}: an address is in use or not this machine's"
            ) from None
        from gateway.runtime import heap

        heap.settle()  # start-up's objects out of every later collection (bench/PROFILE.md)
        host = config.listen.rsplit(":", 1)[0]
        mode = "plaintext (development)" if config.tls is None else "mutual TLS"
        print(f"trustgw serving on {host}:{running.port} ({mode})", flush=True)
        if running.metrics_port is not None:
            metrics_host = (config.metrics_listen or "").rpartition(":")[0]
            print(f"metrics on http://{metrics_host}:{running.metrics_port}/metrics", flush=True)
        await stop.wait()
        log.info("shutting down: NOT_SERVING, draining for up to %ss", config.grace)
        await running.stop(config.grace)
        log.info("drained; stopped")
    finally:
        await gateway.close()


def _exit_now() -> NoReturn:
    log.warning("second signal: stopping at once, without draining")
    logging.shutdown()
    os._exit(130)


def cmd_serve(opts: argparse.Namespace) -> int:
    asyncio.run(_serve(opts))
    return EXIT_OK


# --- demo -------------------------------------------------------------------------------------


def _demo_dir(keep: Path) -> Path:
    """``--keep``: a directory that does not exist yet (its parent does) or is empty."""
    path = keep.resolve()
    if path.is_dir():
        if any(path.iterdir()):
            raise UsageError(f"--keep {path} is not empty")
        return path
    if path.exists() or not path.parent.is_dir():
        raise UsageError(f"--keep {path} is not a new or empty directory")
    return path


def cmd_demo(opts: argparse.Namespace) -> int:
    from gateway import demo

    keep = None if opts.keep is None else _demo_dir(opts.keep)
    return asyncio.run(demo.run_demo(out=sys.stdout, keep=keep))


def register(sub: Any) -> None:
    p = sub.add_parser("init", help="create keys, database and the 14 partner regions")
    add_data_dir(p, existing=False)
    p.add_argument("--dev", action="store_true", help="development mode: keys NOT encrypted")
    p.add_argument(
        "--gateway-algorithm",
        choices=sorted(a.value for a in GATEWAY_ALGORITHMS),
        default=Algorithm.EDDSA.value,
        help="what the gateway's own keys sign with (attestations, home codes, trust list): "
        "SM2 for partners that require the national algorithms (default EdDSA)",
    )
    add_json(p)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("serve", help="run the gRPC gateway")
    add_settings_flags(p)  # --config FILE and one flag per setting (gateway/runtime/settings.py)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="run a self-contained demonstration with 14 simulated partners")
    p.add_argument(
        "--keep", type=path_type, help="keep the demo's data directory here (new or empty)"
    )
    p.set_defaults(func=cmd_demo)
