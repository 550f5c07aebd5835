"""Public conformance vectors, run through ``trustgw verify`` (``gateway.cli.main``).

The vectors live in ``shared/conformance`` beside the clone (or ``$TRUSTGW_CONFORMANCE_DIR``) and
are never copied into the repository; where they are absent the tests skip, or fail with
``TRUSTGW_REQUIRE_CONFORMANCE=1`` as in CI (``support.conformance``). ``accept`` and
``accept-partial`` must accept, ``reject`` must reject; the either-way verdicts must go the way
docs/conformance.md records.
"""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support.conformance import ROOT, absent, needs

from adapters.credentials import shc
from gateway.cli import main

# Also runs with every dependency at its floor (.ci/lowest-versions).
pytestmark = pytest.mark.lowest

DCC = ROOT / "dcc"
SHC = ROOT / "shc"

# Cases whose only failing upstream step is one the gateway does not run (schema validation,
# decoding a QR image): the gateway accepts them, as docs/conformance.md records.
EITHER_WAY = {"reject-only-if-schema-checked": 0, "reject-only-if-image-input": 0}
EXIT = {"accept": 0, "accept-partial": 0, "reject": 1}


def utc_clock(text: str) -> str:
    """A case's VALIDATIONCLOCK for ``--at``: the cases define a time without an offset as UTC
    (shared/conformance/README.md); ``trustgw verify`` wants every offset written out."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def verify(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["verify", *argv, "--json"])
    out = capsys.readouterr().out
    result = json.loads(out)
    assert set(result) == {"verdict", "reason", "detail", "claims"}
    assert result["verdict"] == ("accept" if code == 0 else "reject")
    return code, result


def dcc_cases() -> list[Any]:
    index = DCC / "cases.json"
    if not index.is_file():
        return absent("dcc")
    return [
        pytest.param(case, id=f"dcc-{Path(case['file']).stem}")
        for case in json.loads(index.read_text(encoding="utf-8"))["cases"]
    ]


def shc_index() -> dict[str, Any]:
    return dict(json.loads((SHC / "cases.json").read_text(encoding="utf-8")))


def shc_cases() -> list[Any]:
    if not (SHC / "cases.json").is_file():
        return absent("shc")
    index = shc_index()
    params = [pytest.param(case, id=f"shc-{case['id']}") for case in index["cases"]]
    params += [
        pytest.param(
            case,
            id=f"shc-{case['id']}",
            marks=pytest.mark.skip(reason="lenient_only: upstream only warns; not scored"),
        )
        for case in index.get("lenient_only", ())
    ]
    return params


@pytest.mark.conformance
@pytest.mark.parametrize("case", dcc_cases())
def test_dcc_case(case: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads((DCC / case["file"]).read_text(encoding="utf-8"))
    cert = tmp_path / "signer.der"
    cert.write_bytes(base64.b64decode(data["TESTCTX"]["CERTIFICATE"]))
    code, result = verify(
        capsys, "--format", "hc1", "--trust", str(cert),
        "--at", utc_clock(case["validation_clock"]), data["PREFIX"],
    )  # fmt: skip
    expected = EXIT.get(case["verdict"], EITHER_WAY.get(case["verdict"]))
    assert code == expected, f"{case['description']}: {result['reason']}: {result['detail']}"
    if code == 0:
        assert "-260" in result["claims"] and "4" in result["claims"]
    elif result["reason"] in {"CODE_EXPIRED", "CODE_NOT_YET_VALID", "KEY_USAGE"}:
        assert "-260" in result["claims"]  # refused after the signature verified: claims shown
    else:
        assert result["claims"] == {}


def _shc_argv(case: dict[str, Any], index: dict[str, Any]) -> list[str]:
    argv = ["--format", "shc", "--trust", str(SHC / index["jwks"]["spec"])]
    for crl in index.get("crls", ()):
        argv += ["--crl", str(SHC / crl)]
    if case.get("now") is not None:
        argv += ["--at", str(case["now"])]
    return argv


@pytest.mark.conformance
@pytest.mark.parametrize("case", shc_cases())
def test_shc_case(
    case: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    index = shc_index()
    files = [SHC / name for name in case["files"]]
    if len(files) == 1:
        code, result = verify(capsys, *_shc_argv(case, index), str(files[0]))
    else:  # chunks, one per line on standard input, in the case's order
        text = "\n".join(path.read_text(encoding="utf-8").strip() for path in files) + "\n"
        monkeypatch.setattr("sys.stdin", io.StringIO(text))
        code, result = verify(capsys, *_shc_argv(case, index), "-")
    expected = 0 if case["expect"] == "accept" else 1
    assert code == expected, f"{case['reason']}: {result['reason']}: {result['detail']}"
    if code == 0:
        assert {"iss", "nbf", "vc"} <= set(result["claims"])
    else:
        assert result["reason"] == "CODE_REVOKED"
        assert result["claims"]["vc"]["rid"]


# --- the same vectors, other ways in ----------------------------------------------------------

needs_dcc = needs("dcc")
needs_shc = needs("shc")


@needs_dcc
@pytest.mark.conformance
def test_dcc_trust_as_pem_and_code_from_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads((DCC / "common/2DCode/raw/CO28.json").read_text(encoding="utf-8"))
    body = data["TESTCTX"]["CERTIFICATE"]
    pem = tmp_path / "signer.pem"
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    pem.write_text(
        "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(data["PREFIX"] + "\n"))
    code, result = verify(
        capsys, "--format", "hc1", "--trust", str(pem), "--at", "2021-05-21T12:26:07Z", "-"
    )
    assert code == 0, result
    assert result["claims"]["1"] == "SE"
    # one second after exp is expired; exp itself is still valid (inclusive)
    exp = result["claims"]["4"]
    for at, expected in ((exp, 0), (exp + 1, 1)):
        monkeypatch.setattr("sys.stdin", io.StringIO(data["PREFIX"]))
        assert (
            verify(capsys, "--format", "hc1", "--trust", str(pem), "--at", str(at), "-")[0]
            == expected
        )


@needs_shc
@pytest.mark.conformance
def test_shc_without_crl_accepts_the_revoked_example_and_with_it_rejects(
    capsys: pytest.CaptureFixture[str],
) -> None:
    index = shc_index()
    jws = str(SHC / "spec-examples/example-03-d-jws.txt")
    jwks = str(SHC / index["jwks"]["spec"])
    assert verify(capsys, "--format", "shc", "--trust", jwks, "--at", "1687500000", jws)[0] == 0
    code, result = verify(capsys, *_shc_argv({"now": 1687500000}, index), jws)
    assert (code, result["reason"]) == (1, "CODE_REVOKED")
    # the card expires at 1718986764.657: later it is expired whatever the list says
    code, result = verify(capsys, "--format", "shc", "--trust", jwks, "--at", "1718986765", jws)
    assert (code, result["reason"]) == (1, "CODE_EXPIRED")


@needs_shc
@pytest.mark.conformance
def test_shc_spec_issuer_kids_are_jwk_thumbprints() -> None:
    jwks = json.loads((SHC / shc_index()["jwks"]["spec"]).read_text(encoding="utf-8"))
    for jwk in jwks["keys"]:
        assert shc.thumbprint(jwk) == jwk["kid"]


@needs_shc
@pytest.mark.conformance
def test_shc_missing_chunk_and_foreign_jwks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    index = shc_index()
    chunks = [
        (SHC / f"spec-examples/example-02-f-qr-code-numeric-value-{i}.txt").read_text().strip()
        for i in range(3)
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(chunks[:2])))
    code, result = verify(capsys, *_shc_argv({"now": 1687500000}, index), "-")
    assert (code, result["reason"]) == (1, "MALFORMED")
    assert result["detail"].startswith("NUMERIC:")
    other = tmp_path / "jwks.json"
    other.write_text(json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "x",
        "x": "PQHApUWm94mflvswQgAnfHlETMwJFqjUVSs7WU6LQy4",
        "y": "7mj8IO-8V5VZjDbRVsJINC_Rq5ai5CDhFX18ceRsLWQ"}]}))  # fmt: skip
    code, result = verify(
        capsys, "--format", "shc", "--trust", str(other), "--at", "1687500000",
        str(SHC / "spec-examples/example-00-d-jws.txt"),
    )  # fmt: skip
    assert (code, result["reason"]) == (1, "KEY_UNKNOWN")


def test_the_harness_reads_a_clock_without_an_offset_as_utc() -> None:
    """Not operator input: the vectors' own convention, written out for ``--at``."""
    assert utc_clock("2021-05-03T18:00:00") == "2021-05-03T18:00:00+00:00"
    assert utc_clock("2021-05-21T12:26:07.390079Z") == "2021-05-21T12:26:07.390079+00:00"
