"""Issue 8, "How it will be checked": an issuer and a checkpoint written from the docs alone.

The issuer (doc_issuer.py, from docs/partners.md) makes codes of all 14 regions with keys of its
own; the operator registers them with ``trustgw keys add`` as partners.md §8 shows; a real
``trustgw serve`` over mutual TLS decides on them (public gRPC stubs only); the checkpoint
(doc_checkpoint.py, from docs/verifying.md) verifies every attestation and home code offline at
the first and last second of its stated validity and refuses it one second outside — and so do
the two documented verifiers, ``gateway.tokens`` and ``trustgw verify``. The second test does
it across ``keys rotate --role issue`` and ``--role attest`` while calls are in flight.

Everything runs as a user would run it: the commands as subprocesses, the server as a process.
The server reads the real clock, so codes are issued relative to it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import pytest
from doc_checkpoint import (
    Refused,
    TrustFile,
    is_home_code_id,
    verify_attestation,
    verify_home_code,
    verify_trust_list,
)
from doc_issuer import (
    REGIONS,
    Forger,
    Holder,
    Region,
    SigningKey,
    expected_code_id,
    id_number,
    issue,
    now_utc,
)
from google.protobuf import json_format

from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.api.v1 import registry_pb2 as rpb
from gateway.api.v1 import registry_pb2_grpc as rpb_grpc

pytestmark = [
    pytest.mark.slow,
    pytest.mark.doc(
        'partners.md "Partner code formats"',
        "partners.md §1.1",
        "partners.md §1.4",
        "partners.md §1.6",
        "partners.md §2",
        "partners.md §3",
        "partners.md §4",
        "partners.md §5",
        'partners.md "110000 Beijing"',
        'partners.md "230000 Heilongjiang"',
        'partners.md "340000 Anhui"',
        'partners.md "500000 Chongqing"',
        'partners.md "650000 Xinjiang"',
        'partners.md "120000 Tianjin"',
        'partners.md "310000 Shanghai"',
        'partners.md "410000 Henan"',
        'partners.md "510000 Sichuan"',
        'partners.md "630000 Qinghai"',
        'partners.md "130000 Hebei"',
        'partners.md "330000 Zhejiang"',
        'partners.md "440000 Guangdong"',
        'partners.md "520000 Guizhou"',
        "partners.md §8",
        'verifying.md "The trust file"',
        'verifying.md "When a signed output is valid"',
        'verifying.md "Attestation format"',
        'verifying.md "Home-province code format"',
        'verifying.md "Keys and rotation"',
        'verifying.md "Command"',
        'verifying.md "Input forms"',
        "trust-registry.md §9",
        'api.md "Recognise"',
        'api.md "RecogniseStream"',
        'api.md "GetGatewayKeys"',
        'api.md "Messages"',
        'api.md "Decisions"',
    ),
]

TRUSTGW = str(Path(sys.executable).with_name("trustgw"))
HOUR = timedelta(hours=1)
# partners.md §5, column "max age"
MAX_AGE = {
    "110000": 24,
    "120000": 48,
    "130000": 72,
    "230000": 72,
    "310000": 24,
    "330000": 48,
    "340000": 72,
    "410000": 72,
    "440000": 24,
    "500000": 48,
    "510000": 48,
    "520000": 168,
    "630000": 120,
    "650000": 168,
}
COLOUR = {"green": pb.COLOUR_GREEN, "yellow": pb.COLOUR_YELLOW, "red": pb.COLOUR_RED}
MODE = {"show": pb.MODE_SHOW, "convert": pb.MODE_CONVERT}


def trustgw(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTGW_")}
    done = subprocess.run(  # noqa: S603 - our own command line
        [TRUSTGW, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"trustgw {' '.join(args)}: {done.returncode}\n{done.stderr}")
    return done


async def atrustgw(*args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTGW_")}
    process = await asyncio.create_subprocess_exec(
        TRUSTGW, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    assert process.returncode == 0, (args, err.decode())


def cst(t: datetime) -> str:
    """An operator's time in China Standard Time, with its offset (partners.md §8)."""
    return t.astimezone(timezone(timedelta(hours=8))).isoformat()


@dataclass
class Partner:
    region: Region
    key: SigningKey
    stranger: SigningKey  # same algorithm, never registered: KEY_UNKNOWN
    serial: int = 0

    def holder(self, colour: str, issued: datetime, ttl: timedelta) -> Holder:
        self.serial += 1
        serial = int(self.region.code[:2]) * 1000 + self.serial
        raw_id = f"{serial:016x}"
        return Holder(id_number(serial), "王伟", colour, issued, issued + ttl, raw_id)


@dataclass
class Gateway:
    data_dir: Path
    port: int
    process: subprocess.Popen[str]
    partners: dict[str, Partner]
    creds: grpc.ChannelCredentials
    started: datetime

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(f"localhost:{self.port}", self.creds)

    def trust_file(self, name: str) -> Path:
        out = self.data_dir.parent / name
        trustgw("keys", "export", "--data-dir", str(self.data_dir), "--out", str(out))
        return out


@pytest.fixture
def gateway(tmp_path: Path, request: pytest.FixtureRequest):
    """A fresh gateway made with the documented commands, serving over mTLS on a free port;
    its own keys of ``--gateway-algorithm`` (EdDSA unless the test parametrises it)."""
    data_dir = tmp_path / "gw"
    algorithm = getattr(request, "param", "EdDSA")
    trustgw("init", "--data-dir", str(data_dir), "--dev", "--gateway-algorithm", algorithm)
    started = now_utc()
    partners = {}
    for code, region in REGIONS.items():
        key = SigningKey.generate(region.alg, f"doc-{code}-2026")
        partner = Partner(region, key, SigningKey.generate(region.alg, f"doc-{code}-other"))
        jwk = tmp_path / f"{code}.jwk"
        jwk.write_text(json.dumps(key.public_jwk()))
        # partners.md §8, with a window that covers codes issued up to a week before now
        trustgw(
            "keys",
            "add",
            "--data-dir",
            str(data_dir),
            "--region",
            code,
            "--public-key",
            str(jwk),
            "--kid",
            key.kid,
            "--not-before",
            cst(started - timedelta(days=10)),
            "--not-after",
            cst(started + timedelta(days=60)),
        )
        partners[code] = partner
    trustgw("pki", "issue", "--data-dir", str(data_dir), "--role", "verifier", "--name", "doc-cp")
    pki = data_dir / "pki"
    creds = grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(),
        (pki / "verifier-doc-cp.key").read_bytes(),
        (pki / "verifier-doc-cp.pem").read_bytes(),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTGW_")}
    process = subprocess.Popen(  # noqa: S603
        [
            TRUSTGW,
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            "127.0.0.1:0",
            "--refresh-interval",
            "0.1",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        port = None
        for line in process.stdout:  # the one line `serve` prints once it listens
            match = re.search(r"serving on [\d.]+:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        assert port, "trustgw serve did not say where it listens"
        yield Gateway(data_dir, port, process, partners, creds, started)
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0  # api.md "Shutdown": SIGTERM drains and exits 0


# --- what the checkpoint checks -------------------------------------------------------------------


@dataclass
class Outputs:
    """Every recognised green code's response, with the holder it was issued for."""

    responses: list[tuple[Partner, Holder, pb.RecogniseResponse]] = field(default_factory=list)


def check_decision(partner: Partner, holder: Holder, reply: pb.RecogniseResponse) -> None:
    """api.md "Messages" and "Decisions" for a recognised code, and the claims of
    verifying.md "Attestation format" / "Home-province code format" that need no key."""
    region = partner.region
    assert reply.recognised and reply.reason == "RECOGNISED", (region.code, reply)
    assert reply.region == region.code
    assert reply.mode == MODE[region.mode] and reply.colour == pb.COLOUR_GREEN
    claims = json.loads(reply.attestation.payload)
    code_id = expected_code_id(region, holder)
    assert claims["region"] == region.code and claims["mode"] == region.mode
    assert claims["colour"] == "green"
    assert claims["code_id"] == code_id, "partners.md §1.6 (derived) or the code's own id"
    assert claims["code_kid"] == partner.key.kid
    assert claims["code_iat"] == int(holder.issued_at.timestamp())
    assert claims["code_exp"] == int(holder.expires_at.timestamp())
    assert claims["holder"].startswith(
        "h1-"
    ) and holder.idno not in reply.SerializeToString().decode("latin-1")
    # the gateway's keys are valid for a year: their not_after is never the earliest limit here
    assert claims["exp"] == min(claims["code_exp"], claims["iat"] + 86400)
    assert reply.valid_until == claims["exp"]  # api.md: the code's expiry, at most 24 h on
    if region.mode == "show":
        assert not reply.HasField("converted") and "converted_code_id" not in claims
        return
    converted = reply.converted
    home = home_claims(converted.code)
    assert is_home_code_id(home["id"]) and home["id"] == converted.code_id
    assert claims["converted_code_id"] == home["id"]
    assert home["src"] == {"region": region.code}  # verifying.md: not the code id itself
    assert home["src_iat"] == claims["code_iat"]
    assert home["holder"] == claims["holder"] and home["colour"] == "green"
    assert home["kid"] == converted.key_id and home["exp"] == converted.expires_at
    assert home["exp"] == claims["code_exp"]  # the source's expiry (the key outlives it)
    assert home["iat"] >= claims["code_iat"]


def _b64url(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_all_offline(trust_path: Path, outputs: Outputs, cli_sample: int) -> int:
    """Every output through the page's checkpoint and ``gateway.tokens`` at its first and last
    second and one second outside; ``cli_sample`` replies through ``trustgw verify`` too (as
    grpcurl prints them). Returns the number of signed outputs checked."""
    from gateway.tokens import Attestation, GatewayTrust
    from gateway.tokens import verify_attestation as gw_verify_attestation
    from gateway.tokens import verify_home_code as gw_verify_home_code
    from keys.errors import ForeignDataError

    trust = TrustFile.from_json(trust_path.read_bytes())
    documented = GatewayTrust.from_json(trust_path.read_bytes())

    def at(t: int) -> datetime:
        return datetime.fromtimestamp(t, UTC)

    checked = 0
    for index, (_partner, _holder, reply) in enumerate(outputs.responses):
        a = reply.attestation
        signed: list[tuple[str, dict[str, Any], Callable[[int], Any], Callable[[int], Any]]] = [
            (
                "attestation",
                json.loads(a.payload),
                lambda t, a=a: verify_attestation(
                    trust, a.payload, a.key_id, a.alg, a.signature, t
                ),
                lambda t, a=a: gw_verify_attestation(
                    Attestation(payload=a.payload, kid=a.key_id, alg=a.alg, signature=a.signature),
                    documented,
                    at(t),
                ),
            )
        ]
        if reply.HasField("converted"):
            code = reply.converted.code
            signed.append(
                (
                    "home",
                    home_claims(code),
                    lambda t, c=code: verify_home_code(trust, c, t),
                    lambda t, c=code: gw_verify_home_code(c, documented, at(t)),
                )
            )
        for kind, claims, mine, theirs in signed:
            iat, exp = claims["iat"], claims["exp"]
            for t in (iat, exp):
                assert mine(t) == claims
                theirs(t)
            for t, reason in ((iat - 1, "CODE_NOT_YET_VALID"), (exp + 1, "CODE_EXPIRED")):
                with pytest.raises(Refused) as refused:
                    mine(t)
                assert refused.value.reason == reason
                with pytest.raises(ForeignDataError) as error:
                    theirs(t)
                assert error.value.reason == reason
            if index < cli_sample:
                cli_verify(trust_path, kind, reply, iat, exp)
            checked += 1
    return checked


def home_claims(code: str) -> dict[str, Any]:
    return json.loads(_b64url(code[4:].split(".")[0]))


def cli_verify(
    trust_path: Path, kind: str, reply: pb.RecogniseResponse, iat: int, exp: int
) -> None:
    """verifying.md "Command" and "Input forms": the whole reply as proto3 JSON (grpcurl)."""
    reply_file = trust_path.parent / f"reply-{reply.request_id or 'x'}-{kind}.json"
    reply_file.write_text(json_format.MessageToJson(reply))
    for at, verdict, exit_code in (
        (iat, "accept", 0),
        (exp, "accept", 0),
        (exp + 1, "reject", 1),
        (iat - 1, "reject", 1),
    ):
        done = trustgw(
            "verify",
            "--format",
            kind,
            "--trust",
            str(trust_path),
            "--at",
            str(at),
            "--json",
            str(reply_file),
            check=False,
        )
        assert done.returncode == exit_code, (kind, at, done.stdout, done.stderr)
        assert json.loads(done.stdout)["verdict"] == verdict


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    "gateway",
    [pytest.param("EdDSA", id="gateway-EdDSA"), pytest.param("SM2", id="gateway-SM2")],
    indirect=True,
)
def test_every_region_decides_as_documented_and_every_signed_output_verifies_offline(
    gateway: Gateway,
) -> None:
    """All 14 regions on a fresh gateway, unary and streamed: green (issued before ``init`` too,
    and with white space around it), yellow, red, expired, too old, forged and an unknown key;
    once with the gateway's own keys EdDSA and once SM2 (docs/verifying.md, "Algorithms")."""
    now = now_utc()
    cases: list[
        tuple[Partner, Holder | None, str, str, str]
    ] = []  # partner, holder, code, reason, colour
    for partner in gateway.partners.values():
        region, key = partner.region, partner.key
        ttl = 20 * HOUR
        green_before_init = partner.holder("green", gateway.started - 2 * HOUR, ttl)
        green = partner.holder("green", now - 10 * timedelta(minutes=1), ttl)
        for holder, text, reason, colour in [
            (green_before_init, None, "RECOGNISED", "green"),
            (green, "  {}\n", "RECOGNISED", "green"),  # partners.md §1.1: white space around
            (partner.holder("yellow", now - HOUR, ttl), None, "NOT_GREEN", "yellow"),
            (partner.holder("red", now - HOUR, ttl), None, "NOT_GREEN", "red"),
            (partner.holder("green", now - 30 * HOUR, 29 * HOUR), None, "CODE_EXPIRED", "green"),
            (
                partner.holder("green", now - (MAX_AGE[region.code] + 1) * HOUR, 1000 * HOUR),
                None,
                "CODE_TOO_OLD",
                "green",
            ),
        ]:
            code = issue(region, key, holder)
            cases.append((partner, holder, (text or "{}").format(code), reason, colour))
        other = partner.holder("green", now - HOUR, ttl)
        cases.append((partner, None, issue(region, Forger.of(key), other), "SIGNATURE_INVALID", ""))
        cases.append((partner, None, issue(region, partner.stranger, other), "KEY_UNKNOWN", ""))
    cases.append((partner, None, "ZZ9:" + "A" * 40, "REGION_UNKNOWN", ""))

    async def scenario() -> tuple[list[pb.RecogniseResponse], list[pb.RecogniseResponse], Any]:
        async with gateway.channel() as channel:
            stub = pb_grpc.RecognitionServiceStub(channel)
            unary = [
                await stub.Recognise(pb.RecogniseRequest(request_id=f"u{i}", code=c[2]), timeout=10)
                for i, c in enumerate(cases)
            ]
            requests = [
                pb.RecogniseRequest(request_id=f"s{i}", code=c[2]) for i, c in enumerate(cases)
            ]
            streamed = [r async for r in stub.RecogniseStream(iter(requests), timeout=60)]
            keys = await stub.GetGatewayKeys(pb.GetGatewayKeysRequest(), timeout=10)
            return unary, streamed, keys

    unary, streamed, served_keys = asyncio.run(scenario())
    assert [r.request_id for r in streamed] == [f"s{i}" for i in range(len(cases))]
    outputs = Outputs()
    for (partner, holder, code, reason, colour), one, again in zip(
        cases, unary, streamed, strict=True
    ):
        for reply in (one, again):
            assert reply.reason == reason, (
                partner.region.code,
                code[:40],
                reply.reason,
                reply.message,
            )
            assert reply.message
            if reason == "REGION_UNKNOWN":
                continue
            assert reply.region == partner.region.code
            assert reply.mode == MODE[partner.region.mode]
            # api.md "Decisions": the colour whenever the code verified, else unspecified
            assert reply.colour == (COLOUR[colour] if colour else pb.COLOUR_UNSPECIFIED)
            if reason == "RECOGNISED":
                assert holder is not None
                check_decision(partner, holder, reply)
                outputs.responses.append((partner, holder, reply))
            else:
                assert not reply.HasField("attestation") and not reply.HasField("converted")
        if reason == "RECOGNISED" and partner.region.mode == "convert":
            # api.md "Recognise": the same source code gives the same converted code
            assert one.converted.code == again.converted.code

    trust_path = gateway.trust_file("trustgw-keys.json")
    exported = json.loads(trust_path.read_text())
    # api.md "GetGatewayKeys": the same content as `trustgw keys export`
    assert sorted(
        (k.key_id, k.role, k.not_before, k.not_after, k.status) for k in served_keys.keys
    ) == sorted(
        (k["kid"], k["role"], k["not_before"], k["not_after"], k.get("status", "active"))
        for k in exported["keys"]
    )
    assert len(outputs.responses) == 2 * 2 * 14
    checked = verify_all_offline(trust_path, outputs, cli_sample=6)
    assert checked == 2 * 2 * (14 + 7)


@pytest.mark.integration
def test_outputs_signed_across_issue_and_attest_rotations_under_load_verify_offline(
    gateway: Gateway,
) -> None:
    """verifying.md "Keys and rotation": rotations while calls are in flight (unary and a
    stream); every output verifies with the keys published after it, and those signed before
    a rotation verify with the trust file exported before it."""
    before = TrustFile.from_json(gateway.trust_file("before.json").read_bytes())
    old_attest = next(kid for kid, role in before.keys if role == "attest")
    old_issue = next(kid for kid, role in before.keys if role == "issue")
    partners = list(gateway.partners.values())

    async def scenario() -> Outputs:
        outputs = Outputs()
        stop = asyncio.Event()
        seen_kids: set[str] = set()
        changed = asyncio.Event()

        def record(partner: Partner, holder: Holder, reply: pb.RecogniseResponse) -> None:
            check_decision(partner, holder, reply)
            outputs.responses.append((partner, holder, reply))
            seen_kids.add(reply.attestation.key_id)
            if reply.HasField("converted"):
                seen_kids.add(reply.converted.key_id)
            changed.set()

        def fresh(n: int) -> tuple[Partner, Holder, str]:
            partner = partners[n % len(partners)]
            # issued before the rotations, some long before (partners.md §5 max ages)
            age = timedelta(minutes=5 + (n * 37) % (60 * 20))
            holder = partner.holder("green", now_utc() - age, age + 20 * HOUR)
            return partner, holder, issue(partner.region, partner.key, holder)

        async def unary_worker(stub: pb_grpc.RecognitionServiceStub, start: int) -> None:
            n = start
            while not stop.is_set():
                partner, holder, code = fresh(n)
                n += 4
                reply = await stub.Recognise(
                    pb.RecogniseRequest(request_id=f"w{n}", code=code), timeout=10
                )
                record(partner, holder, reply)

        async def stream_worker(stub: pb_grpc.RecognitionServiceStub) -> None:
            sent: asyncio.Queue[tuple[Partner, Holder]] = asyncio.Queue()

            async def requests():
                n = 1_000_000
                while not stop.is_set():
                    partner, holder, code = fresh(n)
                    n += 1
                    await sent.put((partner, holder))
                    yield pb.RecogniseRequest(request_id=f"st{n}", code=code)

            call = stub.RecogniseStream(requests(), timeout=120)
            async for reply in call:
                partner, holder = sent.get_nowait()
                record(partner, holder, reply)

        async def until(predicate) -> None:
            async with asyncio.timeout(60):
                while not predicate():
                    changed.clear()
                    await changed.wait()

        async with gateway.channel() as channel:
            stub = pb_grpc.RecognitionServiceStub(channel)
            workers = [asyncio.create_task(unary_worker(stub, i)) for i in range(3)]
            workers.append(asyncio.create_task(stream_worker(stub)))
            await until(lambda: len(outputs.responses) >= 50)
            await atrustgw(
                "keys",
                "rotate",
                "--data-dir",
                str(gateway.data_dir),
                "--role",
                "issue",
                "--activate-in",
                "0",
            )
            await until(lambda: bool(seen_kids - {old_attest, old_issue}))
            new_issue = seen_kids - {old_attest, old_issue}
            await atrustgw(
                "keys",
                "rotate",
                "--data-dir",
                str(gateway.data_dir),
                "--role",
                "attest",
                "--activate-in",
                "0",
            )
            await until(lambda: bool(seen_kids - {old_attest, old_issue} - new_issue))
            mark = len(outputs.responses)
            await until(lambda: len(outputs.responses) >= mark + 50)
            stop.set()
            await asyncio.gather(*workers)
        return outputs

    outputs = asyncio.run(scenario())
    kids = {r.attestation.key_id for _, _, r in outputs.responses}
    issue_kids = {r.converted.key_id for _, _, r in outputs.responses if r.HasField("converted")}
    assert old_attest in kids and len(kids) == 2, kids
    assert old_issue in issue_kids and len(issue_kids) == 2, issue_kids
    after = gateway.trust_file("after.json")
    checked = verify_all_offline(after, outputs, cli_sample=4)
    assert checked >= len(outputs.responses)

    # trust-registry.md §9: the list signed now carries both generations of keys, and the
    # partners' keys the operator added; verified with the trustlist key of the trust file
    async def fetch() -> bytes:
        async with gateway.channel() as channel:
            stub = rpb_grpc.TrustListServiceStub(channel)
            reply = await stub.GetTrustList(rpb.GetTrustListRequest(since_version=0), timeout=10)
            return reply.envelope

    envelope = asyncio.run(fetch())
    trust_after = TrustFile.from_json(after.read_bytes())
    statement = verify_trust_list(trust_after, envelope, int(now_utc().timestamp()))
    listed = {(k["owner"], k["role"], k["kid"]) for k in statement["content"]["keys"]}
    for kid in kids:
        assert ("370000", "attest", kid) in listed
    for kid in issue_kids:
        assert ("370000", "issue", kid) in listed
    for code, partner in gateway.partners.items():
        assert (code, "code", partner.key.kid) in listed
    with pytest.raises(Refused) as late:
        verify_trust_list(trust_after, envelope, statement["expires"])
    assert late.value.reason == "TRUSTLIST_EXPIRED"

    # what the old keys signed verifies with the trust file from before the rotations
    old = [o for o in outputs.responses if o[2].attestation.key_id == old_attest]
    assert old
    for _, _, reply in old:
        a = reply.attestation
        iat = json.loads(a.payload)["iat"]
        verify_attestation(before, a.payload, a.key_id, a.alg, a.signature, iat)
