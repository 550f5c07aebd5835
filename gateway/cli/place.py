"""``trustgw place``: venues and their place codes (docs/operations.md, "Venues and place codes").

``add`` signs the venue's place code with the gateway's ``place`` key; ``qr`` writes it as a
printable QR image (PNG or SVG); ``disable`` stops recording visits there (a serving gateway
picks every change up at its next refresh); ``reissue`` signs the code again with the key that
signs now (after a rotation, before the old key's window ends).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from gateway.cli._common import (
    EXIT_OK,
    add_json,
    path_type,
    print_json,
    print_table,
    text_type,
    time_type,
)
from gateway.cli._keys import gateway_keys
from gateway.cli._store import OPERATOR, add_store_args, open_store
from keys.errors import ConfigurationError, UsageError
from keys.places import (
    MAX_ADDRESS_CHARS,
    MAX_NAME_CHARS,
    VENUE_CATEGORIES,
    VENUE_ID,
    Venue,
    check_division,
    check_venue_text,
    new_venue_id,
)
from keys.timeutil import to_iso, utcnow

QR_FORMATS = ("png", "svg")


def venue_json(venue: Venue) -> dict[str, Any]:
    """A venue as ``--json`` shows it, its place code included."""
    return {
        "id": venue.id,
        "name": venue.name,
        "division": venue.division,
        "category": venue.category,
        "address": venue.address,
        "enabled": venue.enabled,
        "place_code": venue.code,
        "kid": venue.kid,
        "created_at": to_iso(venue.created_at),
        "disabled_at": None if venue.disabled_at is None else to_iso(venue.disabled_at),
    }


def _venue_id(value: str) -> str:
    if VENUE_ID.fullmatch(value) is None:
        raise argparse.ArgumentTypeError(f"{value[:40]!r} is not a venue id (PL and 16 hex digits)")
    return value


def _division(value: str) -> str:
    try:
        return check_division(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def _sign(store: Any, opts: argparse.Namespace, venue_id: str, claims_of: Any) -> Any:
    """(place code, kid) of ``claims_of(venue_id)`` signed with the place key of now."""
    from gateway.places.code import issue_place_code
    from keys.keystore import KeyRole

    keys = await gateway_keys(store, opts.data_dir)
    now = opts.at or utcnow()
    try:
        info, key = keys.signer(KeyRole.PLACE, now)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{exc.message} (a keyring from before place codes has none: "
            "trustgw keys rotate --role place --activate-in 0s)"
        ) from None
    return issue_place_code(info, key, now, claims_of(venue_id)), info.kid


async def _add(opts: argparse.Namespace) -> Venue:
    from gateway.places.code import PlaceCodeClaims

    try:  # beyond text_type: NFC, and no format characters (a name is printed and signed)
        opts.name = check_venue_text(opts.name, "name", MAX_NAME_CHARS, required=True)
        opts.address = check_venue_text(
            opts.address or "", "address", MAX_ADDRESS_CHARS, required=False
        )
    except ValueError as exc:
        raise UsageError(f"place add: {exc}") from None
    now = opts.at or utcnow()
    async with open_store(opts) as store:
        venue_id = new_venue_id()
        code, kid = await _sign(
            store,
            opts,
            venue_id,
            lambda v: PlaceCodeClaims(v, opts.name, opts.division, opts.category),
        )
        venue = Venue(
            venue_id,
            opts.name,
            opts.division,
            opts.category,
            opts.address,
            True,
            code,
            kid,
            now,
        )
        return await store.add_venue(venue, actor=OPERATOR, now=now)


async def _reissue(opts: argparse.Namespace) -> Venue:
    from gateway.places.code import PlaceCodeClaims

    now = opts.at or utcnow()
    async with open_store(opts) as store:
        venue = await store.get_venue(opts.venue)
        code, kid = await _sign(
            store,
            opts,
            venue.id,
            lambda v: PlaceCodeClaims(v, venue.name, venue.division, venue.category),
        )
        return await store.set_venue_code(venue.id, code, kid, actor=OPERATOR, now=now)


async def _set_enabled(opts: argparse.Namespace, enabled: bool) -> Venue:
    async with open_store(opts) as store:
        return await store.set_venue_enabled(
            opts.venue, enabled, actor=OPERATOR, now=opts.at or utcnow()
        )


async def _get(opts: argparse.Namespace) -> Venue:
    async with open_store(opts) as store:
        return await store.get_venue(opts.venue)


async def _list(opts: argparse.Namespace) -> list[Venue]:
    async with open_store(opts) as store:
        venues = await store.list_venues(include_disabled=opts.all)
    if opts.division:
        venues = [v for v in venues if v.division == opts.division]
    return venues


def _show(venue: Venue, opts: argparse.Namespace, verb: str = "") -> int:
    if opts.json:
        print_json(venue_json(venue))
        return EXIT_OK
    if verb:
        print(f"venue {venue.id} {verb}")
    for name, value in (
        ("id", venue.id),
        ("name", venue.name),
        ("division", venue.division),
        ("category", venue.category),
        ("address", venue.address),
        ("enabled", "yes" if venue.enabled else f"no (since {_since(venue)})"),
        ("place key", venue.kid),
        ("place code", venue.code),
    ):
        print(f"  {name:11} {value}")
    return EXIT_OK


def _since(venue: Venue) -> str:
    return "?" if venue.disabled_at is None else to_iso(venue.disabled_at)


def cmd_add(opts: argparse.Namespace) -> int:
    return _show(asyncio.run(_add(opts)), opts, "added")


def cmd_show(opts: argparse.Namespace) -> int:
    return _show(asyncio.run(_get(opts)), opts)


def cmd_disable(opts: argparse.Namespace) -> int:
    return _show(asyncio.run(_set_enabled(opts, False)), opts, "disabled")


def cmd_enable(opts: argparse.Namespace) -> int:
    return _show(asyncio.run(_set_enabled(opts, True)), opts, "enabled")


def cmd_reissue(opts: argparse.Namespace) -> int:
    return _show(asyncio.run(_reissue(opts)), opts, "re-issued")


def cmd_list(opts: argparse.Namespace) -> int:
    venues = asyncio.run(_list(opts))
    if opts.json:
        print_json([venue_json(v) for v in venues])
        return EXIT_OK
    if not venues:
        print("no venues")
        return EXIT_OK
    print_table(
        ("id", "division", "category", "enabled", "name"),
        [(v.id, v.division, v.category, "yes" if v.enabled else "no", v.name) for v in venues],
    )
    return EXIT_OK


def qr_image(code: str, fmt: str) -> bytes:
    """The QR image of a place code (PNG or SVG), as the stock codes' (error correction M)."""
    from gateway.stock.output import qr_image as image

    return image(code, fmt)


def _write(path: Path, data: bytes) -> None:
    """``data`` at ``path``, replaced atomically (a place code is public: mode 0644)."""
    directory = path.parent
    if not directory.is_dir():
        raise UsageError(f"--out: {directory} is not a directory")
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def cmd_qr(opts: argparse.Namespace) -> int:
    fmt = opts.format or opts.out.suffix.lower().lstrip(".")
    if fmt not in QR_FORMATS:
        raise UsageError("say --format png or svg (the --out extension does not)")
    venue = asyncio.run(_get(opts))
    if not venue.enabled:
        print(
            f"trustgw: note: venue {venue.id} is disabled: its scans record no visit until "
            "trustgw place enable",
            file=sys.stderr,
        )
    data = qr_image(venue.code, fmt)
    _write(opts.out, data)
    if opts.json:
        print_json({"venue": venue.id, "out": str(opts.out), "format": fmt, "bytes": len(data)})
    else:
        print(f"QR image of venue {venue.id}'s place code written to {opts.out} ({fmt})")
    return EXIT_OK


def register(sub: Any) -> None:
    place = sub.add_parser("place", help="venues and their place codes (场所码)")
    psub = place.add_subparsers(dest="place_command", metavar="ACTION", required=True)

    p = psub.add_parser("add", help="add a venue and sign its place code")
    add_store_args(p)
    p.add_argument("--name", required=True, type=text_type(MAX_NAME_CHARS), help="the venue's name")
    p.add_argument(
        "--division",
        required=True,
        type=_division,
        metavar="CODE",
        help="the district's 6-digit division code (GB/T 2260, 37xxxx), e.g. 370102",
    )
    p.add_argument("--category", required=True, choices=VENUE_CATEGORIES)
    p.add_argument(
        "--address",
        type=text_type(MAX_ADDRESS_CHARS),
        help="the street address (optional)",
    )
    p.add_argument("--at", type=time_type, help=argparse.SUPPRESS)
    add_json(p)
    p.set_defaults(func=cmd_add)

    p = psub.add_parser("list", help="the venues (enabled ones; --all: also disabled)")
    add_store_args(p)
    p.add_argument("--all", action="store_true", help="also the disabled venues")
    p.add_argument("--division", type=_division, metavar="CODE", help="only this district")
    add_json(p)
    p.set_defaults(func=cmd_list)

    for name, func, text in (
        ("show", cmd_show, "a venue and its place code"),
        ("disable", cmd_disable, "stop recording visits at a venue"),
        ("enable", cmd_enable, "record visits at a disabled venue again"),
        ("reissue", cmd_reissue, "sign a venue's place code again with the current place key"),
    ):
        p = psub.add_parser(name, help=text)
        add_store_args(p)
        p.add_argument("venue", type=_venue_id, metavar="ID")
        p.add_argument("--at", type=time_type, help=argparse.SUPPRESS)
        add_json(p)
        p.set_defaults(func=func)

    p = psub.add_parser("qr", help="write a venue's place code as a printable QR image")
    add_store_args(p)
    p.add_argument("venue", type=_venue_id, metavar="ID")
    p.add_argument("--format", choices=QR_FORMATS, help="png or svg (default: from --out)")
    p.add_argument("--out", required=True, type=path_type, metavar="FILE", help="the image file")
    add_json(p)
    p.set_defaults(func=cmd_qr)
