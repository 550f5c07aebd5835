"""What the gateway signs verifies offline with its published keys for exactly its stated
validity: home codes, attestations, receipts and trust lists, around every key boundary.

Pins docs/verifying.md, "When a signed output is valid" and "Keys and rotation", and
docs/trust-registry.md §9 (trust-list validity) and §12 (signed receipts). Every time is
explicit; the random-timeline properties are in tests/test_signed_properties.py.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from signed_support import (
    ATTESTATION,
    HOME,
    KINDS,
    LIMITS,
    ROLES,
    engine,
    fresh_data_dir,
    sign,
    verify,
)
from support.aio import run
from support.clock import T0

from adapters.regions import REGION_SPECS
from gateway import tokens
from gateway.cli import main
from keys.errors import GatewayError
from keys.keystore import DEFAULT_ACTIVATION_DELAY, KeyDirectory, KeyRole
from keys.model import Mode
from keys.registry import RegistrySnapshot
from keys.timeutil import to_iso, to_unix
from keys.trustclaims import TrustListClaims
from keys.trustlist import PinnedKey, TrustListVerifier, content_digest, sign_trustlist
from keys.trustpublisher import build_content

NOW = T0  # every call here takes its time: no real clock
T0 = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
CONVERT = next(s.code for s in REGION_SPECS if s.mode is Mode.CONVERT)


def reason(call: Any) -> str:
    try:
        call()
    except GatewayError as exc:
        return exc.reason
    return "OK"


def export(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The trust file, exactly as an operator hands it to checkpoints."""
    out = data_dir / "trustgw-keys.json"
    assert main(["keys", "export", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def cli_verify(
    capsys: pytest.CaptureFixture[str], fmt: str, trust: Path, at: datetime, text: str
) -> dict[str, Any]:
    status = main(["verify", "--format", fmt, "--trust", str(trust), "--at", to_iso(at), "--json",
                   text])  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert status == (0 if result["verdict"] == "accept" else 1)
    return dict(result)


# --- issue 8 item 1: home codes of codes issued before the issuing key ---------------------------


def test_a_fresh_gateway_converts_a_code_issued_before_init_into_a_code_its_verifiers_accept(
    tmp_path, simulator, codes, capsys
) -> None:
    """docs/verifying.md, "Home-province code format": ``iat`` is when the gateway signed, the
    source's issue time is ``src_iat``; the issuing key is checked at ``iat``."""
    init = NOW
    data_dir = run(fresh_data_dir(tmp_path / "data", simulator, init))
    code = codes(CONVERT, init)(age=HOUR)  # issued an hour before `trustgw init`
    at = init + timedelta(minutes=1)

    async def scenario() -> Any:
        async with engine(data_dir) as e:
            return await e.recogniser.recognise(code, at)

    decision = run(scenario())
    assert decision.reason == "RECOGNISED" and decision.converted is not None
    home = decision.converted.code
    trust_file = export(data_dir, capsys)
    trust = tokens.GatewayTrust.from_json(trust_file.read_bytes())
    claims = tokens.verify_home_code(home, trust, at)
    assert claims["iat"] == to_unix(at)
    assert claims["src_iat"] == to_unix(init - HOUR)
    result = cli_verify(capsys, "home", trust_file, at, home)
    assert (result["verdict"], result["reason"]) == ("accept", "OK"), result


@pytest.mark.parametrize(
    "activate_in",
    [pytest.param(None, id="default-lead-time"), pytest.param("0", id="activate-in-0")],
)
def test_after_an_issue_key_rotation_codes_issued_before_it_convert_into_valid_codes(
    tmp_path, simulator, codes, capsys, activate_in
) -> None:
    """docs/verifying.md, "Keys and rotation": the new issuing key signs codes of sources
    issued before it existed, and both documented verifiers accept them."""
    data_dir = run(fresh_data_dir(tmp_path / "data", simulator, NOW - DAY))
    extra = [] if activate_in is None else ["--activate-in", activate_in]
    args = ["keys", "rotate", "--data-dir", str(data_dir), "--role", "issue", "--json", *extra]
    assert main(args) == 0
    rotated = json.loads(capsys.readouterr().out)
    signs_from = datetime.fromisoformat(rotated["not_before"].replace("Z", "+00:00"))
    at = signs_from + SECOND
    code = codes(CONVERT, at)(age=2 * HOUR)  # issued before the rotation

    async def scenario() -> Any:
        async with engine(data_dir) as e:
            return await e.recogniser.recognise(code, at)

    decision = run(scenario())
    assert decision.converted is not None and decision.converted.kid == rotated["kid"]
    home = decision.converted.code
    trust_file = export(data_dir, capsys)
    claims = tokens.verify_home_code(
        home, tokens.GatewayTrust.from_json(trust_file.read_bytes()), at
    )
    assert claims["iat"] == to_unix(at) and claims["src_iat"] == to_unix(at - 2 * HOUR)
    assert cli_verify(capsys, "home", trust_file, at, home)["verdict"] == "accept"


def test_the_same_source_code_keeps_yielding_the_first_home_code(
    tmp_path, simulator, codes
) -> None:
    """docs/verifying.md, "Home-province code format": converting the same source again, later
    (a new ``iat``), returns the stored code, not a new signature."""
    data_dir = run(fresh_data_dir(tmp_path / "data", simulator, NOW))
    code = codes(CONVERT, NOW)()

    async def scenario() -> list[Any]:
        async with engine(data_dir) as e:
            first = await e.recogniser.recognise(code, NOW)
        async with engine(data_dir) as e:  # a new process: empty cache, the store answers
            second = await e.recogniser.recognise(code, NOW + timedelta(minutes=7))
        return [first, second]

    first, second = run(scenario())
    assert first.converted is not None and first.converted == second.converted
    assert json.loads(second.attestation.payload)["iat"] == to_unix(NOW + timedelta(minutes=7))


# --- the named case table: one key, its boundaries ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """Sign at ``sign`` (offset from the first key's not_before), check at ``check`` (offset
    from the output's ``iat``, or from ``exp`` when ``from_exp``) with the keys published at
    ``published`` (offset from not_before; None: at the check)."""

    sign: timedelta
    check: timedelta
    from_exp: bool = False
    rotate_at: timedelta | None = None  # rotate the role (default lead time) at this offset
    revoked: bool = False  # the trust marks the signing key revoked
    published: timedelta | None = None
    expected: str = "OK"


VALIDITY = 2 * DAY  # of the first key: not_after = T0 + 2 days
KEY_CASES = [
    pytest.param(Case(timedelta(0), timedelta(0)), id="signed-at-not_before-checked-at-iat"),
    pytest.param(Case(timedelta(0), -SECOND, expected="CODE_NOT_YET_VALID"), id="before-iat"),
    pytest.param(Case(HOUR, timedelta(0), from_exp=True), id="checked-at-exp-inclusive"),
    pytest.param(Case(HOUR, SECOND, from_exp=True, expected="CODE_EXPIRED"), id="after-exp"),
    pytest.param(
        Case(VALIDITY - SECOND, timedelta(0), from_exp=True), id="last-second-of-the-key-exp-cut"
    ),
    pytest.param(
        Case(VALIDITY - SECOND, SECOND, from_exp=True, expected="CODE_EXPIRED"),
        id="after-the-keys-not_after",
    ),
    pytest.param(
        Case(HOUR, timedelta(0), rotate_at=2 * HOUR), id="old-key-output-checked-after-rotation"
    ),
    pytest.param(
        Case(VALIDITY - SECOND, timedelta(0), from_exp=True, rotate_at=VALIDITY),
        id="rotated-at-the-keys-not_after-it-stays-published-through-it",
    ),
    pytest.param(
        Case(2 * HOUR + DEFAULT_ACTIVATION_DELAY - SECOND, timedelta(0), rotate_at=2 * HOUR),
        id="old-key-still-signs-during-the-lead-time",
    ),
    pytest.param(
        Case(2 * HOUR + DEFAULT_ACTIVATION_DELAY, timedelta(0), rotate_at=2 * HOUR),
        id="new-key-signs-from-activation",
    ),
    pytest.param(
        Case(
            2 * HOUR + DEFAULT_ACTIVATION_DELAY,
            timedelta(0),
            rotate_at=2 * HOUR,
            published=2 * HOUR,
        ),
        id="new-key-output-with-keys-exported-at-the-rotation",
    ),
    pytest.param(
        Case(
            2 * HOUR + DEFAULT_ACTIVATION_DELAY,
            timedelta(0),
            rotate_at=2 * HOUR,
            published=HOUR,
            expected="KEY_UNKNOWN",
        ),
        id="new-key-output-with-keys-exported-before-the-rotation",
    ),
    pytest.param(Case(HOUR, timedelta(0), revoked=True, expected="KEY_REVOKED"), id="revoked"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", KEY_CASES)
def test_a_signed_output_verifies_exactly_within_its_stated_validity(
    tmp_path: Path, kind: str, case: Case
) -> None:
    """docs/verifying.md, "When a signed output is valid" (the case table)."""
    keys = KeyDirectory.create(
        tmp_path / "keys", dev=True, passphrase=None, now=T0, validity=VALIDITY
    )
    published: dict[str, tokens.GatewayTrust] = {"start": trust_of(keys)}
    if case.rotate_at is not None:
        keys.rotate(ROLES[kind], T0 + case.rotate_at)
    output, iat, exp = sign(kind, keys, T0 + case.sign)
    assert iat == to_unix(T0 + case.sign)
    at = datetime.fromtimestamp(exp if case.from_exp else iat, UTC) + case.check
    if case.published is None:
        trust = trust_of(keys)
    elif case.rotate_at is not None and case.published >= case.rotate_at:
        trust = trust_of(keys)
    else:
        trust = published["start"]
    if case.revoked:
        trust = revoke_all(trust)
    signer, _ = keys.signer(ROLES[kind], T0 + case.sign)
    assert exp == min(to_unix(T0 + case.sign + LIMITS[kind]), to_unix(signer.not_after))
    assert reason(lambda: verify(kind, output, trust, at)) == case.expected


def trust_of(keys: KeyDirectory) -> tokens.GatewayTrust:
    return tokens.GatewayTrust.from_key_infos(keys.public_keys(), now=T0)


def revoke_all(trust: tokens.GatewayTrust) -> tokens.GatewayTrust:
    """The trust with every key marked revoked (as a trust list or GetGatewayKeys would say)."""
    return dataclasses.replace(
        trust, keys=tuple(dataclasses.replace(k, status="revoked") for k in trust.keys)
    )


@pytest.mark.parametrize("kind", ["attestation", "home"])
@pytest.mark.parametrize(
    ("iat", "exp", "expected"),
    [
        pytest.param(-SECOND, HOUR, "KEY_NOT_VALID", id="iat-before-not_before"),
        pytest.param(timedelta(0), HOUR, "OK", id="iat-at-not_before"),
        pytest.param(VALIDITY - SECOND, VALIDITY, "OK", id="exp-at-not_after"),
        pytest.param(
            VALIDITY - SECOND, VALIDITY + SECOND, "KEY_NOT_VALID", id="exp-past-not_after"
        ),
        pytest.param(VALIDITY, VALIDITY, "KEY_NOT_VALID", id="iat-at-not_after-exclusive"),
        pytest.param(HOUR, HOUR - SECOND, "MALFORMED", id="exp-before-iat"),
    ],
)
def test_a_window_the_signing_rule_never_states_is_refused(
    tmp_path: Path, kind: str, iat: timedelta, exp: timedelta, expected: str
) -> None:
    """docs/verifying.md, "When a signed output is valid": the key is checked at ``iat``
    (``not_before <= iat < not_after``) and ``exp`` never outlasts it, whatever was signed."""
    keys = KeyDirectory.create(
        tmp_path / "keys", dev=True, passphrase=None, now=T0, validity=VALIDITY
    )
    info, key = keys.signer(ROLES[kind], T0)
    window = {"iat": to_unix(T0 + iat), "exp": to_unix(T0 + exp)}
    if kind == "attestation":
        claims = dataclasses.replace(ATTESTATION, **window)
        output: Any = tokens.sign_attestation(claims, info.kid, key)
    else:
        output = tokens.sign_home_code(dataclasses.replace(HOME, kid=info.kid, **window), key)
    at = T0 + max(iat, timedelta(0))
    assert reason(lambda: verify(kind, output, trust_of(keys), at)) == expected


# --- trust lists: the same boundaries ------------------------------------------------------------


def signed_list(keys: KeyDirectory, at: datetime, ttl: timedelta = DAY) -> Any:
    content = build_content(RegistrySnapshot(1, {}), keys.public_keys(), now=at)
    claims = TrustListClaims(1, content_digest(content), content)
    return sign_trustlist(claims, keys, at, ttl)


def list_reason(data: bytes, pinned: list[PinnedKey], at: datetime) -> str:
    return reason(lambda: TrustListVerifier(pinned).verify(data, at))


def only(pinned: list[PinnedKey], kid: str) -> list[PinnedKey]:
    return [p for p in pinned if p.kid == kid]


@pytest.mark.parametrize(
    ("sign_at", "check", "from_expires", "expected"),
    [
        pytest.param(HOUR, timedelta(0), False, "OK", id="at-issued_at"),
        pytest.param(HOUR, -SECOND, False, "TRUSTLIST_NOT_YET_VALID", id="before-issued_at"),
        pytest.param(HOUR, -SECOND, True, "OK", id="last-second"),
        pytest.param(HOUR, timedelta(0), True, "TRUSTLIST_EXPIRED", id="at-expires-exclusive"),
        pytest.param(VALIDITY - HOUR, -SECOND, True, "OK", id="cut-to-the-keys-not_after"),
        pytest.param(VALIDITY - HOUR, timedelta(0), True, "TRUSTLIST_EXPIRED", id="after-cut"),
    ],
)
def test_a_trust_list_is_valid_from_issued_at_until_expires(
    tmp_path: Path, sign_at: timedelta, check: timedelta, from_expires: bool, expected: str
) -> None:
    """docs/trust-registry.md §9, "Validity": ``issued_at <= t < expires``; ``expires`` never
    after the signing keys' ``not_after``."""
    keys = KeyDirectory.create(
        tmp_path / "keys", dev=True, passphrase=None, now=T0, validity=VALIDITY
    )
    signed = signed_list(keys, T0 + sign_at)
    assert signed.expires == min(T0 + sign_at + DAY, T0 + VALIDITY)
    at = (signed.expires if from_expires else signed.issued_at) + check
    pinned = PinnedKey.of(keys.public_keys())
    assert list_reason(signed.envelope, pinned, at) == expected
    # The same with the keys a verified list publishes (a verifier that follows the lists).
    follower = TrustListVerifier(pinned)
    follower.verify(signed.envelope, signed.issued_at)
    assert follower.trusted_kids == {p.kid for p in pinned}


@pytest.mark.parametrize(
    ("sign_at", "pinned_kid", "expected"),
    [
        pytest.param(HOUR, "old", "OK", id="during-lead-time-old-key-signs"),
        pytest.param(HOUR, "new", "SIGNATURE_INVALID", id="during-lead-time-new-key-does-not"),
        pytest.param(2 * HOUR, "old", "OK", id="after-activation-old-key-signs-too"),
        pytest.param(2 * HOUR, "new", "OK", id="after-activation-new-key-signs"),
        pytest.param(VALIDITY - HOUR, "new", "OK", id="old-key-ending-new-key-signs"),
        pytest.param(
            VALIDITY - HOUR, "old", "SIGNATURE_INVALID", id="old-key-ending-signs-no-longer-list"
        ),
    ],
)
def test_a_trust_list_across_a_trustlist_key_rotation(
    tmp_path: Path, sign_at: timedelta, pinned_kid: str, expected: str
) -> None:
    """docs/trust-registry.md §9: signed by every trustlist key valid over the list's whole
    validity; a new key announced (default lead time) signs only once valid."""
    keys = KeyDirectory.create(
        tmp_path / "keys", dev=True, passphrase=None, now=T0, validity=VALIDITY
    )
    (old,) = PinnedKey.of(keys.public_keys())
    rotated = keys.rotate(KeyRole.TRUSTLIST, T0 + HOUR - DEFAULT_ACTIVATION_DELAY)
    assert rotated.not_before == T0 + HOUR
    signed = signed_list(keys, T0 + sign_at - SECOND)  # one second before sign_at
    published = PinnedKey.of(keys.public_keys())
    kid = old.kid if pinned_kid == "old" else rotated.kid
    assert list_reason(signed.envelope, only(published, kid), signed.issued_at) == expected
    # Whoever pins every published key accepts it, at every instant of its validity.
    for at in (signed.issued_at, signed.expires - SECOND):
        assert list_reason(signed.envelope, published, at) == "OK"


def test_a_pinned_key_does_not_vouch_for_a_list_outlasting_it(tmp_path: Path) -> None:
    """docs/trust-registry.md §9, "Verifying": a known key window bounds the lists it signs."""
    keys = KeyDirectory.create(tmp_path / "keys", dev=True, passphrase=None, now=T0)
    signed = signed_list(keys, T0 + HOUR)
    (pinned,) = PinnedKey.of(keys.public_keys())
    short = dataclasses.replace(pinned, not_after=signed.expires - SECOND)
    late = dataclasses.replace(pinned, not_before=signed.issued_at + SECOND)
    unbounded = PinnedKey(pinned.kid, pinned.public_key)
    assert list_reason(signed.envelope, [short], signed.issued_at) == "SIGNATURE_INVALID"
    assert list_reason(signed.envelope, [late], signed.issued_at) == "SIGNATURE_INVALID"
    assert list_reason(signed.envelope, [unbounded], signed.issued_at) == "OK"


def test_gateway_keys_from_a_verified_trust_list_verify_what_the_gateway_signs(
    tmp_path: Path,
) -> None:
    """docs/verifying.md, "The trust file": the trust list publishes the same keys."""
    keys = KeyDirectory.create(tmp_path / "keys", dev=True, passphrase=None, now=T0)
    signed = signed_list(keys, T0)
    accepted = TrustListVerifier(PinnedKey.of(keys.public_keys())).verify(signed.envelope, T0)
    trust = tokens.GatewayTrust.from_trustlist(accepted)
    assert set(trust.keys) == set(trust_of(keys).keys)
    for kind in KINDS:
        output, _, _ = sign(kind, keys, T0 + HOUR)
        verify(kind, output, trust, T0 + HOUR)


# --- receipts, over gRPC --------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.doc('verifying.md "Submission receipts"')
def test_every_receipt_is_signed_and_verifies_offline_with_every_published_form_of_the_keys(
    tmp_path: Path, prepared_dir, simulator
) -> None:
    """docs/trust-registry.md §12, "Signed receipts": key set, retry, revocation batch and key
    revocation receipts each carry a signed copy valid from ``iat`` to the key's not_after,
    verifiable with ``GetGatewayKeys``, ``keys export`` and the trust list."""
    from registry_grpc_support import NOW as START
    from registry_grpc_support import SHOW, client, listed, make_pki, partner_for
    from support.aio import serving

    from gateway.api.v1 import recognition_pb2 as pb
    from gateway.api.v1 import registry_pb2 as rpb
    from gateway.sdk import receipt_from_proto, trust_from_proto

    data_dir = prepared_dir(START)
    pki = make_pki(tmp_path / "pki")
    partner = partner_for(SHOW)
    issuer = simulator.issuer(SHOW.code)

    async def scenario() -> tuple[list[Any], dict[str, tokens.GatewayTrust], Any]:
        async with serving(data_dir, pki["server"]) as (gateway, port):
            await gateway.trust.install_partner(
                partner.partner_file(), actor="operator:test", now=START
            )
            p = client(port, pki["partner"])
            try:
                keyset = partner.keyset(1, [listed(issuer)], expires=START + DAY)
                receipts = [await p.publish(keyset), await p.publish(keyset)]  # and a retry
                batch = partner.revocations("b-9", START - HOUR, code_ids=["c0ffee01"])
                receipts.append(
                    await p.partner.PublishRevocations(rpb.SubmissionRequest(submission=batch))
                )
                revocation = partner.key_revocation(issuer.kid, START - HOUR)
                receipts.append(
                    await p.partner.RevokeKey(rpb.SubmissionRequest(submission=revocation))
                )
                keys = await p.recognition.GetGatewayKeys(pb.GetGatewayKeysRequest())
                listed_now = await p.trustlist.GetTrustList(rpb.GetTrustListRequest())
                pinned = PinnedKey.of(gateway.published_keys())
                at = datetime.fromtimestamp(listed_now.issued_at, UTC)
                accepted = TrustListVerifier(pinned).verify(listed_now.envelope, at)
                trusts = {
                    "GetGatewayKeys": trust_from_proto(keys),
                    "keys export": tokens.GatewayTrust.from_key_infos(
                        gateway.published_keys(), now=at
                    ),
                    "trust list": tokens.GatewayTrust.from_trustlist(accepted),
                }
                return receipts, trusts, gateway.published_keys()
            finally:
                await p.close()

    receipts, trusts, infos = run(scenario())
    attest_kids = {i.kid: i for i in infos if i.role is KeyRole.ATTEST}
    for wire in receipts:
        receipt = receipt_from_proto(wire, "")
        assert receipt.attestation is not None
        claims_unverified = json.loads(receipt.attestation.payload)
        iat = datetime.fromtimestamp(claims_unverified["iat"], UTC)
        key = attest_kids[receipt.attestation.kid]
        for name, trust in trusts.items():
            claims = tokens.verify_receipt(receipt.attestation, trust, iat)
            assert claims["exp"] == to_unix(key.not_after), name
            assert claims["typ"] == tokens.RECEIPT_TYPE
            for field in ("region", "digest", "duplicate", "version", "batch_id", "codes"):
                assert claims[field] == getattr(receipt, field), (name, field)
            assert claims["accepted_at"] == to_unix(receipt.accepted_at)
            assert claims["key_id"] == receipt.key_id
            assert claims["revoked_at"] == (
                0 if receipt.revoked_at is None else to_unix(receipt.revoked_at)
            )
            att = receipt.attestation
            assert receipt_reason(att, trust, iat - SECOND) == "CODE_NOT_YET_VALID"
            assert receipt_reason(att, trust, key.not_after) == "OK"
            assert receipt_reason(att, trust, key.not_after + SECOND) == "CODE_EXPIRED"
    kinds = [json.loads(r.attestation.payload)["kind"] for r in receipts]
    assert kinds == ["keyset", "keyset", "revocations", "key-revocation"]
    assert [json.loads(r.attestation.payload)["duplicate"] for r in receipts[:2]] == [False, True]
    # A receipt's payload edited, or passed off as an attestation, is refused.
    first = receipt_from_proto(receipts[0], "").attestation
    assert first is not None
    edited = dataclasses.replace(
        first, payload=first.payload.replace(b'"version":1', b'"version":9')
    )
    at = datetime.fromtimestamp(json.loads(first.payload)["iat"], UTC)
    trust = trusts["GetGatewayKeys"]
    assert reason(lambda: tokens.verify_receipt(edited, trust, at)) == "SIGNATURE_INVALID"
    assert reason(lambda: tokens.verify_attestation(first, trust, at)) == "MALFORMED"


def receipt_reason(att: Any, trust: tokens.GatewayTrust, at: datetime) -> str:
    return reason(lambda: tokens.verify_receipt(att, trust, at))
