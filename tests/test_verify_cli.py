"""``trustgw verify --format hc1|shc|REGION``: verdicts, reasons, steps and exit codes.

Codes are built here with TEST keys (tests/credentials_support.py) to cover what the public
vectors do not: every step's failure, real issuers' quirks, boundaries and usage errors.
"""

from __future__ import annotations

import io
import json
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from credentials_support import (
    EKU_RECOVERY,
    EKU_TEST,
    EKU_VACCINATION,
    certificate,
    dcc_claims,
    dcc_code,
    kid_of,
    non_der_serial,
    numeric,
    numeric_chunks,
    shc_card,
    shc_issuer,
    shc_payload,
)
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from adapters.base import Colour
from adapters.codecs.encoding import b45encode
from adapters.regions import ADAPTERS
from adapters.simulator import PartnerIssuer
from gateway.cli import main
from keys.crypto import Algorithm, PrivateKey

# Also runs with every dependency at its floor (.ci/lowest-versions).
pytestmark = pytest.mark.lowest

T0 = 1_622_548_800  # 2021-06-01T12:00:00Z
ES_KEY = PrivateKey.from_p256_scalar(b"\x01" * 32)
ED_KEY = PrivateKey.from_ed25519_seed(b"\x02" * 32)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["verify", *argv, "--json"])
    out = capsys.readouterr().out
    if code == 2:
        assert out == ""
        return code, {}
    result = json.loads(out)
    assert set(result) == {"verdict", "reason", "detail", "claims"}
    assert result["verdict"] == ("accept" if code == 0 else "reject")
    return code, result


# --- HC1 --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> PrivateKey:
    return PrivateKey.generate(Algorithm.PS256)


def hc1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cert: bytes, code: str, at: int = T0
) -> tuple[int, dict[str, Any]]:
    path = tmp_path / "dsc.der"
    path.write_bytes(cert)
    return run(capsys, "--format", "hc1", "--trust", str(path), "--at", str(at), code)


CLAIMS = dcc_claims(T0 - 3600, T0 + 86400)
CERT = certificate(ES_KEY, [EKU_VACCINATION])
KID = kid_of(CERT)


@pytest.mark.parametrize(
    ("code", "reason", "step"),
    [
        pytest.param(dcc_code(ES_KEY, CLAIMS, kid=KID), "OK", "", id="es256"),
        pytest.param(
            dcc_code(ES_KEY, CLAIMS, kid=KID, kid_where="unprotected"),
            "OK",
            "",
            id="kid-unprotected",
        ),
        pytest.param(
            dcc_code(ES_KEY, CLAIMS, kid=KID, kid_where="unprotected", alg_where="unprotected"),
            "OK",
            "",
            id="alg-and-kid-unprotected",
        ),
        pytest.param(dcc_code(ES_KEY, CLAIMS, kid=KID, tags=(61, 18)), "OK", "", id="cwt-tag-61"),
        pytest.param(dcc_code(ES_KEY, CLAIMS, kid=KID, tags=()), "OK", "", id="untagged"),
        pytest.param(
            dcc_code(ES_KEY, {**CLAIMS, 4: float(T0 + 86400)}, kid=KID), "OK", "", id="float-exp"
        ),
        pytest.param(
            dcc_code(ES_KEY, CLAIMS, kid=b"12345678"), "KEY_UNKNOWN", "VERIFY", id="kid-unknown"
        ),
        pytest.param(dcc_code(ES_KEY, CLAIMS, kid=None), "KEY_UNKNOWN", "VERIFY", id="no-kid"),
        pytest.param(
            dcc_code(PrivateKey.from_p256_scalar(b"\x03" * 32), CLAIMS, kid=KID),
            "SIGNATURE_INVALID",
            "VERIFY",
            id="other-signer",
        ),
        pytest.param(
            dcc_code(ES_KEY, CLAIMS, kid=KID, signature=encode_dss_signature(2**200, 2**200)),
            "SIGNATURE_INVALID",
            "VERIFY",
            id="der-ecdsa-signature",
        ),
        pytest.param(
            dcc_code(ES_KEY, CLAIMS, kid=KID, compress=False),
            "MALFORMED",
            "COMPRESSION",
            id="not-compressed",
        ),
        pytest.param(
            "HC1:" + b45encode(zlib.compress(bytes(2_000_000), 9)),
            "OVERSIZED",
            "COMPRESSION",
            id="zlib-bomb",
        ),
        pytest.param(
            dcc_code(ES_KEY, CLAIMS, kid=KID, prefix="hc1:"),
            "MALFORMED",
            "UNPREFIX",
            id="lower-prefix",
        ),
        pytest.param(
            dcc_code(ES_KEY, CLAIMS, kid=KID, prefix="HC2:"), "MALFORMED", "UNPREFIX", id="hc2"
        ),
        pytest.param("HC1:" + "A" * 10_000, "OVERSIZED", "B45DECODE", id="too-long"),
        pytest.param("HC1:abc", "MALFORMED", "B45DECODE", id="lower-case-base45"),
        pytest.param(
            dcc_code(ES_KEY, {1: "XX", 6: T0, 4: T0 + 1}, kid=KID),
            "MALFORMED",
            "DECODE",
            id="no-hcert",
        ),
        pytest.param(
            dcc_code(ES_KEY, {**CLAIMS, 4: "tomorrow"}, kid=KID),
            "MALFORMED",
            "DECODE",
            id="exp-text",
        ),
        pytest.param(
            dcc_code(ES_KEY, None, kid=KID, payload=b"\xff\xff"),
            "MALFORMED",
            "DECODE",
            id="payload-not-cbor",
        ),
        pytest.param(
            dcc_code(ES_KEY, dcc_claims(T0 + 1, T0 + 9), kid=KID),
            "CODE_NOT_YET_VALID",
            "EXPIRATIONCHECK",
            id="issued-later",
        ),
        pytest.param(
            dcc_code(ES_KEY, dcc_claims(T0 - 9, T0 - 1), kid=KID),
            "CODE_EXPIRED",
            "EXPIRATIONCHECK",
            id="expired",
        ),
        pytest.param(
            dcc_code(ES_KEY, dcc_claims(T0, T0), kid=KID), "OK", "", id="iat-eq-exp-eq-now"
        ),
        pytest.param(
            dcc_code(ES_KEY, dcc_claims(T0 - 9, T0 + 9, "t"), kid=KID),
            "KEY_USAGE",
            "KEYUSAGE",
            id="test-under-vaccination-only-cert",
        ),
    ],
)
def test_hc1_steps(
    code: str, reason: str, step: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, result = hc1(capsys, tmp_path, CERT, code)
    assert result["reason"] == reason, result["detail"]
    assert status == (0 if reason == "OK" else 1)
    assert result["detail"].startswith(f"{step}: ") or not step
    if reason in ("OK", "CODE_EXPIRED", "CODE_NOT_YET_VALID", "KEY_USAGE"):
        assert result["claims"]["-260"]["1"]["ver"] == "1.3.0"  # int keys as strings
    else:
        assert result["claims"] == {}


@pytest.mark.parametrize(
    ("eku", "kind", "accepted"),
    [
        pytest.param(None, "t", True, id="no-eku"),
        pytest.param(["1.3.6.1.5.5.7.3.2"], "r", True, id="unrelated-eku"),
        pytest.param([EKU_TEST, EKU_VACCINATION, EKU_RECOVERY], "r", True, id="all-three"),
        pytest.param([EKU_RECOVERY], "r", True, id="recovery"),
        pytest.param([EKU_RECOVERY], "v", False, id="recovery-cert-vaccination"),
        pytest.param(["1.3.6.1.4.1.0.1847.2021.1.1"], "t", True, id="dot-0-variant-test"),
        pytest.param(["1.3.6.1.4.1.0.1847.2021.1.1"], "v", False, id="dot-0-variant-mismatch"),
    ],
)
def test_hc1_key_usage(
    eku: list[str] | None,
    kind: str,
    accepted: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cert = certificate(ES_KEY, eku)
    code = dcc_code(ES_KEY, dcc_claims(T0 - 9, T0 + 9, kind), kid=kid_of(cert))
    status, result = hc1(capsys, tmp_path, cert, code)
    assert (status, result["reason"]) == ((0, "OK") if accepted else (1, "KEY_USAGE"))


def test_hc1_ps256_and_eddsa_signers(
    rsa_key: PrivateKey, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in (rsa_key, ED_KEY):
        cert = certificate(key)
        status, result = hc1(capsys, tmp_path, cert, dcc_code(key, CLAIMS, kid=kid_of(cert)))
        assert (status, result["reason"]) == (0, "OK"), result["detail"]
    # ES256 declared, RSA certificate: refused before any signature check
    cert = certificate(rsa_key)
    status, result = hc1(capsys, tmp_path, cert, dcc_code(ES_KEY, CLAIMS, kid=kid_of(cert)))
    assert (status, result["reason"]) == (1, "SIGNATURE_INVALID")


def test_hc1_signer_certificate_that_is_not_strict_der(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """cryptography refuses a non-minimal serial; the tolerant reader still finds key and EKU."""
    from cryptography import x509

    cert = non_der_serial(certificate(ES_KEY, [EKU_TEST]))
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(cert)
    ok = dcc_code(ES_KEY, dcc_claims(T0 - 9, T0 + 9, "t"), kid=kid_of(cert))
    assert hc1(capsys, tmp_path, cert, ok)[0] == 0
    wrong_type = dcc_code(ES_KEY, dcc_claims(T0 - 9, T0 + 9, "v"), kid=kid_of(cert))
    assert hc1(capsys, tmp_path, cert, wrong_type)[1]["reason"] == "KEY_USAGE"


def test_hc1_trust_as_pem_bundle_base64_and_case_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import base64

    other = certificate(PrivateKey.from_p256_scalar(b"\x04" * 32))
    code = dcc_code(ES_KEY, CLAIMS, kid=KID)

    def pem(der: bytes) -> str:
        body = base64.b64encode(der).decode()
        lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        return f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n"

    forms = {
        "bundle.pem": pem(other) + pem(CERT),
        "cert.b64": base64.b64encode(CERT).decode() + "\n",
        "case.json": json.dumps({"TESTCTX": {"CERTIFICATE": base64.b64encode(CERT).decode()}}),
    }
    for name, text in forms.items():
        (tmp_path / name).write_text(text)
        argv = ["--format", "hc1", "--trust", str(tmp_path / name), "--at", str(T0), code]
        assert run(capsys, *argv)[0] == 0, name
    # a dgc-testdata case file is accepted as CODE too (its PREFIX)
    (tmp_path / "code.json").write_text(json.dumps({"PREFIX": code}))
    argv = ["--format", "hc1", "--trust", str(tmp_path / "case.json"), "--at", str(T0)]
    assert run(capsys, *argv, str(tmp_path / "code.json"))[0] == 0


# --- SMART Health Cards -----------------------------------------------------------------------

SHC_KEY, SHC_JWK = shc_issuer()
KID_SHC = SHC_JWK["kid"]
NOW = 1_700_000_000
_DEFLATER = zlib.compressobj(9, zlib.DEFLATED, -15)
BOMB = _DEFLATER.compress(b" " * 5_000_000) + _DEFLATER.flush()


@pytest.fixture()
def jwks(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [SHC_JWK]}))
    return path


def shc_run(
    capsys: pytest.CaptureFixture[str], jwks: Path, code: str, *extra: str, at: float = NOW
) -> tuple[int, dict[str, Any]]:
    return run(capsys, "--format", "shc", "--trust", str(jwks), "--at", str(at), *extra, code)


def card(**kwargs: Any) -> str:
    return shc_card(SHC_KEY, KID_SHC, shc_payload(NOW - 100, **kwargs))


def _altered(jws: str) -> str:
    head, payload, signature = jws.split(".")
    flipped = "B" if signature[10] != "B" else "C"
    return f"{head}.{payload}.{signature[:10]}{flipped}{signature[11:]}"


ALTERED = _altered(card())


@pytest.mark.parametrize(
    ("code", "reason", "step"),
    [
        pytest.param(card(), "OK", "", id="jws"),
        pytest.param("shc:/" + numeric(card()), "OK", "", id="numeric"),
        pytest.param("SHC:/" + numeric(card()), "OK", "", id="numeric-upper-case-scheme"),
        pytest.param(
            "\n".join(reversed(numeric_chunks(card(), 3))), "OK", "", id="chunks-reversed"
        ),
        pytest.param("\n".join(numeric_chunks(card(), 1)), "OK", "", id="chunk-1-of-1"),
        pytest.param(
            json.dumps({"verifiableCredential": [card(), card(rid="x")]}),
            "OK",
            "",
            id="file-two-cards",
        ),
        pytest.param(card(exp=NOW), "OK", "", id="exp-inclusive"),
        pytest.param(card(exp=NOW - 1), "CODE_EXPIRED", "VALIDITY", id="expired"),
        pytest.param(
            shc_card(SHC_KEY, KID_SHC, shc_payload(NOW + 1)),
            "CODE_NOT_YET_VALID",
            "VALIDITY",
            id="nbf-future",
        ),
        pytest.param(
            shc_card(SHC_KEY, KID_SHC, {"nbf": NOW, "vc": {}}), "MALFORMED", "PAYLOAD", id="no-iss"
        ),
        pytest.param(
            shc_card(SHC_KEY, KID_SHC, None, raw_payload=zlib.compress(b"{}")),
            "MALFORMED",
            "PAYLOAD",
            id="zlib-not-raw",
        ),
        pytest.param(
            shc_card(SHC_KEY, KID_SHC, None, raw_payload=BOMB),
            "OVERSIZED",
            "PAYLOAD",
            id="deflate-bomb",
        ),
        pytest.param(
            shc_card(SHC_KEY, KID_SHC, shc_payload(NOW), header={"alg": "ES256", "kid": KID_SHC}),
            "MALFORMED",
            "JWS",
            id="no-zip",
        ),
        pytest.param(
            shc_card(SHC_KEY, KID_SHC, shc_payload(NOW), header={"zip": "DEF", "alg": "ES256"}),
            "MALFORMED",
            "JWS",
            id="no-kid",
        ),
        pytest.param(
            shc_card(
                SHC_KEY,
                KID_SHC,
                shc_payload(NOW),
                header={"zip": "DEF", "alg": "none", "kid": KID_SHC},
            ),
            "ALGORITHM_UNSUPPORTED",
            "JWS",
            id="alg-none",
        ),
        pytest.param(
            shc_card(
                SHC_KEY,
                KID_SHC,
                shc_payload(NOW),
                header={"zip": "DEF", "alg": "EdDSA", "kid": KID_SHC},
            ),
            "ALGORITHM_UNSUPPORTED",
            "JWS",
            id="alg-eddsa",
        ),
        pytest.param(
            shc_card(SHC_KEY, "unknown", shc_payload(NOW - 1)),
            "KEY_UNKNOWN",
            "KEY",
            id="kid-unknown",
        ),
        pytest.param(
            shc_card(PrivateKey.from_p256_scalar(b"\x05" * 32), KID_SHC, shc_payload(NOW - 1)),
            "SIGNATURE_INVALID",
            "VERIFY",
            id="other-signer",
        ),
        pytest.param(ALTERED, "SIGNATURE_INVALID", "VERIFY", id="signature-altered"),
        pytest.param("shc:/" + numeric(card()) + "1", "MALFORMED", "NUMERIC", id="odd-digits"),
        pytest.param(
            "shc:/" + "99" + numeric(card())[2:], "MALFORMED", "NUMERIC", id="pair-above-77"
        ),
        pytest.param(
            "\n".join(numeric_chunks(card(), 3)[:2]), "MALFORMED", "NUMERIC", id="chunk-missing"
        ),
        pytest.param(
            "\n".join([*numeric_chunks(card(), 2), numeric_chunks(card(), 2)[0]]),
            "MALFORMED",
            "NUMERIC",
            id="chunk-twice",
        ),
        pytest.param("shc:/1/2/00\nshc:/2/3/00", "MALFORMED", "NUMERIC", id="chunk-totals-differ"),
        pytest.param("shc:/" + "11" * 200_000, "OVERSIZED", "INPUT", id="oversized"),
        pytest.param("a.b", "MALFORMED", "JWS", id="two-parts"),
        pytest.param('{"verifiableCredential": []}', "MALFORMED", "INPUT", id="file-empty"),
        pytest.param("", "MALFORMED", "INPUT", id="empty"),
    ],
)
def test_shc_steps(
    code: str, reason: str, step: str, jwks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, result = shc_run(capsys, jwks, code)
    assert result["reason"] == reason, result["detail"]
    assert status == (0 if reason == "OK" else 1)
    assert result["detail"].startswith(f"{step}: ") or not step, result["detail"]


@pytest.mark.parametrize(
    ("entry", "crl_kid", "revoked"),
    [
        pytest.param("r1", KID_SHC, True, id="rid"),
        pytest.param(f"r1.{NOW - 99}", KID_SHC, True, id="cut-after-nbf"),
        pytest.param(f"r1.{NOW - 100}", KID_SHC, False, id="cut-at-nbf"),
        pytest.param(f"r1.{NOW - 101}", KID_SHC, False, id="cut-before-nbf"),
        pytest.param("r2", KID_SHC, False, id="other-rid"),
        pytest.param("r1", "another-kid", False, id="other-key's-list"),
    ],
)
def test_shc_revocation(
    entry: str,
    crl_kid: str,
    revoked: bool,
    jwks: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    crl = tmp_path / "crl.json"
    crl.write_text(json.dumps({"kid": crl_kid, "method": "rid", "ctr": 1, "rids": [entry]}))
    status, result = shc_run(capsys, jwks, card(rid="r1"), "--crl", str(crl))
    assert (status, result["reason"]) == ((1, "CODE_REVOKED") if revoked else (0, "OK"))
    assert result["claims"]["vc"]["rid"] == "r1"


def test_shc_jwks_key_whose_kid_is_not_its_thumbprint_is_set_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**SHC_JWK, "kid": "custom"}]}))
    status, result = shc_run(capsys, path, shc_card(SHC_KEY, "custom", shc_payload(NOW)))
    assert (status, result["reason"]) == (1, "KEY_UNKNOWN")
    assert "thumbprint" in result["detail"]


def test_shc_chunks_as_separate_arguments_and_on_stdin(
    jwks: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    chunks = numeric_chunks(card(), 3)
    assert shc_run(capsys, jwks, chunks[2], chunks[0], chunks[1])[0] == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("\r\n".join(chunks) + "\r\n"))
    assert shc_run(capsys, jwks, "-")[0] == 0


# --- partner regions --------------------------------------------------------------------------

REGION_NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


def region_code(
    issuer: PartnerIssuer, *, age: timedelta, ttl: timedelta, forged: bool = False
) -> str:
    issue = issuer.forge if forged else issuer.issue
    return issue(
        holder_id="110101199003070011",
        holder_name="王伟",
        colour=Colour.GREEN,
        issued_at=REGION_NOW - age,
        expires_at=REGION_NOW - age + ttl,
    )


@pytest.mark.doc("partners.md §8")
@pytest.mark.parametrize("region", sorted(ADAPTERS))
def test_region_formats(region: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    issuer = PartnerIssuer.generate(region, kid=f"kid-{region}")
    public = issuer.key.public_key()
    pem = tmp_path / "key.pem"
    pem.write_text(public.to_pem())
    at = REGION_NOW.isoformat()
    good = region_code(issuer, age=timedelta(hours=1), ttl=timedelta(hours=12))
    base = ["--format", region, "--at", at]

    status, result = run(capsys, *base, "--trust", str(pem), "--kid", issuer.kid, good)
    assert (status, result["reason"]) == (0, "OK"), result["detail"]
    claims = result["claims"]
    assert claims["region"] == region and claims["colour"] == "green"
    assert claims["holder"].startswith("h1-") and "110101199003070011" not in json.dumps(claims)
    # a single key file without a kid answers to the code's kid (its signature must verify)
    assert run(capsys, *base, "--trust", str(pem), good)[0] == 0
    # a code signed by another key under the same kid
    forged = region_code(issuer, age=timedelta(hours=1), ttl=timedelta(hours=12), forged=True)
    status, result = run(capsys, *base, "--trust", str(pem), forged)
    assert (status, result["reason"]) == (1, "SIGNATURE_INVALID")
    assert result["detail"].startswith("VERIFY: ")
    # expired: claims shown, reason CODE_EXPIRED
    old = region_code(issuer, age=timedelta(hours=2), ttl=timedelta(hours=1))
    status, result = run(capsys, *base, "--trust", str(pem), "--kid", issuer.kid, old)
    assert (status, result["reason"]) == (1, "CODE_EXPIRED")
    assert result["claims"]["region"] == region
    # a JWKS with kids: the code's kid must be one of them
    if public.alg is not Algorithm.PS256:
        other = PrivateKey.generate(public.alg).public_key()
        jwks = tmp_path / "jwks.json"
        jwks.write_text(
            json.dumps(
                {"keys": [{**other.to_jwk(), "kid": "a"}, {**public.to_jwk(), "kid": issuer.kid}]}
            )
        )
        assert run(capsys, *base, "--trust", str(jwks), good)[0] == 0
        jwks.write_text(json.dumps({"keys": [{**public.to_jwk(), "kid": "not-it"}]}))
        status, result = run(capsys, *base, "--trust", str(jwks), good)
        assert (status, result["reason"]) == (1, "KEY_UNKNOWN")


@pytest.mark.doc("partners.md §8")
def test_region_too_old_and_not_yet_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    issuer = PartnerIssuer.generate("110000")  # max age 24 h; kid = fingerprint
    pem = tmp_path / "key.pem"
    pem.write_text(issuer.key.public_key().to_pem())
    base = ["--format", "110000", "--trust", str(pem), "--at", REGION_NOW.isoformat()]
    old = region_code(issuer, age=timedelta(hours=25), ttl=timedelta(days=3))
    assert run(capsys, *base, old)[1]["reason"] == "CODE_TOO_OLD"
    future = region_code(issuer, age=-timedelta(hours=1), ttl=timedelta(days=1))
    assert run(capsys, *base, future)[1]["reason"] == "CODE_NOT_YET_VALID"


def test_region_known_answer_vector_file_as_trust(capsys: pytest.CaptureFixture[str]) -> None:
    vectors = Path(__file__).parent / "vectors"
    for path in sorted(vectors.glob("*.json")):
        vector = json.loads(path.read_text(encoding="utf-8"))
        case = vector["cases"][0]
        argv = ["--format", vector["region"], "--trust", str(path)]
        status, result = run(capsys, *argv, "--at", case["expected"]["issued_at"], case["code"])
        assert status == 0, (path.name, result)
        assert result["claims"]["kid"] == vector["kid"]


# --- usage errors (exit 2) --------------------------------------------------------------------


@pytest.mark.doc('verifying.md "Command"')
def test_usage_errors_exit_2(
    tmp_path: Path, jwks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    private = tmp_path / "private.json"
    private.write_text(json.dumps({"keys": [{**SHC_JWK, "d": "AAAA"}]}))
    garbage = tmp_path / "garbage.der"
    garbage.write_bytes(b"\x30\x03\x02\x01\x01")
    missing = str(tmp_path / "missing")
    cases = [
        ["--format", "hc1", "--trust", missing, "HC1:"],
        ["--format", "hc1", "--trust", str(garbage), "HC1:"],
        ["--format", "shc", "--trust", str(bad), "shc:/00"],
        ["--format", "shc", "--trust", str(private), "shc:/00"],
        ["--format", "shc", "--trust", str(jwks), "--crl", missing, "shc:/00"],
        ["--format", "shc", "--trust", str(jwks), "--crl", str(bad), "shc:/00"],
        ["--format", "hc1", "--trust", str(jwks), "--crl", str(jwks), "HC1:"],
        ["--format", "hc1", "--trust", str(jwks), "--kid", "k", "HC1:"],
        ["--format", "hc1", "--trust", str(garbage), "HC1:", "HC1:"],
        ["--format", "999999", "--trust", str(jwks), "X"],
        ["--format", "shc", "--trust", str(jwks), "--at", "yesterday", "shc:/00"],
        ["--format", "110000", "--trust", str(garbage), "BJ1:"],
        ["--format", "110000", "--trust", str(private), "BJ1:"],
        ["--format", "shc", "--trust", str(jwks)],
    ]
    for argv in cases:
        assert main(["verify", *argv, "--json"]) == 2, argv
        assert capsys.readouterr().out == ""


def test_fractional_unix_time(jwks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = shc_card(SHC_KEY, KID_SHC, shc_payload(NOW + 0.5))
    assert shc_run(capsys, jwks, code, at=NOW + 0.25)[1]["reason"] == "CODE_NOT_YET_VALID"
    assert shc_run(capsys, jwks, code, at=NOW + 0.5)[0] == 0


def test_hc1_signer_certificate_with_a_key_the_gateway_does_not_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A P-384 signer certificate is a usable trust file; its codes are refused at VERIFY."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "P-384 TEST DSC")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(7)
        .not_valid_before(datetime(2021, 1, 1))
        .not_valid_after(datetime(2022, 1, 1))
        .sign(private, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    status, result = hc1(capsys, tmp_path, cert, dcc_code(ES_KEY, CLAIMS, kid=kid_of(cert)))
    assert (status, result["reason"]) == (1, "ALGORITHM_UNSUPPORTED")
    assert result["detail"].startswith("VERIFY: ")


def test_shc_file_with_a_byte_order_mark(
    jwks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "card.smart-health-card"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"verifiableCredential": [card()]}).encode())
    assert shc_run(capsys, jwks, str(path))[0] == 0


def test_shc_chunks_run_together_split_at_each_scheme(
    jwks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Chunk files concatenated without line breaks (``cat *.txt``) still read as chunks."""
    chunks = numeric_chunks(card(), 3)
    assert shc_run(capsys, jwks, chunks[1] + chunks[0] + chunks[2])[0] == 0
