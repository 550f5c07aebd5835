"""``trustgw partner-tools``: a partner's keys, partner file, signed statements and test codes.

Pins docs/onboarding.md "The commands" (every rule stated there): private key files encrypted
with the passphrase, mode 0600, never overwritten, ``--dev`` unencrypted with a warning; the
region's algorithm by default; the partner file's fingerprint is the one ``partner add``
prints; key sets version 1 or the previous one's n+1; statements that the offline check
accepts only with a threshold of the region's anchors; test codes of every region that the
region's own offline verification accepts; no raw holder id or name in any output but the code.
The walkthrough against a real gateway is tests/test_onboarding_walkthrough.py.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from cli_support import Ran, one_line_error, trustgw
from cryptography.hazmat.primitives import serialization

from adapters.regions import REGION_ALGORITHMS, REGION_SPECS
from keys.anchors import PartnerFile
from keys.signed import Envelope
from keys.statements import KeySet, RevocationBatch, code_hash

PASSPHRASE = "correct horse battery staple"
HOLDER_ID, HOLDER_NAME = "11010519491231002X", "王小明"


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory to work in, with the partner's passphrase set."""
    monkeypatch.delenv("TRUSTGW_PASSPHRASE_FILE", raising=False)
    monkeypatch.setenv("TRUSTGW_PASSPHRASE", PASSPHRASE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tools(capsys: pytest.CaptureFixture[str], *argv: str) -> Ran:
    return trustgw(capsys, "partner-tools", *argv)


def ok(capsys: pytest.CaptureFixture[str], *argv: str) -> Ran:
    ran = tools(capsys, *argv)
    assert ran.status == 0, ran.err
    return ran


def anchors(capsys: pytest.CaptureFixture[str], region: str = "110000", n: int = 3) -> list[str]:
    kids = [f"{region}-a{i}" for i in range(1, n + 1)]
    ok(
        capsys,
        "keygen",
        "--region",
        region,
        "--role",
        "anchor",
        *[w for k in kids for w in ("--kid", k)],
        "--out-dir",
        "bj",
    )
    return kids


def partner_file(capsys: pytest.CaptureFixture[str], kids: list[str], k: int, out: str) -> Ran:
    return ok(
        capsys,
        "partner-file",
        "--region",
        kids[0][:6],
        "--threshold",
        str(k),
        *[w for kid in kids for w in ("--anchor", f"bj/{kid}.jwk")],
        "--out",
        out,
    )


def sign_args(*kids: str) -> list[str]:
    return [w for kid in kids for w in ("--sign", f"bj/{kid}.key")]


# --- key files --------------------------------------------------------------------------------


def test_keygen_writes_an_encrypted_private_file_0600_and_public_jwk_and_pem(
    kit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = ok(
        capsys,
        "keygen",
        "--region",
        "120000",
        "--role",
        "signing",
        "--kid",
        "tj-1",
        "--out-dir",
        "tj",
        "--json",
    )
    [made] = ran.json()
    assert made["alg"] == "ES256" and made["encrypted"] is True  # Tianjin's codes are ES256
    private = kit / "tj" / "tj-1.key"
    assert private.stat().st_mode & 0o777 == 0o600
    content = json.loads(private.read_text())
    assert content["type"] == "trustgw/partner-key/v1" and content["encrypted"] is True
    # Encrypted under the passphrase: unreadable without it, and it opens with it.
    pem = content["private_key"].encode("ascii")
    with pytest.raises(TypeError):  # "Password was not given but private key is encrypted"
        serialization.load_pem_private_key(pem, password=None)
    assert serialization.load_pem_private_key(pem, password=PASSPHRASE.encode()) is not None
    jwk = json.loads((kit / "tj" / "tj-1.jwk").read_text())
    assert jwk["kid"] == "tj-1" and jwk["alg"] == "ES256" and "d" not in jwk
    assert (kit / "tj" / "tj-1.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")


@pytest.mark.parametrize("spec", REGION_SPECS, ids=lambda s: s.code)
def test_keys_get_the_algorithm_the_regions_codes_are_signed_with(
    spec: Any, kit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for role in ("anchor", "signing"):
        ran = ok(
            capsys,
            "keygen",
            "--region",
            spec.code,
            "--role",
            role,
            "--kid",
            role,
            "--out-dir",
            "k",
            "--dev",
            "--json",
        )
        assert {ran.json()[0]["alg"]} <= {a.value for a in REGION_ALGORITHMS[spec.code]}


def test_a_signing_key_of_another_algorithm_is_refused(
    kit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = tools(
        capsys,
        "keygen",
        "--region",
        "120000",
        "--role",
        "signing",
        "--kid",
        "x",
        "--alg",
        "EdDSA",
        "--out-dir",
        "k",
    )
    assert one_line_error(ran) == "KEY_ALGORITHM_MISMATCH"
    assert not (kit / "k").exists()


def test_without_a_passphrase_keygen_refuses_and_dev_says_loudly_it_does_not_encrypt(
    kit: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRUSTGW_PASSPHRASE")
    argv = ["keygen", "--region", "110000", "--role", "anchor", "--kid", "a", "--out-dir", "k"]
    assert one_line_error(tools(capsys, *argv)) == "PASSPHRASE"
    assert not (kit / "k").exists()
    ran = tools(capsys, *argv, "--dev")
    assert ran.status == 0 and ran.err.startswith("WARNING: development keys:")
    assert "NOT encrypted" in ran.err and "NOT encrypted" in ran.out
    assert json.loads((kit / "k" / "a.key").read_text())["encrypted"] is False


def test_a_key_file_is_never_overwritten_and_nothing_is_written_on_refusal(
    kit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    anchors(capsys, n=1)
    before = (kit / "bj" / "110000-a1.key").read_bytes()
    ran = tools(
        capsys,
        "keygen",
        "--region",
        "110000",
        "--role",
        "anchor",
        "--kid",
        "new",
        "--kid",
        "110000-a1",
        "--out-dir",
        "bj",
    )
    assert one_line_error(ran) == "ALREADY_EXISTS"
    assert (kit / "bj" / "110000-a1.key").read_bytes() == before
    assert not (kit / "bj" / "new.key").exists()


def test_a_wrong_passphrase_is_one_line_passphrase(
    kit: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kids = anchors(capsys, n=1)
    ok(capsys, "keygen", "--region", "110000", "--role", "signing", "--kid", "s", "--out-dir", "bj")
    monkeypatch.setenv("TRUSTGW_PASSPHRASE", "wrong")
    ran = tools(capsys, "code", "--signing-key", "bj/s.key")
    assert one_line_error(ran) == "PASSPHRASE" and "bj/s.key" in ran.err
    ran = tools(
        capsys,
        "revoke-key",
        "--region",
        "110000",
        "--kid",
        "s",
        "--compromised-at",
        "2026-01-01T00:00:00Z",
        *sign_args(*kids),
        "--out",
        "r.json",
    )
    assert one_line_error(ran) == "PASSPHRASE" and not (kit / "r.json").exists()


# --- the partner file -------------------------------------------------------------------------


def test_the_partner_files_fingerprint_is_the_one_partner_add_prints(
    kit: Path, capsys: pytest.CaptureFixture[str], own_data_dir: Path
) -> None:
    kids = anchors(capsys)
    made = partner_file(capsys, kids, 2, "bj.json")
    parsed = PartnerFile.from_bytes((kit / "bj.json").read_bytes())
    assert parsed.anchors.threshold == 2 and sorted(parsed.anchors.kids) == kids
    assert (parsed.region.name, parsed.region.mode.value) == ("Beijing", "show")  # the region's
    fingerprint = parsed.anchors.fingerprint()
    assert f"anchor fingerprint {fingerprint}" in made.out
    added = trustgw(capsys, "partner", "add", "--data-dir", str(own_data_dir), "--file", "bj.json")
    assert added.status == 0 and f"fingerprint {fingerprint}" in added.out


@pytest.mark.parametrize(
    ("anchor_file", "threshold", "reason"),
    [
        pytest.param("bj/110000-a1.key", "1", "MALFORMED", id="a-private-key-file"),
        pytest.param("bj/110000-a1.pem", "1", "MALFORMED", id="pem-without-kid"),
        pytest.param("bj/110000-a1.jwk", "2", "USAGE", id="threshold-above-the-anchors"),
    ],
)
def test_unusable_anchors_make_no_partner_file(
    kit: Path, capsys: pytest.CaptureFixture[str], anchor_file: str, threshold: str, reason: str
) -> None:
    anchors(capsys, n=1)
    ran = tools(
        capsys,
        "partner-file",
        "--region",
        "110000",
        "--anchor",
        anchor_file,
        "--threshold",
        threshold,
        "--out",
        "p.json",
    )
    assert one_line_error(ran) == reason and not (kit / "p.json").exists()


# --- statements -------------------------------------------------------------------------------


@pytest.fixture
def beijing(kit: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Three anchors (2 of 3), a partner file bj.json and a signing key bj/s1."""
    kids = anchors(capsys)
    partner_file(capsys, kids, 2, "bj.json")
    ok(
        capsys,
        "keygen",
        "--region",
        "110000",
        "--role",
        "signing",
        "--kid",
        "s1",
        "--kid",
        "s2",
        "--out-dir",
        "bj",
    )
    return kids


def check(capsys: pytest.CaptureFixture[str], statement: str, *extra: str) -> Ran:
    return tools(capsys, "verify-statement", "--partner-file", "bj.json", *extra, statement)


def test_key_sets_go_from_version_1_to_the_previous_ones_n_plus_1(
    kit: Path, capsys: pytest.CaptureFixture[str], beijing: list[str]
) -> None:
    ok(
        capsys,
        "keyset",
        "--region",
        "110000",
        "--version",
        "1",
        "--key",
        "bj/s1.jwk",
        "--not-before",
        "2026-03-01T00:00:00+08:00",
        "--not-after",
        "2027-03-01T00:00:00+08:00",
        *sign_args(*beijing[:2]),
        "--out",
        "ks1.json",
    )
    first = KeySet.from_signed(Envelope.from_bytes((kit / "ks1.json").read_bytes()).signed)
    assert first.version == 1 and [k.kid for k in first.keys] == ["s1"]
    assert first.keys[0].not_before.isoformat() == "2026-02-28T16:00:00+00:00"
    ran = ok(
        capsys,
        "keyset",
        "--previous",
        "ks1.json",
        "--key",
        "bj/s2.jwk",
        *sign_args(*beijing[1:]),
        "--out",
        "ks2.json",
        "--json",
    )
    assert ran.json()["version"] == 2 and [k["kid"] for k in ran.json()["keys"]] == ["s1", "s2"]
    ok(
        capsys,
        "keyset",
        "--previous",
        "ks2.json",
        "--drop",
        "s1",
        *sign_args(*beijing[:2]),
        "--out",
        "ks3.json",
    )
    third = KeySet.from_signed(Envelope.from_bytes((kit / "ks3.json").read_bytes()).signed)
    assert third.version == 3 and [k.kid for k in third.keys] == ["s2"]
    second = KeySet.from_signed(Envelope.from_bytes((kit / "ks2.json").read_bytes()).signed)
    assert third.keys[0] == second.keys[1]  # kept with its validity
    for name in ("ks1.json", "ks2.json", "ks3.json"):
        assert check(capsys, name).status == 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        pytest.param(["--region", "110000"], "--version", id="neither-version-nor-previous"),
        pytest.param(
            ["--region", "110000", "--version", "1", "--previous", "ks1.json"],
            "--version",
            id="both",
        ),
        pytest.param(
            ["--previous", "ks1.json", "--key", "bj/s1.jwk"], "listed already", id="a-kid-twice"
        ),
        pytest.param(
            ["--previous", "ks1.json", "--drop", "s2"], "does not list", id="drop-unknown"
        ),
        pytest.param(["--previous", "ks1.json", "--region", "120000"], "region", id="other-region"),
        pytest.param(
            ["--region", "110000", "--version", "1", "--not-after", "2027-01-01T00:00:00Z"],
            "--key",
            id="validity-without-a-key",
        ),
        pytest.param(
            ["--region", "110000", "--version", "1", "--expires", "2020-01-01T00:00:00Z"],
            "future",
            id="expired-already",
        ),
    ],
)
def test_key_set_requests_that_cannot_be_right_are_usage_errors(
    kit: Path, capsys: pytest.CaptureFixture[str], beijing: list[str], argv: list[str], needle: str
) -> None:
    ok(
        capsys,
        "keyset",
        "--region",
        "110000",
        "--version",
        "1",
        "--key",
        "bj/s1.jwk",
        *sign_args(*beijing[:2]),
        "--out",
        "ks1.json",
    )
    ran = tools(capsys, "keyset", *argv, *sign_args(*beijing[:2]), "--out", "x.json")
    assert one_line_error(ran) == "USAGE" and needle in ran.err and not (kit / "x.json").exists()


@pytest.mark.parametrize(
    ("signers", "reason"),
    [
        pytest.param([0], "THRESHOLD_NOT_MET", id="one-of-two"),
        pytest.param([0, 0], "MALFORMED", id="the-same-anchor-twice"),
    ],
)
def test_the_offline_check_needs_a_threshold_of_distinct_anchors(
    kit: Path,
    capsys: pytest.CaptureFixture[str],
    beijing: list[str],
    signers: list[int],
    reason: str,
) -> None:
    ran = tools(
        capsys,
        "revoke-key",
        "--region",
        "110000",
        "--kid",
        "s1",
        "--compromised-at",
        "1773216000",
        *sign_args(*[beijing[i] for i in signers]),
        "--out",
        "r.json",
    )
    if ran.status != 0:
        assert one_line_error(ran) == reason
        return
    assert one_line_error(check(capsys, "r.json")) == reason


def test_a_statement_is_checked_against_its_own_regions_anchors_and_expiry(
    kit: Path, capsys: pytest.CaptureFixture[str], beijing: list[str]
) -> None:
    ok(
        capsys,
        "keyset",
        "--region",
        "110000",
        "--version",
        "1",
        "--key",
        "bj/s1.jwk",
        "--expires",
        "2030-01-01T00:00:00Z",
        *sign_args(*beijing[:2]),
        "--out",
        "ks.json",
    )
    checked = ok(capsys, "verify-statement", "--partner-file", "bj.json", "--json", "ks.json")
    assert checked.json()["signers"] == beijing[:2] and checked.json()["threshold"] == 2
    late = check(capsys, "ks.json", "--at", "2030-01-01T00:00:01Z")
    assert one_line_error(late) == "KEYSET_EXPIRED"
    other = anchors(capsys, "120000", n=1)
    partner_file(capsys, other, 1, "tj.json")
    ran = tools(capsys, "verify-statement", "--partner-file", "tj.json", "ks.json")
    assert one_line_error(ran) == "REGION_FORBIDDEN"
    envelope = json.loads((kit / "ks.json").read_text())
    envelope["signatures"] = envelope["signatures"][:1] * 2  # one anchor's signature twice
    (kit / "twice.json").write_text(json.dumps(envelope))
    assert one_line_error(check(capsys, "twice.json")) == "THRESHOLD_NOT_MET"
    ran = tools(
        capsys,
        "keyset",
        "--region",
        "110000",
        "--version",
        "1",
        "--sign",
        "bj/s1.key",
        "--out",
        "x.json",
    )
    assert one_line_error(ran) == "MALFORMED" and "code-signing key" in ran.err


def test_an_anchor_rotation_needs_old_and_new_anchors(
    kit: Path, capsys: pytest.CaptureFixture[str], beijing: list[str]
) -> None:
    ok(
        capsys,
        "keygen",
        "--region",
        "110000",
        "--role",
        "anchor",
        "--kid",
        "n1",
        "--kid",
        "n2",
        "--out-dir",
        "bj",
    )
    ok(
        capsys,
        "partner-file",
        "--region",
        "110000",
        "--threshold",
        "2",
        "--anchor",
        "bj/n1.jwk",
        "--anchor",
        "bj/n2.jwk",
        "--out",
        "bj-new.json",
    )
    argv = [
        "keyset",
        "--region",
        "110000",
        "--version",
        "2",
        "--key",
        "bj/s1.jwk",
        "--new-anchors",
        "bj-new.json",
    ]
    ok(capsys, *argv, *sign_args(*beijing[:2]), "--out", "old-only.json")
    assert one_line_error(check(capsys, "old-only.json")) == "THRESHOLD_NOT_MET"
    ok(capsys, *argv, *sign_args(*beijing[:2], "n1", "n2"), "--out", "both.json")
    ran = ok(capsys, "verify-statement", "--partner-file", "bj.json", "--json", "both.json")
    assert ran.json()["new_anchor_signers"] == ["n1", "n2"]


def test_a_revocation_batch_hashes_holder_ids_and_never_writes_them(
    kit: Path, capsys: pytest.CaptureFixture[str], beijing: list[str]
) -> None:
    (kit / "holders.txt").write_text(f"# revoked holders\n{HOLDER_ID}\n\n{HOLDER_ID.lower()}\n")
    (kit / "codes.txt").write_text("c0ffee02\n")
    ran = ok(
        capsys,
        "revocations",
        "--region",
        "110000",
        "--batch-id",
        "2026-03-11-0001",
        "--code-id",
        "c0ffee01",
        "--code-ids",
        "codes.txt",
        "--holder-ids",
        "holders.txt",
        *sign_args(*beijing[:2]),
        "--out",
        "rev.json",
        "--json",
    )
    assert (ran.json()["codes"], ran.json()["holders"]) == (2, 1)  # the ID number normalised
    envelope = Envelope.from_bytes((kit / "rev.json").read_bytes())
    batch = RevocationBatch.from_signed(envelope.signed)
    assert batch.codes == (code_hash("110000", "c0ffee01"), code_hash("110000", "c0ffee02"))
    written = ran.out + ran.err + envelope.signed.decode()
    assert HOLDER_ID not in written and HOLDER_ID.lower() not in written
    assert check(capsys, "rev.json").status == 0
    (kit / "bad.txt").write_text(f"{HOLDER_ID}\n{HOLDER_ID[:-1]}\n")
    ran = tools(
        capsys,
        "revocations",
        "--region",
        "110000",
        "--batch-id",
        "b",
        "--holder-ids",
        "bad.txt",
        *sign_args(*beijing[:2]),
        "--out",
        "x.json",
    )
    assert one_line_error(ran) == "USAGE" and "entry 2 of bad.txt" in ran.err
    assert HOLDER_ID[:-1] not in ran.err


# --- test codes -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", REGION_SPECS, ids=lambda s: s.code)
@pytest.mark.parametrize("colour", ["green", "yellow", "red"])
def test_a_test_code_of_every_region_verifies_offline_with_its_colour_and_times(
    spec: Any, colour: str, kit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(
        capsys,
        "keygen",
        "--region",
        spec.code,
        "--role",
        "signing",
        "--kid",
        "t1",
        "--out-dir",
        "k",
        "--dev",
    )
    made = ok(
        capsys,
        "code",
        "--signing-key",
        "k/t1.key",
        "--colour",
        colour,
        "--issued-at",
        "2026-03-11T16:00:00+08:00",
        "--expires-at",
        "2026-03-12T16:00:00+08:00",
        "--out",
        "code.txt",
        "--json",
    ).json()
    assert (made["region"], made["colour"], made["kid"]) == (spec.code, colour, "t1")
    assert (made["issued_at"], made["expires_at"]) == (
        "2026-03-11T08:00:00Z",
        "2026-03-12T08:00:00Z",
    )
    assert made["code_hash"] == code_hash(spec.code, made["code_id"])
    assert (kit / "code.txt").read_text() == made["code"] + "\n"
    ran = trustgw(
        capsys,
        "verify",
        "--format",
        spec.code,
        "--trust",
        "k/t1.jwk",
        "--at",
        "2026-03-11T18:00:00+08:00",
        "--json",
        "code.txt",
    )
    verdict = ran.json()
    assert verdict["verdict"] == "accept", verdict
    claims = verdict["claims"]
    assert (claims["colour"], claims["code_id"], claims["kid"]) == (colour, made["code_id"], "t1")


def test_a_test_code_names_no_holder_outside_the_code(
    kit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(capsys, "keygen", "--region", "310000", "--role", "signing", "--kid", "sh", "--out-dir", "k")
    for extra in (["--json"], ["--out", "c.txt"], []):
        ran = ok(
            capsys,
            "code",
            "--signing-key",
            "k/sh.key",
            "--holder-id",
            HOLDER_ID,
            "--holder-name",
            HOLDER_NAME,
            "--code-id",
            "c1",
            *extra,
        )
        printed = ran.err + (ran.out.replace(ran.json()["code"], "") if extra == ["--json"] else "")
        if extra == ["--out", "c.txt"]:
            printed += ran.out
        assert HOLDER_ID not in printed and HOLDER_NAME not in printed
    ran = tools(capsys, "code", "--signing-key", "k/sh.key", "--holder-id", HOLDER_ID[:-1] + "0")
    assert one_line_error(ran) == "MALFORMED" and HOLDER_ID[:-1] not in ran.err


@pytest.mark.parametrize(
    ("region", "code_id", "needle"),
    [
        pytest.param("340000", "c1", "carry no code id", id="derived-region"),
        pytest.param("130000", "xyz", "hex", id="bytes-region-not-hex"),
        pytest.param("130000", "ABCD", "lower case", id="bytes-region-upper-case"),
    ],
)
def test_a_code_id_the_region_cannot_carry_is_refused(
    kit: Path, capsys: pytest.CaptureFixture[str], region: str, code_id: str, needle: str
) -> None:
    ok(
        capsys,
        "keygen",
        "--region",
        region,
        "--role",
        "signing",
        "--kid",
        "k1",
        "--out-dir",
        "k",
        "--dev",
    )
    ran = tools(capsys, "code", "--signing-key", "k/k1.key", "--code-id", code_id)
    assert one_line_error(ran) == "MALFORMED" and needle in ran.err


def test_a_code_is_signed_with_a_signing_key_not_an_anchor(
    kit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    anchors(capsys, n=1)
    ran = tools(capsys, "code", "--signing-key", "bj/110000-a1.key")
    assert one_line_error(ran) == "MALFORMED" and "anchor" in ran.err


# --- calling a gateway ------------------------------------------------------------------------


@pytest.mark.integration
def test_an_unreachable_gateway_is_one_line_unavailable_and_a_receipt_file_is_never_overwritten(
    kit: Path, capsys: pytest.CaptureFixture[str], dev_data_dir: Path, beijing: list[str]
) -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pki = dev_data_dir / "pki"
    tls = [
        "--gateway",
        f"127.0.0.1:{port}",
        "--cert",
        str(pki / "server.pem"),
        "--key",
        str(pki / "server.key"),
        "--ca",
        str(pki / "ca.pem"),
        "--timeout",
        "1",
    ]
    ok(
        capsys,
        "revoke-key",
        "--region",
        "110000",
        "--kid",
        "s1",
        "--compromised-at",
        "1773216000",
        *sign_args(*beijing[:2]),
        "--out",
        "r.json",
    )
    ok(capsys, "code", "--signing-key", "bj/s1.key", "--out", "c.txt")
    for argv in (["publish", *tls, "r.json"], ["recognise", *tls, "c.txt"]):
        ran = tools(capsys, *argv)
        assert one_line_error(ran) in ("UNAVAILABLE", "DEADLINE_EXCEEDED") and ran.status == 1
    (kit / "junk.txt").write_text("not a code\n")
    assert one_line_error(tools(capsys, "recognise", *tls, "junk.txt")) == "REGION_UNKNOWN"
    # A receipt file is never overwritten: refused before anything is sent (the gateway above is
    # unreachable, so reaching it would have been UNAVAILABLE).
    (kit / "receipt.json").write_text("kept proof\n")
    ran = tools(capsys, "publish", *tls, "--receipt-out", "receipt.json", "r.json")
    assert one_line_error(ran) == "ALREADY_EXISTS" and "never overwritten" in ran.err
    assert (kit / "receipt.json").read_text() == "kept proof\n"
    ran = tools(capsys, "publish", *tls, "--receipt-out", "no-dir/receipt.json", "r.json")
    assert one_line_error(ran) == "USAGE" and ran.status == 2
