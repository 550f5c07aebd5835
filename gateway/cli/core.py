"""``trustgw init``, ``serve`` and ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import warnings
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn

from gateway.cli._common import (
    EXIT_OK,
    add_data_dir,
    add_json,
    path_type,
    print_json,
)
from gateway.cli._store import add_database
from gateway.cli.config import add_settings_flags, settings_from
from gateway.observability import AccessLog, configure_logging
from gateway.runtime import dburl
from gateway.runtime.datadir import DataDir
from gateway.runtime.settings import Settings, load_database
from gateway.runtime.supervisor import WorkerLink, WorkerSlot, worker_config
from keys.crypto import Algorithm
from keys.errors import (
    ConfigurationError,
    GatewayError,
    PassphraseError,
    SchemaOutdatedError,
    UsageError,
)
from keys.gatewaykeys import create_or_join
from keys.keystore import GATEWAY_ALGORITHMS, passphrase_from_env
from keys.timeutil import utcnow

log = logging.getLogger("trustgw.cli")


# --- init -------------------------------------------------------------------------------------


async def _init(
    data_dir: Path,
    dev: bool,
    now: Any,
    algorithm: Algorithm = Algorithm.EDDSA,
    database: str | Path | None = None,
) -> dict[str, Any]:
    from adapters.regions import REGION_SPECS
    from gateway.runtime import dburl
    from keys.model import Region
    from keys.store.factory import open_store

    passphrase = passphrase_from_env()
    if data_dir.exists() and not data_dir.is_dir():
        raise UsageError(f"--data-dir {data_dir} exists and is not a directory")
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    paths = DataDir(data_dir)
    # A data directory's own database is initialised once; a shared database (--database) is
    # joined by every further machine's init (docs/operations.md, "Where the keys live").
    taken = [paths.keys] + ([paths.database] if database is None else [])
    for path in taken:
        if path.exists():
            raise ConfigurationError(f"{path} already exists: this data directory is initialised")
    if not dev and not passphrase:
        raise PassphraseError()  # before anything is written
    target = paths.database if database is None else database
    # The store first: a database that cannot be reached leaves no half-made data directory.
    store = await open_store(target)  # creates (SQLite) or migrates the schema
    try:
        # The first machine of a deployment creates the keyring; the others join it with the
        # same passphrase.
        keys, created = await create_or_join(
            store, dev=dev, passphrase=passphrase, now=now, algorithm=algorithm
        )
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
        "database": dburl.redact(target),
        "pki": str(pki),
        "dev": keys.dev,
        "keyring": "created" if created else "joined",
        "regions": len(REGION_SPECS),
        "keys": [
            {"role": k.role.value, "kid": k.kid, "alg": k.public_key.alg.value}
            for k in keys.public_keys()
        ],
    }


def cmd_init(opts: argparse.Namespace) -> int:
    result = asyncio.run(
        _init(
            opts.data_dir,
            opts.dev,
            utcnow(),
            Algorithm(opts.gateway_algorithm),
            load_database(opts.config, os.environ, opts.database),
        )
    )
    if opts.json:
        print_json(result)
    else:
        print(f"initialised {result['data_dir']}: {result['regions']} partner regions")
        print(f"  store: {result['database']}")
        verb = "created" if result["keyring"] == "created" else "joined the existing"
        print(f"  {verb} gateway keyring in the database:")
        for key in result["keys"]:
            print(f"  gateway {key['role']} key {key['kid']} ({key['alg']})")
        print(f"  TLS: a CA and server certificate in {result['pki']}")
        print("  issue client certificates with: trustgw pki issue --data-dir DIR --role ...")
        if result["dev"]:
            print("WARNING: development mode: the gateway's private keys are NOT encrypted")
    return EXIT_OK


# --- serve ------------------------------------------------------------------------------------


async def _serve_settings(settings: Settings, worker: WorkerLink | None = None) -> None:
    """One gateway process: the whole server, or (``worker``) one of ``--workers N``."""
    from gateway.cli._reload import reload_on_signal
    from gateway.denylist import DENY_FILE
    from gateway.grpc.server import build_server
    from gateway.runtime.gateway import Gateway

    config = settings.gateway_config(passphrase_from_env())
    if worker is not None:
        config = worker_config(config, worker.slot)
    if config.tls is not None:
        config.tls.read()  # fail now, with a clear message, rather than at the first call
    # After the checks that end in the one error line: a command that fails to start leaves
    # the process's logging as it found it.
    configure_logging(settings.log_level, settings.log_format, settings.log_libraries)
    access = AccessLog(settings.log_access)
    if config.tls is None and worker is None:
        log.warning("serving PLAINTEXT without client authentication: local development only")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        # One handler from the start: the first signal begins the drain, any later one stops
        # at once, with no window in which a second signal would only set ``stop`` again.
        # A worker's stops at once only by its supervisor's SIGKILL: a SIGTERM that systemd
        # sends the whole control group besides the supervisor's own must not cut the drain.
        if stop.is_set() and worker is None:
            _exit_now()
        else:
            stop.set()

    # Before anything starts: no signal is missed. A worker drains on its supervisor's SIGTERM
    # only (SIGINT is ignored: see gateway/runtime/supervisor.py) or when the supervisor dies.
    for sig in (signal.SIGTERM,) if worker is not None else (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    reload_requested = asyncio.Event()  # SIGHUP: reload (gateway/cli/_reload.py), never exit
    loop.add_signal_handler(signal.SIGHUP, reload_requested.set)
    parent = worker.parent_sentinel() if worker is not None else None
    if parent is not None:
        loop.add_reader(parent, stop.set)
    gateway = await Gateway.open(config)
    try:
        # With --workers N, worker 0 alone opens the probe port (one port, one owner).
        probe = settings.probe_listen if worker is None or worker.slot.index == 0 else None
        running = await build_server(
            gateway,
            config.listen,
            config.tls,
            config.metrics_listen,
            access,
            probe,
            deny_list=config.paths.pki / DENY_FILE,
            reuse_port=worker is not None,
        )
        reloader = asyncio.create_task(
            reload_on_signal(reload_requested, settings, running, access)
        )
        from gateway.runtime import heap

        heap.settle()  # start-up's objects out of every later collection (bench/PROFILE.md)
        host = config.listen.rsplit(":", 1)[0]
        mode = "plaintext (development)" if config.tls is None else "mutual TLS"
        if worker is not None:
            worker.ready(running.port)  # the supervisor says "serving" once all are
        else:
            print(f"trustgw serving on {host}:{running.port} ({mode})", flush=True)
        if running.metrics_port is not None:
            metrics_host = (config.metrics_listen or "").rpartition(":")[0]
            print(f"metrics on http://{metrics_host}:{running.metrics_port}/metrics", flush=True)
        if running.probe_port is not None and worker is None:
            probe_host = (settings.probe_listen or "").rpartition(":")[0]
            print(f"probes on {probe_host}:{running.probe_port} (plaintext)", flush=True)
        await stop.wait()
        reloader.cancel()
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
    settings = settings_from(opts)  # flags > TRUSTGW_* environment > --config file > defaults
    if settings.workers > 1:
        return _supervise(settings)
    asyncio.run(_serve_settings(settings))
    return EXIT_OK


# docs/operations.md "Exit codes": what ``trustgw serve`` exits with when it cannot start.
EXIT_CONFIGURATION, EXIT_LISTEN, EXIT_PERMISSION, EXIT_STORE = 3, 4, 5, 6


def serve_exit_status(exc: BaseException, status: int) -> int:
    """The exit status of ``serve`` failing with ``exc`` (``status``: the general one). By the
    error's reason, so that a worker's failure, which reaches the supervisor as its reason and
    message, exits as the same failure of a single process would."""
    from keys.errors import (
        AddressInUseError,
        AddressUnavailableError,
        FilePermissionError,
        ListenError,
        ListenPermissionError,
        StoreUnavailableError,
    )

    by_reason = {
        AddressInUseError.reason: EXIT_LISTEN,
        AddressUnavailableError.reason: EXIT_LISTEN,
        ListenError.reason: EXIT_LISTEN,
        ListenPermissionError.reason: EXIT_PERMISSION,
        FilePermissionError.reason: EXIT_PERMISSION,
        StoreUnavailableError.reason: EXIT_STORE,
    }
    if isinstance(exc, PermissionError):
        return EXIT_PERMISSION
    reason = exc.reason if isinstance(exc, GatewayError) else None
    if reason in by_reason:
        return by_reason[reason]
    if isinstance(exc, ConfigurationError):
        return EXIT_CONFIGURATION
    return status


def _supervise(settings: Settings) -> int:
    """``serve --workers N``: checks made once here, then N worker processes."""
    from gateway.runtime.supervisor import Supervisor
    from keys.store.factory import schema_status

    configure_logging(settings.log_level, settings.log_format, settings.log_libraries)
    tls = settings.tls_files()
    if tls is not None:
        tls.read()
    else:
        log.warning("serving PLAINTEXT without client authentication: local development only")
    target = settings.database_target()
    status = asyncio.run(schema_status(target))
    if status.outdated:
        raise SchemaOutdatedError(
            f"the database {dburl.redact(target)} is at schema version {status.current}, this "
            f"gateway needs {status.expected}: run trustgw db migrate",
            current=status.current,
            expected=status.expected,
        )
    supervisor = Supervisor(settings, settings.workers, _worker_main)
    return asyncio.run(
        supervisor.run(settings.listen, settings.metrics_listen, settings.grace_period)
    )


def _worker_main(settings: Settings, slot: WorkerSlot, conn: Connection) -> None:
    """A worker process of ``serve --workers N`` (started by the supervisor, spawned)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the supervisor's SIGTERM drains
    # Multiprocess metrics keep a cleared gauge's samples until the worker exits (documented).
    warnings.filterwarnings("ignore", "Clearing labels has not been implemented", UserWarning)
    link = WorkerLink(slot, conn)
    try:
        asyncio.run(_serve_settings(settings, link))
    except GatewayError as exc:
        log.error("worker %d could not serve: %s: %s", slot.index, exc.reason, exc)
        link.failed(exc.reason, str(exc))
        sys.exit(1)


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
    add_database(p)
    p.add_argument(
        "--config", type=path_type, metavar="FILE", help="TOML file whose database to use"
    )
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
    p.set_defaults(func=cmd_serve, exit_status=serve_exit_status)

    p = sub.add_parser("demo", help="run a self-contained demonstration with 14 simulated partners")
    p.add_argument(
        "--keep", type=path_type, help="keep the demo's data directory here (new or empty)"
    )
    p.set_defaults(func=cmd_demo)
