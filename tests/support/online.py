"""A simulated online partner on a real HTTPS port, with the PKI both sides need.

Opens sockets: a test using :func:`partner_endpoint` is in the integration tier.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from gateway.online.config import OnlineSettings, PartnerSettings
from gateway.partner_sim import PartnerServer, PartnerSim, server_context
from gateway.pki import DevCA
from keys.crypto import Algorithm, PrivateKey
from keys.model import RegionKey
from support.clock import REAL_NOW

ISSUERS = {"110000": "bjhc", "500000": "cqjkm"}


@dataclass(frozen=True)
class Pki:
    """A CA, the partner's server certificate and the gateway's client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path) -> Pki:
    """A fresh development CA with one server and one client certificate (real time: TLS
    checks the certificates' validity against the real clock)."""
    now = REAL_NOW
    directory.mkdir(parents=True, exist_ok=True)
    ca = DevCA.create(directory, now)
    server_cert, server_key = ca.issue("partner", server=True, now=now)
    client_cert, client_key = ca.issue("online-client", uri="trustgw://gateway/370000", now=now)
    return Pki(ca.cert_path, server_cert, server_key, client_cert, client_key)


def sim_for(region: str, now: datetime) -> PartnerSim:
    """A simulated region with two Ed25519 signing keys (``kid`` and ``other_kid``)."""
    return PartnerSim(
        region=region,
        issuer=ISSUERS[region],
        key=PrivateKey.generate(Algorithm.EDDSA),
        kid=f"status-{region}-1",
        other_key=PrivateKey.generate(Algorithm.EDDSA),
        other_kid=f"status-{region}-2",
        clock=lambda: now,
    )


def sim_keys(
    sim: PartnerSim, now: datetime, *, other_revoked_at: datetime | None = None
) -> list[RegionKey]:
    """The registry's view of the simulated region's two keys."""
    window = (now - timedelta(days=30), now + timedelta(days=30))
    keys = [RegionKey(sim.region, sim.kid, sim.key.public_key(), *window)]
    if other_revoked_at is None:
        keys.append(RegionKey(sim.region, sim.other_kid, sim.other_key.public_key(), *window))
    else:
        from keys.model import KeyStatus

        keys.append(
            RegionKey(
                sim.region,
                sim.other_kid,
                sim.other_key.public_key(),
                *window,
                status=KeyStatus.REVOKED,
                revoked_at=other_revoked_at,
            )
        )
    return keys


def online_settings(
    pki: Pki, *partners: PartnerSettings, client_cert: bool = True
) -> OnlineSettings:
    return OnlineSettings(
        {p.region: p for p in partners},
        pki.client_cert if client_cert else None,
        pki.client_key if client_cert else None,
    )


@asynccontextmanager
async def partner_endpoint(
    sim: PartnerSim, pki: Pki, *, mtls: bool = True
) -> AsyncIterator[PartnerServer]:
    """The simulated region's HTTPS endpoint on a free loopback port."""
    context = server_context(
        str(pki.server_cert), str(pki.server_key), str(pki.ca) if mtls else None
    )
    server = PartnerServer(sim, context)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
