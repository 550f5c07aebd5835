"""A fresh data directory and an in-process recogniser at explicit times, for the tests of what
the gateway signs (tests/test_signed_outputs.py, tests/test_signed_properties.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from support.clock import T0

from adapters.simulator import PartnerSimulator
from gateway import tokens
from gateway.claims import AttestationClaims, HomeCodeClaims, PartnerSource
from gateway.engine import Conversions, Recogniser
from keys.keystore import GatewayKeys, KeyDirectory, KeyRole
from keys.model import Region
from keys.pseudonym import Pseudonymiser
from keys.records import SubmissionKind, SubmissionResult
from keys.registry import KeyRegistry
from keys.store import SQLiteStore
from keys.timeutil import to_unix
from tests.support.keyring import open_stored_keys


async def fresh_data_dir(data_dir: Path, simulator: PartnerSimulator, init_at: datetime) -> Path:
    """A data directory as ``trustgw init`` leaves it at ``init_at`` (the gateway's keys valid
    from exactly then), with the simulated partners' keys valid from 30 days before."""
    data_dir.mkdir(parents=True, exist_ok=True)
    KeyDirectory.create(data_dir / "keys", dev=True, passphrase=None, now=init_at)
    store = await SQLiteStore.open(data_dir / "trustgw.db")
    try:
        registry = KeyRegistry(store)
        for issuer in simulator.issuers():
            spec = issuer.spec
            await registry.add_region(Region(spec.code, spec.name, spec.mode, spec.max_age))
            await registry.add_key(
                issuer.region_key(init_at - timedelta(days=30), init_at + timedelta(days=365))
            )
    finally:
        await store.close()
    return data_dir


@dataclass
class Engine:
    """A recogniser over a data directory (the key directory re-read on each :meth:`open`)."""

    store: SQLiteStore
    registry: KeyRegistry
    keys: GatewayKeys
    conversions: Conversions
    recogniser: Recogniser

    def trust(self) -> tokens.GatewayTrust:
        """What ``trustgw keys export`` writes, now."""
        return tokens.GatewayTrust.from_key_infos(self.keys.public_keys(), now=T0)


@asynccontextmanager
async def engine(data_dir: Path) -> AsyncIterator[Engine]:
    store = await SQLiteStore.open(data_dir / "trustgw.db")
    registry = KeyRegistry(store)
    await registry.load()
    keys = await open_stored_keys(data_dir)
    conversions = Conversions(store)
    conversions.start()
    recogniser = Recogniser(
        lambda: registry.snapshot, keys, Pseudonymiser(keys.pseudonym_secret()), conversions
    )
    try:
        yield Engine(store, registry, keys, conversions, recogniser)
    finally:
        await conversions.stop()
        await store.close()


# --- one signed output of each kind, signed and verified as the gateway does ---------------------

KINDS = ["attestation", "home", "receipt"]
ROLES = {"attestation": KeyRole.ATTEST, "home": KeyRole.ISSUE, "receipt": KeyRole.ATTEST}
# The limit each kind of output states beside its key's not_after (see sign()): an attestation
# at most a day, a home code its source code's expiry (three days here), a receipt none.
LIMITS = {
    "attestation": timedelta(days=1),
    "home": timedelta(days=3),
    "receipt": timedelta(days=100_000),
}
RESULT = SubmissionResult(
    SubmissionKind.KEYSET,
    "110000",
    "ab" * 32,
    datetime.fromtimestamp(1_773_216_000, UTC),
    version=2,
)


# What the engine would sign for a green code of region 230000 (the window is set on signing).
ATTESTATION = AttestationClaims(
    region="230000",
    mode="show",
    holder="h1-x",
    colour="green",
    code_id="c1",
    code_kid="K1",
    code_iat=1,
    code_exp=2**31,
)
HOME = HomeCodeClaims(id="SDx", holder="h1-x", colour="green", src=PartnerSource("230000"))


def sign(kind: str, keys: KeyDirectory, at: datetime) -> tuple[Any, int, int]:
    """Sign one output of ``kind`` at ``at`` with the key the directory hands out for it, the
    way the engine and the partner service do: (output, iat, exp)."""
    info, key = keys.signer(ROLES[kind], at)
    if kind == "attestation":
        att, _ = tokens.attest(info, key, at, ATTESTATION, until=at + LIMITS[kind])
        return att, *_window(att.payload)
    if kind == "home":
        claims = replace(HOME, src_iat=to_unix(at - timedelta(hours=1)))
        code, _ = tokens.issue_home_code(info, key, at, claims, until=at + LIMITS[kind])
        body = code[len(tokens.HOME_CODE_PREFIX) :].partition(".")[0]
        return code, *_window(tokens.b64url_decode(body))
    att = tokens.sign_receipt(info, key, at, RESULT)
    return att, *_window(att.payload)


def _window(payload: bytes) -> tuple[int, int]:
    claims = json.loads(payload)
    return claims["iat"], claims["exp"]


def verify(kind: str, output: Any, trust: tokens.GatewayTrust, at: datetime) -> dict[str, Any]:
    """The documented offline verifier of ``kind``."""
    if kind == "attestation":
        return tokens.verify_attestation(output, trust, at)
    if kind == "home":
        return tokens.verify_home_code(output, trust, at)
    return tokens.verify_receipt(output, trust, at)
