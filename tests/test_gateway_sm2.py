"""The gateway signs with SM2 for partners that require it: a per-deployment choice.

Pins docs/verifying.md, "Algorithms": ``trustgw init --gateway-algorithm SM2`` makes every gateway
key SM2; ``keys rotate`` keeps the role's algorithm, or changes it with ``--algorithm``; the trust
file, the trust list and ``GetGatewayKeys`` publish each key with its algorithm, and every offline
verifier (gateway.tokens, ``trustgw verify``, the SDK) accepts attestations, home codes,
receipts and trust lists signed with SM2. A rotation of SM2 keys under load fails no call.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

pytest.importorskip("tongsuopy", reason="SM2 needs the tongsuopy wheel (docs/crypto.md)")

from signed_support import KINDS, ROLES, sign, verify
from support.aio import run, serving
from support.clock import REAL_NOW
from support.wait import eventually

from adapters.base import Colour
from adapters.regions import REGION_SPECS
from gateway import tokens
from gateway.api.v1 import recognition_pb2 as pb
from gateway.api.v1 import recognition_pb2_grpc as pb_grpc
from gateway.cli import main
from gateway.demo import prepare
from gateway.sdk import trust_from_proto
from keys.crypto import Algorithm
from keys.errors import PassphraseError
from keys.keystore import KeyDirectory, KeyRole
from keys.model import Mode
from keys.registry import RegistrySnapshot
from keys.timeutil import to_iso, to_unix
from keys.trustclaims import TrustListClaims
from keys.trustlist import PinnedKey, TrustListVerifier, content_digest, sign_trustlist
from keys.trustpublisher import build_content
from tests.support.keyring import stored_keys

T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
NOW = REAL_NOW  # a serving gateway reads the real clock
HOUR = timedelta(hours=1)
CONVERT = next(s.code for s in REGION_SPECS if s.mode is Mode.CONVERT)


def reason(call: Any) -> str:
    from keys.errors import GatewayError

    try:
        call()
    except GatewayError as exc:
        return exc.reason
    return "OK"


# --- the key directory ----------------------------------------------------------------------


def test_an_sm2_key_directory_is_encrypted_reopens_and_keeps_its_algorithm(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    keys = KeyDirectory.create(
        path, dev=False, passphrase=b"pass phrase", now=T0, algorithm=Algorithm.SM2
    )
    assert {i.public_key.alg for i in keys.public_keys()} == {Algorithm.SM2}
    for pem in path.glob("*.pem"):
        assert b"ENCRYPTED PRIVATE KEY" in pem.read_bytes()
    reopened = KeyDirectory.open(path, passphrase=b"pass phrase")
    for role in KeyRole:
        info, key = reopened.signer(role, T0)
        assert key.alg is Algorithm.SM2
        info.public_key.verify(b"m", key.sign(b"m"))
    with pytest.raises(PassphraseError):
        KeyDirectory.open(path, passphrase=b"wrong")
    # A rotation keeps the role's algorithm unless told otherwise.
    kept = reopened.rotate(KeyRole.ATTEST, T0 + HOUR)
    assert kept.public_key.alg is Algorithm.SM2
    changed = reopened.rotate(KeyRole.ISSUE, T0 + HOUR, algorithm=Algorithm.EDDSA)
    assert changed.public_key.alg is Algorithm.EDDSA
    assert reopened.algorithm(KeyRole.ISSUE) is Algorithm.EDDSA
    with pytest.raises(ValueError):
        reopened.rotate(KeyRole.ATTEST, T0 + HOUR, algorithm=Algorithm.PS256)
    with pytest.raises(ValueError):
        KeyDirectory.create(tmp_path / "k2", dev=True, passphrase=None, now=T0,
                            algorithm=Algorithm.PS256)  # fmt: skip
    assert not (tmp_path / "k2").exists()


# --- every output, every verifier -----------------------------------------------------------


def _trust_list_trust(keys: KeyDirectory, at: datetime) -> tokens.GatewayTrust:
    """The gateway's keys as an SM2-signed trust list publishes them, verified offline."""
    content = build_content(RegistrySnapshot(1, {}), keys.public_keys(), now=at)
    claims = TrustListClaims(1, content_digest(content), content)
    signed = sign_trustlist(claims, keys, at, timedelta(days=1))
    pinned = PinnedKey.of(keys.public_keys())
    assert pinned and all(p.public_key.alg is Algorithm.SM2 for p in pinned)
    accepted = TrustListVerifier(pinned).verify(signed.envelope, at)
    listed = accepted.keys("370000")
    assert listed and {entry["public_key"]["crv"] for entry in listed} == {"SM2"}
    return tokens.GatewayTrust.from_trustlist(accepted)


@pytest.mark.parametrize("kind", KINDS)
def test_sm2_outputs_verify_with_the_trust_file_and_the_trust_list(
    tmp_path: Path, kind: str
) -> None:
    keys = KeyDirectory.create(
        tmp_path / "keys", dev=True, passphrase=None, now=T0, algorithm=Algorithm.SM2
    )
    at = T0 + HOUR
    output, _, _ = sign(kind, keys, at)
    if kind != "home":
        assert output.alg == "SM2"
    trust_file = tokens.GatewayTrust.from_json(
        json.dumps(tokens.GatewayTrust.from_key_infos(keys.public_keys(), now=at).to_json())
    )
    assert {k.public_key.alg for k in trust_file.keys} == {Algorithm.SM2}
    for trust in (trust_file, _trust_list_trust(keys, at)):
        claims = verify(kind, output, trust, at)
        assert claims["iat"] <= to_unix(at) < claims["exp"]
    # Changed by one bit, it no longer verifies.
    if kind == "home":
        body, _, sig = output.rpartition(".")
        forged: Any = f"{body}.{sig[:-2]}{'A' if sig[-2] != 'A' else 'B'}{sig[-1]}"
    else:
        forged = tokens.Attestation(
            output.payload,
            output.kid,
            output.alg,
            bytes([output.signature[0] ^ 1]) + output.signature[1:],
        )
    assert reason(lambda: verify(kind, forged, trust_file, at)) == "SIGNATURE_INVALID"


def test_an_sm2_attestation_under_an_eddsa_key_id_is_refused(tmp_path: Path) -> None:
    """The attestation's alg must be its key's: an SM2 signature is never tried as EdDSA."""
    sm2 = KeyDirectory.create(tmp_path / "a", dev=True, passphrase=None, now=T0,
                              algorithm=Algorithm.SM2)  # fmt: skip
    ed = KeyDirectory.create(tmp_path / "b", dev=True, passphrase=None, now=T0)
    att, _, _ = sign("attestation", sm2, T0 + HOUR)
    ed_info, _ = ed.signer(KeyRole.ATTEST, T0 + HOUR)
    trust = tokens.GatewayTrust.from_key_infos(ed.public_keys(), now=T0)
    moved = tokens.Attestation(att.payload, ed_info.kid, att.alg, att.signature)
    assert reason(lambda: tokens.verify_attestation(moved, trust, T0 + HOUR)) == "MALFORMED"
    relabelled = tokens.Attestation(att.payload, ed_info.kid, "EdDSA", att.signature)
    assert reason(lambda: tokens.verify_attestation(relabelled, trust, T0 + HOUR)) == (
        "SIGNATURE_INVALID"
    )


# --- the command line, as an operator runs it -----------------------------------------------


def test_init_with_sm2_export_rotate_and_verify_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUSTGW_PASSPHRASE", "correct horse battery staple")
    data_dir = tmp_path / "gw"
    assert main(["init", "--data-dir", str(data_dir), "--gateway-algorithm", "SM2", "--json"]) == 0
    init = json.loads(capsys.readouterr().out)
    assert {k["alg"] for k in init["keys"]} == {"SM2"}
    assert len(init["keys"]) == len(KeyRole)

    assert main(["keys", "rotate", "--data-dir", str(data_dir), "--role", "attest", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["alg"] == "SM2"
    args = ["keys", "rotate", "--data-dir", str(data_dir), "--role", "issue", "--json",
            "--algorithm", "EdDSA"]  # fmt: skip
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["alg"] == "EdDSA"

    out = tmp_path / "trustgw-keys.json"
    assert main(["keys", "export", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    capsys.readouterr()
    exported = json.loads(out.read_text())
    algs = {(k["role"], k["alg"]) for k in exported["keys"]}
    assert ("attest", "SM2") in algs and ("issue", "SM2") in algs and ("issue", "EdDSA") in algs

    # An attestation the gateway signed with its SM2 key, checked by `trustgw verify`.
    keys = stored_keys(data_dir, b"correct horse battery staple")
    # one second into the validity of the key `init` made (the rotated one is not valid yet)
    at = min(i.not_before for i in keys.public_keys() if i.role is KeyRole.ATTEST)
    at += timedelta(seconds=1)
    att, _, _ = sign("attestation", keys, at)
    assert att.alg == "SM2"
    text = json.dumps(att.to_json())
    status = main(["verify", "--format", "attestation", "--trust", str(out), "--at", to_iso(at),
                   "--json", text])  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert (status, result["verdict"], result["reason"]) == (0, "accept", "OK"), result
    bad = json.dumps({**att.to_json(), "alg": "EdDSA"})
    status = main(["verify", "--format", "attestation", "--trust", str(out), "--at", to_iso(at),
                   "--json", bad])  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert (status, result["verdict"]) == (1, "reject")

    assert main(["init", "--data-dir", str(tmp_path / "x"), "--gateway-algorithm", "PS256"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trustgw: USAGE: ")


# --- rotation under load: 0 failed calls ----------------------------------------------------


@pytest.mark.integration  # a real server (tests/support/tiers.py)
def test_rotating_sm2_keys_under_load_fails_no_request(tmp_path: Path, simulator, codes, capsys):
    """As tests/test_rotation.py, for a deployment that signs with SM2, over an SM2 partner
    region (Heilongjiang): old and new SM2 keys both serve, without a gap, and every answer
    verifies offline with the keys ``GetGatewayKeys`` publishes."""
    assert next(s for s in REGION_SPECS if s.code == CONVERT).signing_alg is Algorithm.SM2
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    run(prepare(data_dir, simulator, NOW, gateway_algorithm=Algorithm.SM2))
    make = codes(CONVERT, NOW)
    requests = [pb.RecogniseRequest(request_id=str(n), code=make()) for n in range(200)]

    async def scenario() -> tuple[list[pb.RecogniseResponse], list[str], dict[str, str], Any]:
        async with serving(data_dir) as (_, port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RecognitionServiceStub(channel)
                responses: list[pb.RecogniseResponse] = []
                errors: list[str] = []
                queue = list(requests)
                serving_load = asyncio.Event()
                rotated = asyncio.Event()

                async def worker() -> None:
                    while queue or not rotated.is_set():
                        request = queue.pop() if queue else pb.RecogniseRequest(code=make())
                        try:
                            responses.append(await stub.Recognise(request, timeout=10))
                        except grpc.aio.AioRpcError as exc:
                            errors.append(f"{exc.code()}: {exc.details()}")
                        if len(responses) >= 30:
                            serving_load.set()

                async def rotate() -> dict[str, str]:
                    await serving_load.wait()
                    new = {}
                    try:
                        for role in ("attest", "issue"):
                            args = ["keys", "rotate", "--data-dir", str(data_dir), "--role",
                                    role, "--json", "--activate-in", "0"]  # fmt: skip
                            assert await asyncio.to_thread(main, args) == 0
                            rotated_key = json.loads(capsys.readouterr().out)
                            assert rotated_key["alg"] == "SM2"
                            new[role] = rotated_key["kid"]
                    finally:
                        rotated.set()
                    return new

                *_, new = await asyncio.gather(*(worker() for _ in range(6)), rotate())

                async def signed_by_new_keys() -> pb.RecogniseResponse | None:
                    late = await stub.Recognise(pb.RecogniseRequest(code=make()), timeout=10)
                    kids = (late.attestation.key_id, late.converted.key_id)
                    return late if kids == (new["attest"], new["issue"]) else None

                responses.append(await eventually(signed_by_new_keys, what="the new keys sign"))
                published = await stub.GetGatewayKeys(pb.GetGatewayKeysRequest(), timeout=10)
                return responses, errors, new, published

    responses, errors, new, published = run(scenario())
    assert errors == []
    assert all(r.reason == "RECOGNISED" for r in responses)
    assert len({r.attestation.key_id for r in responses}) == 2  # old and new, without a gap
    trust = trust_from_proto(published)
    assert {k.public_key.alg for k in trust.keys if k.role != "trustlist"} == {Algorithm.SM2}
    for r in responses:
        assert r.attestation.alg == "SM2"
        at = datetime.fromtimestamp(json.loads(r.attestation.payload)["iat"], UTC)
        tokens.verify_attestation(
            tokens.Attestation(
                r.attestation.payload,
                r.attestation.key_id,
                r.attestation.alg,
                r.attestation.signature,
            ),
            trust,
            at,
        )
        tokens.verify_home_code(r.converted.code, trust, at)
    assert responses[-1].attestation.key_id == new["attest"]
    assert ROLES["attestation"] is KeyRole.ATTEST


def test_keys_add_takes_an_sm2_partner_key_in_each_published_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/partners.md §1.3 (and crypto.md §1.2): SPKI PEM/DER, JWK, and the raw point for a
    region whose codes are signed with SM2 only; an SM2 key for an Ed25519 region is refused."""
    from keys.crypto import PrivateKey

    monkeypatch.delenv("TRUSTGW_PASSPHRASE", raising=False)
    monkeypatch.delenv("TRUSTGW_PASSPHRASE_FILE", raising=False)
    data_dir = tmp_path / "gw"
    assert main(["init", "--data-dir", str(data_dir), "--dev", "--json"]) == 0
    capsys.readouterr()
    forms = {}
    for name in ("pem", "der", "jwk", "raw"):
        public = PrivateKey.generate(Algorithm.SM2).public_key()
        data = {
            "pem": public.to_pem().encode(),
            "der": public.spki,
            "jwk": json.dumps(public.to_jwk()).encode(),
            "raw": public.raw(),
        }[name]
        (tmp_path / name).write_bytes(data)
        forms[name] = public
        args = ["keys", "add", "--data-dir", str(data_dir), "--region", "230000",
                "--public-key", str(tmp_path / name), "--kid", f"hlj-{name}", "--json"]  # fmt: skip
        assert main(args) == 0, name
        assert json.loads(capsys.readouterr().out)["alg"] == "SM2"
    assert main(["keys", "list", "--data-dir", str(data_dir), "--json"]) == 0
    listed = {r["kid"]: r["alg"] for r in json.loads(capsys.readouterr().out)}
    assert all(listed[f"hlj-{name}"] == "SM2" for name in forms)
    for path, reason_word in (("der", "KEY_ALGORITHM_MISMATCH"), ("raw", "MALFORMED")):
        args = ["keys", "add", "--data-dir", str(data_dir), "--region", "110000",
                "--public-key", str(tmp_path / path), "--kid", f"bj-{path}"]  # fmt: skip
        assert main(args) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"trustgw: {reason_word}: "), err


# --- a partner region that signs with SM2 throughout: anchors, key sets, rotation ----------------


def test_an_sm2_partner_onboards_with_sm2_anchors_and_rotates_its_sm2_code_key(
    tmp_path: Path,
) -> None:
    """docs/trust-registry.md §2 and §4 (anchors may be SM2; a key set lists SM2 keys for an SM2
    region), partners.md §1.3: codes verify under the listed key, and after a key set that
    rotates to a new SM2 key, under the new one while the old one's codes stop verifying."""
    from trust_support import T0 as REG_T0
    from trust_support import scenario

    from adapters.regions import ADAPTERS
    from adapters.simulator import PartnerIssuer
    from keys.errors import KeyUnknownError
    from keys.partner import PartnerSigner, signing_key

    region = "230000"
    partner = PartnerSigner.generate(region, alg=Algorithm.SM2, mode=Mode.CONVERT)
    window = (REG_T0 - timedelta(days=30), REG_T0 + timedelta(days=365))
    old_entry, old_private = signing_key("hlj-2026-1", *window, alg=Algorithm.SM2)
    new_entry, new_private = signing_key("hlj-2026-2", *window, alg=Algorithm.SM2)
    spec = ADAPTERS[region].spec
    old_issuer = PartnerIssuer(spec, old_private, "hlj-2026-1")
    new_issuer = PartnerIssuer(spec, new_private, "hlj-2026-2")

    def code(issuer: PartnerIssuer) -> str:
        return issuer.issue(
            holder_id="110101199003070011", holder_name="王伟", colour=Colour.GREEN,
            issued_at=REG_T0 - HOUR, expires_at=REG_T0 + HOUR,
        )  # fmt: skip

    async def body(h: Any) -> list[str]:
        await h.onboard(partner)
        seen = []
        await h.publish(partner, partner.keyset(1, [old_entry], expires=REG_T0 + timedelta(days=1)))
        snapshot = h.registry.snapshot
        seen.append(ADAPTERS[region].decode(code(old_issuer), snapshot, h.pseudonymiser).status.kid)
        await h.publish(partner, partner.keyset(2, [new_entry], expires=REG_T0 + timedelta(days=1)))
        snapshot = h.registry.snapshot
        seen.append(ADAPTERS[region].decode(code(new_issuer), snapshot, h.pseudonymiser).status.kid)
        with pytest.raises(KeyUnknownError):
            ADAPTERS[region].decode(code(old_issuer), snapshot, h.pseudonymiser)
        return seen

    assert scenario(tmp_path / "r.db", body) == ["hlj-2026-1", "hlj-2026-2"]
