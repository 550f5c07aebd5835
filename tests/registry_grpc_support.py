"""Shared set-up for the trust-registry gRPC tests: a dev PKI, partners, stubs, error reasons."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from support.clock import REAL_NOW
from support.codes import CodeFactory

from adapters.base import RegionSpec
from adapters.regions import REGION_SPECS
from adapters.simulator import PartnerIssuer
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.api.v1 import registry_pb2 as rpb
from gateway.api.v1 import registry_pb2_grpc as rpb_grpc
from gateway.pki import DevCA, TlsFiles
from gateway.sdk.channel import aio_channel
from keys.model import Mode, Region
from keys.partner import AnchorKeys, PartnerSigner, signing_key
from keys.statements import KeySetKey

NOW = REAL_NOW  # a serving gateway reads the real clock
DAY = timedelta(days=1)
SHOW = next(s for s in REGION_SPECS if s.mode is Mode.SHOW)
OTHER = next(s for s in REGION_SPECS if s.mode is Mode.SHOW and s.code != SHOW.code)


def make_pki(directory: Path, now: datetime = NOW) -> dict[str, TlsFiles]:
    """Server, verifier, operator and two partners' certificates from one development CA."""
    ca = DevCA.create(directory, now)
    files = {"server": TlsFiles(*ca.issue("server", server=True, now=now), ca.cert_path)}
    for name, uri in [
        ("verifier", "trustgw://verifier/checkpoint-7"),
        ("operator", "trustgw://operator/ops"),
        ("partner", f"trustgw://partner/{SHOW.code}"),
        ("other", f"trustgw://partner/{OTHER.code}"),
    ]:
        files[name] = TlsFiles(*ca.issue(name, uri=uri, now=now), ca.cert_path)
    return files


def partner_for(spec: RegionSpec) -> PartnerSigner:
    """A partner with anchors for one of the simulated regions (same name, mode, max age)."""
    region = Region(spec.code, spec.name, spec.mode, spec.max_age)
    return PartnerSigner(region, AnchorKeys.generate(3, 2, prefix=f"{spec.code}-a"))


def listed(issuer: PartnerIssuer, start: datetime = NOW - 30 * DAY) -> KeySetKey:
    """An issuer's key as a key set lists it."""
    return KeySetKey(issuer.kid, issuer.key.public_key(), start, start + 365 * DAY)


def new_issuer(spec: RegionSpec, kid: str) -> PartnerIssuer:
    """A fresh code-signing key for a region, as a simulated issuer."""
    _, private = signing_key(kid, NOW - 30 * DAY, NOW + 365 * DAY, alg=spec.signing_alg)
    return PartnerIssuer(spec, private, kid)


def factory(issuer: PartnerIssuer, seed: int = 3) -> CodeFactory:
    return CodeFactory(issuer, NOW, random.Random(seed))


@dataclass
class Client:
    """Stubs over one channel."""

    channel: grpc.aio.Channel
    partner: rpb_grpc.PartnerServiceStub
    trustlist: rpb_grpc.TrustListServiceStub
    recognition: pb_grpc.RecognitionServiceStub

    async def recognise(self, code: str) -> pb.RecogniseResponse:
        return await self.recognition.Recognise(pb.RecogniseRequest(code=code), timeout=10)

    async def publish(self, envelope: bytes) -> rpb.SubmissionReceipt:
        return await self.partner.PublishKeySet(
            rpb.SubmissionRequest(submission=envelope), timeout=10
        )

    async def close(self) -> None:
        await self.channel.close()


def client(port: int, tls: TlsFiles | None) -> Client:
    channel = aio_channel(f"localhost:{port}", tls)
    return Client(
        channel,
        rpb_grpc.PartnerServiceStub(channel),
        rpb_grpc.TrustListServiceStub(channel),
        pb_grpc.RecognitionServiceStub(channel),
    )


def error_reason(error: Any) -> tuple[grpc.StatusCode, str]:
    """(status code, ErrorInfo reason) of a failed call."""
    assert isinstance(error, grpc.aio.AioRpcError), error
    status = rpc_status.from_call(error)
    assert status is not None, error
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.domain == "trustgw.gateway"
    return error.code(), info.reason
