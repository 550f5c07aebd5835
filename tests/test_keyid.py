"""One key-id rule on every path that takes a key id (docs/partners.md §1.3, trust-registry.md §1).

The rule: 1 to 128 printable ASCII characters (``!`` to ``~``), no space. The same bad values are
tried on every path: the rule's function, the records, partner codes of each envelope family, key
sets, key revocations, partner files, signed envelopes and the command line.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_support import one_line_error, trustgw
from test_adapters_kat import ISSUER, kat_keys
from trust_support import T0, Harness, key, scenario

from adapters import ADAPTERS
from adapters.base import Colour
from adapters.simulator import InMemoryKeys
from keys.anchors import Anchor, PartnerFile
from keys.crypto import Algorithm, PrivateKey
from keys.errors import GatewayError, MalformedError
from keys.keyid import MAX_KID_CHARS, check_kid, is_kid, require_kid
from keys.model import RegionKey
from keys.partner import PartnerSigner
from keys.pseudonym import Pseudonymiser
from keys.signed import Envelope, Signature, canonical_json
from keys.statements import KeyRevocation, KeySet, KeySetKey
from tests.support.keyring import stored_keys

BAD_KIDS = [
    pytest.param("K 1", id="space"),
    pytest.param("ключ", id="non-ascii"),
    pytest.param("k\u00e9y", id="latin-1"),
    pytest.param("", id="empty"),
    pytest.param("k" * (MAX_KID_CHARS + 1), id="129-chars"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("a\tb", id="tab"),
    pytest.param("a\nb", id="newline"),
    pytest.param("a\x1b[31mb", id="escape"),
    pytest.param("a\x7fb", id="delete"),
]
GOOD_KIDS = [
    pytest.param("K1", id="short"),
    pytest.param("kat-110000", id="kat"),
    pytest.param("4f1c2d3e4a5b6c7d", id="fingerprint"),
    pytest.param("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs", id="jwk-thumbprint"),
    pytest.param("3lTmAZX19GQ=", id="dcc-base64"),
    pytest.param("did:web:jkm.example.cn#key-1", id="did-url"),
    pytest.param("k" * 65, id="65-chars"),
    pytest.param("k" * MAX_KID_CHARS, id="128-chars"),
]
DAY = timedelta(days=1)
NOW = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)


# --- the rule itself ------------------------------------------------------------------------


@pytest.mark.parametrize("kid", GOOD_KIDS)
def test_the_rule_accepts_every_key_id_in_real_use(kid: str) -> None:
    """docs/partners.md §1.3: fingerprints, thumbprints, base64 and URL-like kids all fit."""
    assert is_kid(kid) and check_kid(kid) == kid


@pytest.mark.parametrize("kid", BAD_KIDS)
def test_the_rule_refuses_a_bad_key_id_with_one_line_of_text(kid: str) -> None:
    with pytest.raises(MalformedError) as caught:
        check_kid(kid)
    assert "\n" not in caught.value.message and "1 to 128 printable ASCII" in caught.value.message


def test_a_key_id_from_a_code_is_not_echoed() -> None:
    with pytest.raises(MalformedError) as caught:
        check_kid("11010119900307001X " * 2, "the code's key id", echo=False)
    assert "1101" not in caught.value.message


def test_the_gateways_own_key_ids_follow_the_rule(dev_data_dir: Path) -> None:
    kids = [k.kid for k in stored_keys(dev_data_dir).public_keys()]
    assert kids and all(is_kid(kid) for kid in kids)


def test_every_known_answer_vector_kid_follows_the_rule() -> None:
    kids = [json.loads(p.read_text())["kid"] for p in Path(__file__).parent.glob("vectors/*.json")]
    assert len(kids) == 14 and all(is_kid(kid) for kid in kids)


def test_both_documents_state_the_same_rule() -> None:
    """docs/partners.md §1.3 states the rule; docs/trust-registry.md §1 points to it."""
    docs = Path(__file__).resolve().parents[1] / "docs"
    partners = " ".join((docs / "partners.md").read_text(encoding="utf-8").split())
    registry = " ".join((docs / "trust-registry.md").read_text(encoding="utf-8").split())
    sentence = "1 to 128 printable ASCII characters (`!` to `~`"
    assert sentence in partners and sentence in registry
    assert "partners.md#13-signing-keys-and-key-ids" in registry
    assert "1 to 64" not in registry.split("## 2.")[0]


# --- records --------------------------------------------------------------------------------


def _public() -> Any:
    return PrivateKey.generate(Algorithm.EDDSA).public_key()


@pytest.mark.parametrize("kid", BAD_KIDS)
def test_records_refuse_a_bad_key_id(kid: str) -> None:
    public = _public()
    with pytest.raises(ValueError):
        KeySetKey(kid, public, NOW, NOW + DAY)
    with pytest.raises(ValueError):
        KeyRevocation("110000", kid, NOW)
    with pytest.raises(ValueError):
        Anchor(kid, public)
    with pytest.raises(ValueError):
        Signature(kid, b"\x00" * 64)
    with pytest.raises(ValueError):
        require_kid(kid)


# --- partner codes, every envelope family ---------------------------------------------------


class _Utf8(str):
    """A kid the independent issuer writes as UTF-8 where it would write ASCII."""

    __slots__ = ()

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return str.encode(self, "utf-8", errors)


STATUS = ISSUER.Status(
    ISSUER.id_number("11010119900307001"), "王伟", "green", 1583913600, 1583913600 + 86400, "c0de"
)
FAMILIES = [
    pytest.param("110000", id="compact"),
    pytest.param("310000", id="jws"),
    pytest.param("130000", id="cose-protected"),
    pytest.param("440000", id="cose-unprotected"),
]


@pytest.mark.parametrize("region", FAMILIES)
@pytest.mark.parametrize("kid", BAD_KIDS)
def test_a_code_naming_a_bad_key_id_is_malformed(region: str, kid: str) -> None:
    """docs/partners.md §1.3 and §1.5: refused as MALFORMED before any key lookup."""
    alg = "EdDSA" if ADAPTERS[region].spec.signing_alg is Algorithm.EDDSA else "ES256"
    code = ISSUER.issue(region, ISSUER.Signer.kat(region, alg), _Utf8(kid), STATUS)
    with pytest.raises(GatewayError) as caught:
        ADAPTERS[region].decode(code, kat_keys(region), Pseudonymiser(b"k" * 32))
    assert caught.value.reason == "MALFORMED"


@pytest.mark.parametrize("region", FAMILIES)
def test_a_code_naming_a_128_character_key_id_verifies(region: str) -> None:
    """The longest key id under the rule goes through every envelope family."""
    kid = "k" * MAX_KID_CHARS
    spec = ADAPTERS[region].spec
    private = PrivateKey.generate(spec.signing_alg)
    claims = spec.fields.build(
        holder_id=STATUS.holder_id,
        holder_name="x",
        colour=Colour.GREEN,
        issued_at=NOW,
        expires_at=NOW + DAY,
        code_id="c0de",
    )
    code = spec.codec.seal(claims, private, kid)
    keys = InMemoryKeys.of(
        [RegionKey(region, kid, private.public_key(), NOW - DAY, NOW + 2 * DAY)]
    )
    assert ADAPTERS[region].decode(code, keys, Pseudonymiser(b"k" * 32)).status.kid == kid


# --- key sets, key revocations, partner files (statements and the trust registry) ----------

PARTNER = PartnerSigner.generate("110000")


def _keyset_with_kid(kid: str) -> bytes:
    obj = json.loads(KeySet("110000", 1, T0 + 30 * DAY, (key("k1"),)).to_signed())
    obj["keys"][0]["kid"] = kid
    return PARTNER.envelope(canonical_json(obj))


def _revocation_with_kid(kid: str) -> bytes:
    obj = json.loads(KeyRevocation("110000", "k1", T0).to_signed())
    obj["kid"] = kid
    return PARTNER.envelope(canonical_json(obj))


def _partner_file_with_kid(kid: str) -> bytes:
    obj = json.loads(PARTNER.partner_file())
    obj["anchors"][0]["kid"] = kid
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def _envelope_signed_by_kid(kid: str) -> bytes:
    obj = json.loads(_keyset_with_kid("k1"))
    obj["signatures"][0]["keyid"] = kid
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("kid", BAD_KIDS)
def test_statements_and_partner_files_refuse_a_bad_key_id(kid: str) -> None:
    """docs/trust-registry.md §1 (key ids), §2 (partner file), §3, §4, §5."""
    cases = {
        "keyset": lambda: KeySet.from_signed(Envelope.from_bytes(_keyset_with_kid(kid)).signed),
        "key-revocation": lambda: KeyRevocation.from_signed(
            Envelope.from_bytes(_revocation_with_kid(kid)).signed
        ),
        "partner-file": lambda: PartnerFile.from_bytes(_partner_file_with_kid(kid)),
        "envelope-keyid": lambda: Envelope.from_bytes(_envelope_signed_by_kid(kid)),
    }
    for name, parse in cases.items():
        with pytest.raises(MalformedError):
            parse()
            pytest.fail(f"{name} accepted {kid!r}")


@pytest.mark.parametrize("kid", BAD_KIDS)
def test_the_trust_registry_refuses_a_bad_key_id_and_changes_nothing(
    tmp_path: Path, kid: str
) -> None:
    """What PartnerService.PublishKeySet / RevokeKey and partner add run (trust-registry §11)."""

    async def body(h: Harness) -> list[str]:
        await h.onboard(PARTNER)
        before = await h.store.read_registry()
        reasons = []
        for attempt in (
            lambda: h.trust.publish_keyset(_keyset_with_kid(kid), caller_region="110000", now=T0),
            lambda: h.trust.revoke_key(_revocation_with_kid(kid), caller_region="110000", now=T0),
            lambda: h.trust.install_partner(
                _partner_file_with_kid(kid), actor="operator:test", now=T0
            ),
        ):
            try:
                await attempt()
                reasons.append("OK")
            except GatewayError as exc:
                reasons.append(exc.reason)
        assert await h.store.read_registry() == before
        return reasons

    assert scenario(tmp_path / "r.db", body) == ["MALFORMED"] * 3


@pytest.mark.parametrize("kid", [p.values[0] for p in GOOD_KIDS[-3:]])
def test_key_sets_and_partner_files_take_the_same_key_ids_as_codes(
    tmp_path: Path, kid: str
) -> None:
    """docs/trust-registry.md §1 says the same as docs/partners.md §1.3 (no narrower rule)."""
    partner = PartnerSigner.generate("110000")

    async def body(h: Harness) -> list[str]:
        await h.trust.install_partner(partner.partner_file(), actor="operator:test", now=T0)
        keyset = KeySet("110000", 1, T0 + 30 * DAY, (key(kid),))
        await h.trust.publish_keyset(
            partner.keyset(1, keyset.keys, expires=T0 + 30 * DAY), caller_region="110000", now=T0
        )
        await h.trust.revoke_key(partner.key_revocation(kid, T0), caller_region="110000", now=T0)
        return [k.kid for k in h.registry.snapshot.keys("110000")]

    assert scenario(tmp_path / "r.db", body) == [kid]


# --- the command line -----------------------------------------------------------------------


def _jwk_file(tmp_path: Path, kid: str | None = None) -> Path:
    jwk: dict[str, str] = _public().to_jwk()
    if kid is not None:
        jwk["kid"] = kid
    path = tmp_path / f"key-{hashlib.sha256(str(kid).encode()).hexdigest()[:8]}.jwk"
    path.write_text(json.dumps(jwk, ensure_ascii=False))
    return path


@pytest.mark.parametrize("kid", BAD_KIDS)
def test_the_command_line_refuses_a_bad_key_id_in_one_line(
    kid: str, own_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """keys add / keys revoke / verify --kid, and a trust file's JWK kid: MALFORMED, one line."""
    if "\x00" in kid:
        pytest.skip("an argument cannot hold NUL; the JWK kid case below still runs")
    data = str(own_data_dir)
    jwk = str(_jwk_file(tmp_path))
    runs = {
        "keys add": ["keys", "add", "--data-dir", data, "--region", "110000",
                     "--public-key", jwk, f"--kid={kid}"],
        "keys revoke": ["keys", "revoke", "--data-dir", data, "--region", "110000",
                        f"--kid={kid}", "--at", "2026-03-11T08:00:00Z"],
        "verify --kid": ["verify", "--format", "110000", "--trust", jwk, f"--kid={kid}",
                         "--at", "2026-03-11T08:00:00Z", "BJ1:x"],
    }  # fmt: skip
    for name, argv in runs.items():
        ran = trustgw(capsys, *argv)
        assert one_line_error(ran) == "MALFORMED", name
        assert "1 to 128 printable ASCII" in ran.err, name
    listed = trustgw(capsys, "keys", "list", "--data-dir", data, "--json").json()
    assert not [row for row in listed if row["owner"] == "110000"]


@pytest.mark.parametrize("kid", BAD_KIDS)
def test_a_trust_files_jwk_kid_follows_the_rule(
    kid: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not kid:
        pytest.skip("an empty JWK kid means 'no kid' (the key answers to any kid)")
    jwk = str(_jwk_file(tmp_path, kid))
    ran = trustgw(
        capsys, "verify", "--format", "110000", "--trust", jwk, "--at", "1773216000", "BJ1:x"
    )
    assert one_line_error(ran) in {"USAGE", "MALFORMED"}
    assert "1 to 128 printable ASCII" in ran.err


def test_keys_add_takes_a_128_character_key_id(
    own_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kid = "k" * MAX_KID_CHARS
    ran = trustgw(capsys, "keys", "add", "--data-dir", str(own_data_dir), "--region", "110000",
                  "--public-key", str(_jwk_file(tmp_path)), "--kid", kid, "--json")  # fmt: skip
    assert ran.status == 0, ran.err
    assert ran.json()["kid"] == kid


def test_keys_list_shows_two_long_kids_that_differ_only_at_the_end_whole(
    own_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/trust-registry.md §13 "Identifiers in tables": nothing is cut; --json has it all."""
    kids = ["k" * 127 + "1", "k" * 127 + "2"]
    for kid in kids:
        ran = trustgw(capsys, "keys", "add", "--data-dir", str(own_data_dir), "--region",
                      "110000", "--public-key", str(_jwk_file(tmp_path)), "--kid", kid)  # fmt: skip
        assert ran.status == 0, ran.err
    table = trustgw(capsys, "keys", "list", "--data-dir", str(own_data_dir)).out.splitlines()
    shown = [line.split()[2] for line in table[1:] if line.startswith("110000")]
    assert shown == kids
    header = table[0]
    assert all(line.index("  EdDSA  ") == header.index("  alg  ") for line in table[1:])
    listed = trustgw(capsys, "keys", "list", "--data-dir", str(own_data_dir), "--json").json()
    assert [r["kid"] for r in listed if r["owner"] == "110000"] == kids


def test_partner_list_does_not_cut_a_region_name(
    own_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    partner = PartnerSigner.generate("110000")
    obj = json.loads(partner.partner_file())
    obj["name"] = "北京市健康宝互认服务测试环境第二套北京市健康宝"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    ran = trustgw(capsys, "partner", "add", "--data-dir", str(own_data_dir), "--file", str(path))
    assert ran.status == 0, ran.err
    out = trustgw(capsys, "partner", "list", "--data-dir", str(own_data_dir)).out
    assert obj["name"] in out


def test_a_key_stored_before_the_rule_still_loads_and_is_listed(
    own_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing already stored is lost: an old ``keys add`` could store 'K 1'; the registry still
    reads (the gateway starts, the trust list is signed) and lists it; no code can name it."""
    import sqlite3

    data = str(own_data_dir)
    ran = trustgw(capsys, "keys", "add", "--data-dir", data, "--region", "110000",
                  "--public-key", str(_jwk_file(tmp_path)), "--kid", "K1")  # fmt: skip
    assert ran.status == 0, ran.err
    with sqlite3.connect(own_data_dir / "trustgw.db") as db:
        db.execute("UPDATE region_keys SET kid = 'K 1' WHERE kid = 'K1'")
    listed = trustgw(capsys, "keys", "list", "--data-dir", data, "--json")
    assert listed.status == 0, listed.err
    assert [r["kid"] for r in listed.json() if r["owner"] == "110000"] == ["K 1"]
    out = str(tmp_path / "tl.json")
    assert trustgw(capsys, "trustlist", "export", "--data-dir", data, "--out", out).status == 0
