"""SM2 signatures over SM3 (GB/T 32918, GB/T 32905) through keys.crypto.

Pins docs/crypto.md: the standards' own example vectors, the signer-id rule (the default id
``1234567812345678``, Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA)), the key forms a
partner may publish (SubjectPublicKeyInfo with the SM2 curve OID, raw 04 || X || Y, the JWK
form) and the one signature spelling accepted (raw 64-byte r || s). An independent pure-Python
SM2 (pysmx, from snowland-smx) cross-checks the library both ways.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tongsuopy", reason="SM2 needs the tongsuopy wheel (docs/crypto.md)")

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pysmx.SM2 import Sign as pysmx_sign
from pysmx.SM2 import Verify as pysmx_verify

from keys.crypto import (
    SM2_DEFAULT_ID,
    SM2_ORDER,
    Algorithm,
    PrivateKey,
    PublicKey,
    load_public_key,
    sm2_z,
)
from keys.errors import AlgorithmUnsupportedError, MalformedError, SignatureInvalidError

# GB/T 32918.5-2017 Annex A / GM/T 0003.5-2012 A.2: the signature example on the recommended
# curve, message "message digest", signer id 1234567812345678.
D = bytes.fromhex("3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8")
PX = bytes.fromhex("09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020")
PY = bytes.fromhex("CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13")
K = "59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21"
Z = bytes.fromhex("B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3")
E = bytes.fromhex("F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640")
R = bytes.fromhex("F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3")
S = bytes.fromhex("B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA")
MESSAGE = b"message digest"


def sm3(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize()


def standard_key() -> PublicKey:
    return PublicKey.from_sm2_point(b"\x04" + PX + PY)


# --- GB/T 32905-2016 Annex A: SM3 ---------------------------------------------------------------


def test_sm3_matches_the_standards_examples() -> None:
    assert sm3(b"abc").hex() == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    assert (
        sm3(b"abcd" * 16).hex()
        == "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
    )


# --- GB/T 32918 example -------------------------------------------------------------------------


def test_the_private_key_of_the_example_gives_its_public_key() -> None:
    key = PrivateKey.from_sm2_scalar(D)
    assert key.alg is Algorithm.SM2
    assert key.public_key().raw() == b"\x04" + PX + PY


def test_z_and_e_of_the_example_with_the_default_signer_id() -> None:
    assert SM2_DEFAULT_ID == b"1234567812345678"
    assert sm2_z(standard_key()) == Z
    assert sm3(Z + MESSAGE) == E


# GB/T 32918.2-2016 Annex A.2 (GM/T 0003.2-2012 A.2): the signature example on the standard's
# 256-bit test curve (p = 8542D69E…08F1DFC3), user id ALICE123@YAHOO.COM (ENTL = 0x0090).
ANNEX2_CURVE = (
    bytes.fromhex("787968B4FA32C3FD2417842E73BBFEFF2F3C848B6831D7E0EC65228B3937E498"),  # a
    bytes.fromhex("63E4C6D3B23B0C849CF84241484BFE48F61D59A5B16BA06E6E12D1DA27C5249A"),  # b
    bytes.fromhex("421DEBD61B62EAB6746434EBC3CC315E32220B3BADD50BDC4C4E6C147FEDD43D"),  # xG
    bytes.fromhex("0680512BCBB42C07D47349D2153B70C4E5D7FDFCBFA36EA1A85841B9E46E09A2"),  # yG
)
ANNEX2_POINT = bytes.fromhex(
    "04"
    "0AE4C7798AA0F119471BEE11825BE46202BB79E2A5844495E97C04FF4DF2548A"
    "7C0240F88F1CD4E16352A73C17B7F16F07353E53A176D684A9FE0C6BB798E857"
)
ANNEX2_ID = b"ALICE123@YAHOO.COM"
ANNEX2_Z = bytes.fromhex("F4A38489E32B45B6F876E3AC2168CA392362DC8F23459C1D1146FC3DBFB7BC9A")
ANNEX2_E = bytes.fromhex("B524F552CD82B8B028476E005C377FB19A87E6FC682D48BB5D42E3D9B9EFFE76")


def test_z_and_e_of_the_part_2_annex_example_with_its_own_id_and_curve() -> None:
    """The signer-id rule against GB/T 32918.2's own example: a 18-byte id (ENTL = 144 bits, a
    length that is not 16 bytes) over the annex's test curve. Its signature lies on that test
    curve, which no SM2 library here accepts (they know the recommended curve only): the
    signature itself is pinned with the example of part 5, above and below."""
    from keys.sm2 import RECOMMENDED_CURVE, z_value

    assert z_value(ANNEX2_POINT, ANNEX2_ID, ANNEX2_CURVE) == ANNEX2_Z
    assert sm3(ANNEX2_Z + MESSAGE) == ANNEX2_E
    # The id, its length and the curve all count: any other gives another Z.
    assert z_value(ANNEX2_POINT, ANNEX2_ID[:-1], ANNEX2_CURVE) != ANNEX2_Z
    assert z_value(ANNEX2_POINT, ANNEX2_ID, RECOMMENDED_CURVE) != ANNEX2_Z
    assert z_value(b"\x04" + PX + PY) == Z  # the default id and curve: part 5's example


def test_the_examples_signature_verifies_and_nothing_else_does() -> None:
    key = standard_key()
    key.verify(MESSAGE, R + S)
    with pytest.raises(SignatureInvalidError):
        key.verify(b"message digesT", R + S)
    with pytest.raises(SignatureInvalidError):
        key.verify(MESSAGE, R + S[:-1] + bytes([S[-1] ^ 1]))
    # Another key does not verify it.
    with pytest.raises(SignatureInvalidError):
        PrivateKey.generate(Algorithm.SM2).public_key().verify(MESSAGE, R + S)


def test_the_independent_implementation_reproduces_the_example_with_its_k() -> None:
    """pysmx signs the KAT vectors (tests/kat): it must give the standard's r || s exactly."""
    signature = pysmx_sign(MESSAGE, D.hex(), K.lower(), 64, uid=SM2_DEFAULT_ID)
    assert signature == R + S


def test_a_signature_made_with_another_signer_id_does_not_verify() -> None:
    """The signer id is part of what is signed: the default one, never another or none."""
    other = pysmx_sign(MESSAGE, D.hex(), K.lower(), 64, uid=b"ALICE123@YAHOO.COM")
    assert other != R + S
    with pytest.raises(SignatureInvalidError):
        standard_key().verify(MESSAGE, other)
    assert sm2_z(standard_key(), b"ALICE123@YAHOO.COM") != Z


def test_our_signatures_verify_with_the_independent_implementation() -> None:
    key = PrivateKey.generate(Algorithm.SM2)
    public_xy = key.public_key().raw()[1:]
    for message in (b"", b"x", MESSAGE, bytes(range(256)) * 4):
        signature = key.sign(message)
        assert len(signature) == 64
        key.public_key().verify(message, signature)
        assert pysmx_verify(signature, message, public_xy, 64, uid=SM2_DEFAULT_ID)
        assert not pysmx_verify(signature, message + b"!", public_xy, 64, uid=SM2_DEFAULT_ID)


# --- signatures: one spelling -------------------------------------------------------------------


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(b"", id="empty"),
        pytest.param(R + S + b"\0", id="65-bytes"),
        pytest.param(
            encode_dss_signature(int.from_bytes(R, "big"), int.from_bytes(S, "big")), id="der"
        ),
        pytest.param(bytes(32) + S, id="r-zero"),
        pytest.param(R + bytes(32), id="s-zero"),
        pytest.param(SM2_ORDER.to_bytes(32, "big") + S, id="r-is-n"),
        pytest.param(R + b"\xff" * 32, id="s-above-n"),
    ],
)
def test_malformed_signatures_are_invalid_never_an_error(signature: bytes) -> None:
    with pytest.raises(SignatureInvalidError) as caught:
        standard_key().verify(MESSAGE, signature)
    assert caught.value.reason == "SIGNATURE_INVALID"


# --- the key forms a partner publishes ----------------------------------------------------------


def test_subjectpublickeyinfo_with_the_sm2_oid_round_trips_in_der_and_pem() -> None:
    key = standard_key()
    # id-ecPublicKey (1.2.840.10045.2.1) with the SM2 curve 1.2.156.10197.1.301
    assert bytes.fromhex("06072a8648ce3d0201") in key.spki
    assert bytes.fromhex("06082a811ccf5501822d") in key.spki
    for form in (key.spki, key.to_pem(), key.to_pem().encode()):
        loaded = load_public_key(form)
        assert loaded.alg is Algorithm.SM2 and loaded.spki == key.spki
    assert PublicKey.from_spki(key.spki, Algorithm.SM2).raw() == key.raw()
    assert key.fingerprint() == load_public_key(key.to_pem()).fingerprint()


def test_a_raw_point_is_an_sm2_key_only_when_the_algorithm_says_so() -> None:
    point = b"\x04" + PX + PY
    assert load_public_key(point, Algorithm.SM2).spki == standard_key().spki
    # Without the algorithm, 65 raw bytes are no key form (a P-256 point looks the same).
    with pytest.raises(MalformedError):
        load_public_key(point)


def test_the_jwk_form_round_trips() -> None:
    key = standard_key()
    jwk = key.to_jwk()
    assert jwk["kty"] == "EC" and jwk["crv"] == "SM2"
    assert PublicKey.from_jwk(json.loads(json.dumps(jwk))).spki == key.spki


@pytest.mark.parametrize(
    "point",
    [
        pytest.param(b"\x04" + PX + PY[:-1] + bytes([PY[-1] ^ 1]), id="off-curve"),
        pytest.param(b"\x04" + bytes(64), id="zeros"),
        pytest.param(b"\x02" + PX + PY, id="bad-prefix"),
        pytest.param(b"\x04" + PX, id="short"),
    ],
)
def test_a_point_not_on_the_curve_is_malformed(point: bytes) -> None:
    with pytest.raises(MalformedError):
        PublicKey.from_sm2_point(point)


def test_a_damaged_sm2_spki_is_malformed() -> None:
    spki = standard_key().spki
    damaged = spki[:-1] + bytes([spki[-1] ^ 1])  # the point is no longer on the curve
    with pytest.raises(MalformedError):
        PublicKey.from_spki(damaged)
    with pytest.raises(MalformedError):
        PublicKey.from_spki(spki[:-3])


def test_keys_of_other_algorithms_are_not_sm2_and_back() -> None:
    p256 = PrivateKey.generate(Algorithm.ES256).public_key()
    with pytest.raises(AlgorithmUnsupportedError):
        load_public_key(p256.spki, Algorithm.SM2)
    with pytest.raises(AlgorithmUnsupportedError):
        load_public_key(standard_key().spki, Algorithm.ES256)


def test_a_private_key_round_trips_encrypted_and_a_wrong_passphrase_is_refused() -> None:
    key = PrivateKey.generate(Algorithm.SM2)
    pem = key.to_pem(b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in pem
    loaded = PrivateKey.from_pem(pem, b"correct horse")
    assert loaded.alg is Algorithm.SM2
    assert loaded.public_key().spki == key.public_key().spki
    loaded.public_key().verify(b"m", key.sign(b"m"))
    with pytest.raises(MalformedError):
        PrivateKey.from_pem(pem, b"wrong")
    plain = key.to_pem(None)
    assert PrivateKey.from_pem(plain, None).public_key().spki == key.public_key().spki


@pytest.mark.parametrize("scalar", [bytes(32), (SM2_ORDER - 1).to_bytes(32, "big"), b"\xff" * 32])
def test_a_private_scalar_out_of_range_is_refused(scalar: bytes) -> None:
    with pytest.raises(ValueError):
        PrivateKey.from_sm2_scalar(scalar)


# --- interoperability: a partner signing with the OpenSSL 3 command line -------------------------


@pytest.mark.integration  # a subprocess (tests/support/tiers.py)
def test_a_signature_made_by_the_openssl_command_line_verifies_with_the_default_id(
    tmp_path,
) -> None:
    """docs/crypto.md §1.1: OpenSSL 3 signs with the default signer id only when told
    (``-sigopt distid:1234567812345678``); without it its signature uses another id and does
    not verify here."""
    import shutil
    import subprocess

    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command on this machine")
    key, pub, message = tmp_path / "sm2.key", tmp_path / "sm2.pem", tmp_path / "m.txt"
    message.write_bytes(MESSAGE)

    def openssl_run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)  # noqa: S603

    try:
        openssl_run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:SM2",
                    "-out", str(key))  # fmt: skip
    except subprocess.CalledProcessError:
        pytest.skip("this openssl has no SM2")
    openssl_run("pkey", "-in", str(key), "-pubout", "-out", str(pub))
    public = load_public_key(pub.read_bytes())
    assert public.alg is Algorithm.SM2

    def signed(*options: str) -> bytes:
        out = tmp_path / "m.sig"
        openssl_run("dgst", "-sm3", "-sign", str(key), *options, "-out", str(out), str(message))
        r, s = decode_dss_signature(out.read_bytes())
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    public.verify(MESSAGE, signed("-sigopt", "distid:1234567812345678"))
    with pytest.raises(SignatureInvalidError):
        public.verify(MESSAGE, signed())
