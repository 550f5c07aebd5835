"""The ``trustgw`` command: a testable ``main(argv)``.

Errors from the project reach the operator as one line (``trustgw: <reason>: <message>``) and a
non-zero exit; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

from keys.errors import ConfigurationError, ForeignDataError, GatewayError
from keys.keystore import KeyDirectory, passphrase_from_env
from keys.timeutil import parse_time, to_iso, utcnow

log = logging.getLogger("trustgw.cli")

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2


class UsageError(GatewayError):
    reason = "USAGE"
    default_message = "invalid usage"


def _data_dir(value: str) -> Path:
    return Path(value).expanduser().resolve()


def _time(value: str) -> Any:
    try:
        return parse_time(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not ISO 8601 (no offset = UTC) or unix seconds"
        ) from None


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True))


# --- init -------------------------------------------------------------------------------------


async def _init(data_dir: Path, dev: bool, now: Any) -> dict[str, Any]:
    from adapters.regions import REGION_SPECS
    from keys.model import Region
    from keys.store import SQLiteStore

    passphrase = passphrase_from_env()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    key_dir = data_dir / "keys"
    if key_dir.exists():
        raise ConfigurationError(f"{key_dir} already exists: this data directory is initialised")
    keys = KeyDirectory.create(key_dir, dev=dev, passphrase=passphrase, now=now)
    store = await SQLiteStore.open(data_dir / "trustgw.db")
    try:
        for spec in REGION_SPECS:
            await store.upsert_region(
                Region(code=spec.code, name=spec.name, mode=spec.mode, max_age=spec.max_age)
            )
    finally:
        await store.close()
    return {
        "data_dir": str(data_dir),
        "dev": keys.dev,
        "regions": len(REGION_SPECS),
        "keys": [{"role": k.role.value, "kid": k.kid} for k in keys.public_keys()],
    }


def cmd_init(opts: argparse.Namespace) -> int:
    result = asyncio.run(_init(opts.data_dir, opts.dev, utcnow()))
    if opts.json:
        _print_json(result)
    else:
        print(f"initialised {result['data_dir']}: {result['regions']} partner regions")
        for key in result["keys"]:
            print(f"  gateway {key['role']} key {key['kid']}")
        if result["dev"]:
            print("WARNING: development mode: the gateway's private keys are NOT encrypted")
    return EXIT_OK


# --- serve ------------------------------------------------------------------------------------


async def _serve(opts: argparse.Namespace) -> None:
    from gateway.server import Gateway, GatewayConfig, build_server

    config = GatewayConfig(
        data_dir=opts.data_dir, listen=opts.listen, passphrase=passphrase_from_env()
    )
    gateway = await Gateway.open(config)
    running = await build_server(gateway, config.listen)
    host = config.listen.rsplit(":", 1)[0]
    print(f"trustgw serving on {host}:{running.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down: draining for up to %ss", config.grace)
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal stops at once
            loop.add_signal_handler(sig, lambda: os._exit(130))
        await running.stop(config.grace)
    finally:
        await gateway.close()


def cmd_serve(opts: argparse.Namespace) -> int:
    asyncio.run(_serve(opts))
    return EXIT_OK


# --- demo -------------------------------------------------------------------------------------


def cmd_demo(opts: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return asyncio.run(run_demo(out=sys.stdout, keep=opts.keep))


# --- keys -------------------------------------------------------------------------------------


async def _registry_keys(data_dir: Path) -> list[Any]:
    from keys.store import SQLiteStore

    store = await SQLiteStore.open(data_dir / "trustgw.db")
    try:
        return await store.list_keys()
    finally:
        await store.close()


def cmd_keys_list(opts: argparse.Namespace) -> int:
    key_dir = KeyDirectory.open(opts.data_dir / "keys", passphrase=passphrase_from_env())
    rows: list[dict[str, Any]] = [
        {
            "owner": "gateway",
            "role": info.role.value,
            "kid": info.kid,
            "alg": str(info.public_key.alg),
            "not_before": to_iso(info.not_before),
            "not_after": to_iso(info.not_after),
            "status": info.status.value,
        }
        for info in key_dir.public_keys()
    ]
    for key in asyncio.run(_registry_keys(opts.data_dir)):
        rows.append(
            {
                "owner": key.region,
                "role": "code-signing",
                "kid": key.kid,
                "alg": str(key.alg),
                "not_before": to_iso(key.not_before),
                "not_after": to_iso(key.not_after),
                "status": key.status.value,
                **({"revoked_at": to_iso(key.revoked_at)} if key.revoked_at else {}),
            }
        )
    if opts.json:
        _print_json(rows)
        return EXIT_OK
    header = f"{'owner':8} {'role':13} {'kid':18} {'alg':6} {'not_before':20} {'not_after':20} status"
    print(header)
    for row in rows:
        print(
            f"{row['owner']:8} {row['role']:13} {row['kid'][:18]:18} {row['alg']:6} "
            f"{row['not_before']:20} {row['not_after']:20} {row['status']}"
        )
    return EXIT_OK


def _trust_from_key_dir(key_dir: KeyDirectory) -> Any:
    from gateway.tokens import GatewayTrust, TrustedKey
    from keys.model import HOME_REGION

    return GatewayTrust(
        HOME_REGION,
        tuple(
            TrustedKey(i.kid, i.role.value, i.public_key, i.not_before, i.not_after)
            for i in key_dir.public_keys()
        ),
    )


def cmd_keys_export(opts: argparse.Namespace) -> int:
    key_dir = KeyDirectory.open(opts.data_dir / "keys", passphrase=passphrase_from_env())
    text = json.dumps(_trust_from_key_dir(key_dir).to_json(), indent=2) + "\n"
    if opts.out:
        Path(opts.out).write_text(text)
        print(f"wrote the gateway's public keys to {opts.out}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


async def _keys_add(opts: argparse.Namespace) -> dict[str, Any]:
    from keys.crypto import load_public_key
    from keys.model import RegionKey
    from keys.registry import KeyRegistry
    from keys.store import SQLiteStore

    raw = Path(opts.public_key).read_bytes()
    material: Any = raw
    if raw.lstrip().startswith(b"{"):
        try:
            material = json.loads(raw)
        except ValueError:
            raise UsageError(f"{opts.public_key} is not valid JSON") from None
    public_key = load_public_key(material)
    kid = opts.kid or public_key.fingerprint()
    key = RegionKey(opts.region, kid, public_key, opts.not_before, opts.not_after)
    store = await SQLiteStore.open(opts.data_dir / "trustgw.db")
    try:
        inserted = await KeyRegistry(store).add_key(key)
    finally:
        await store.close()
    return {"region": key.region, "kid": kid, "alg": str(key.alg), "inserted": inserted}


def cmd_keys_add(opts: argparse.Namespace) -> int:
    result = asyncio.run(_keys_add(opts))
    if opts.json:
        _print_json(result)
    else:
        verb = "added" if result["inserted"] else "already present:"
        print(f"{verb} key {result['kid']} ({result['alg']}) for region {result['region']}")
    return EXIT_OK


async def _keys_revoke(opts: argparse.Namespace) -> Any:
    from keys.registry import KeyRegistry
    from keys.store import SQLiteStore

    store = await SQLiteStore.open(opts.data_dir / "trustgw.db")
    try:
        registry = KeyRegistry(store)
        await registry.load()
        return await registry.revoke_key(opts.region, opts.kid, opts.at or utcnow())
    finally:
        await store.close()


def cmd_keys_revoke(opts: argparse.Namespace) -> int:
    key = asyncio.run(_keys_revoke(opts))
    print(f"revoked key {key.kid} of region {key.region} from {to_iso(key.revoked_at)}")
    return EXIT_OK


# --- verify (offline) -------------------------------------------------------------------------


def _read_input(value: str) -> str:
    if value == "-":
        return sys.stdin.read(1024 * 1024)
    try:
        if len(value) < 4096 and Path(value).is_file():
            return Path(value).read_text()
    except OSError:  # not a usable file name: the value is the input itself
        pass
    return value


def cmd_verify(opts: argparse.Namespace) -> int:
    from gateway import tokens

    try:
        trust = tokens.GatewayTrust.from_json(Path(opts.trust).read_bytes())
        text = _read_input(opts.code)
    except OSError as exc:
        raise UsageError(f"cannot read input: {exc.strerror}: {exc.filename}") from None
    except ForeignDataError as exc:
        raise UsageError(f"{opts.trust}: {exc.message}") from None
    at = opts.at or utcnow()
    try:
        if opts.format == "attestation":
            claims = tokens.verify_attestation(tokens.Attestation.from_json(text), trust, at)
        else:
            claims = tokens.verify_home_code(text, trust, at)
    except ForeignDataError as exc:
        result = {"verdict": "reject", "reason": exc.reason, "detail": exc.message, "claims": {}}
    else:
        result = {"verdict": "accept", "reason": "OK", "detail": "signature and validity verified",
                  "claims": claims}
    if opts.json:
        print(json.dumps(result, ensure_ascii=False, sort_keys=True))
    else:
        print(f"{result['verdict']}: {result['reason']}: {result['detail']}")
        for name, value in sorted(result["claims"].items()):
            print(f"  {name}: {value}")
    return EXIT_OK if result["verdict"] == "accept" else EXIT_REJECTED


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trustgw", description="Interprovincial trust gateway for health pass codes."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def data_dir_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=_data_dir, required=True, help="the gateway's data directory")

    def json_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("init", help="create keys, database and the 14 partner regions")
    data_dir_arg(p)
    p.add_argument("--dev", action="store_true", help="development mode: keys NOT encrypted")
    json_arg(p)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("serve", help="run the gRPC gateway")
    data_dir_arg(p)
    p.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT (default %(default)s)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="run a self-contained demonstration with 14 simulated partners")
    p.add_argument("--keep", type=_data_dir, help="keep the demo's data directory here")
    p.set_defaults(func=cmd_demo)

    keys = sub.add_parser("keys", help="the gateway's keys and partners' signing keys")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = ksub.add_parser("list", help="list every key the gateway holds or trusts")
    data_dir_arg(p)
    json_arg(p)
    p.set_defaults(func=cmd_keys_list)
    p = ksub.add_parser("export", help="write the gateway's public keys (trust file for verifiers)")
    data_dir_arg(p)
    p.add_argument("--out", help="file to write (default: standard output)")
    p.set_defaults(func=cmd_keys_export)
    p = ksub.add_parser("add", help="register a partner region's code-signing key")
    data_dir_arg(p)
    p.add_argument("--region", required=True, help="6-digit region code")
    p.add_argument("--public-key", required=True, help="PEM, DER, JWK (JSON) or certificate file")
    p.add_argument("--kid", help="key id as the partner's codes name it (default: fingerprint)")
    p.add_argument("--not-before", type=_time, default=None, help="start of validity (default now)")
    p.add_argument("--not-after", type=_time, default=None, help="end of validity (default +1 year)")
    json_arg(p)
    p.set_defaults(func=cmd_keys_add)
    p = ksub.add_parser("revoke", help="revoke a partner's key from a compromise time")
    data_dir_arg(p)
    p.add_argument("--region", required=True)
    p.add_argument("--kid", required=True)
    p.add_argument("--at", type=_time, help="compromise time (default now)")
    p.set_defaults(func=cmd_keys_revoke)

    p = sub.add_parser(
        "verify",
        help="verify an attestation or a converted home-province code offline",
        description="Exit 0 when accepted, 1 when rejected, 2 on a usage or input-file error.",
    )
    p.add_argument("--format", required=True, choices=["attestation", "home"],
                   help="attestation: the JSON of an attestation; home: an SD1: code")
    p.add_argument("--trust", required=True, help="the gateway's public keys (trustgw keys export)")
    p.add_argument("--at", type=_time, help="verification time (default now)")
    json_arg(p)
    p.add_argument("code", help="the input text, a file, or - for standard input")
    p.set_defaults(func=cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        opts = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if opts.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if getattr(opts, "not_before", None) is None and hasattr(opts, "not_before"):
        opts.not_before = utcnow()
    if getattr(opts, "not_after", None) is None and hasattr(opts, "not_after"):
        opts.not_after = opts.not_before + timedelta(days=365)
    try:
        return int(opts.func(opts))
    except UsageError as exc:
        print(f"trustgw: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        if opts.verbose:
            log.exception("command failed")
        print(f"trustgw: {exc.reason}: {exc.message}", file=sys.stderr)
        return EXIT_REJECTED
    except OSError as exc:
        if opts.verbose:
            log.exception("command failed")
        print(f"trustgw: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_REJECTED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
