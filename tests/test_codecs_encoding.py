"""The bounded, strict decoders every envelope family uses."""

from __future__ import annotations

import tomllib
import zlib
from pathlib import Path

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.base import MAX_DECOMPRESSED_BYTES
from adapters.codecs import encoding
from adapters.codecs.encoding import (
    CBOR2_FLOOR,
    Compression,
    DateTag,
    TextEncoding,
    b45decode,
    b45encode,
    b64url_strict,
    decode_text,
    decompress,
    deflate,
    dump_cbor,
    encode_text,
    inflate,
    parse_cbor,
    parse_json,
    strip_prefix,
)
from keys.errors import ForeignDataError, MalformedError, OversizedError
from keys.keyid import check_kid

# Also runs with every dependency at its floor (.ci/lowest-versions).
pytestmark = pytest.mark.lowest

# --- base45 -----------------------------------------------------------------------------------


@pytest.mark.doc("partners.md §1.2")
@pytest.mark.parametrize(
    ("data", "text"),
    [
        pytest.param(b"AB", "BB8", id="rfc9285-AB"),
        pytest.param(b"Hello!!", "%69 VD92EX0", id="rfc9285-hello"),
        pytest.param(b"base-45", "UJCLQE7W581", id="rfc9285-base-45"),
        pytest.param(b"ietf!", "QED8WEX0", id="rfc9285-ietf"),
        pytest.param(b"", "", id="empty"),
        pytest.param(b"\xff\xff", "FGW", id="max-triplet"),
        pytest.param(b"\xff", "U5", id="max-pair"),
        pytest.param(b"\x00\x00", "000", id="zero-triplet"),
    ],
)
def test_base45_known_answers(data: bytes, text: str) -> None:
    assert b45encode(data) == text
    assert b45decode(text, limit=100) == data


@pytest.mark.doc("partners.md §1.2")
@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("GGW", MalformedError, id="triplet-above-65535"),
        pytest.param("::", MalformedError, id="pair-above-255"),
        pytest.param("V5", MalformedError, id="pair-256"),
        pytest.param("A", MalformedError, id="dangling-character"),
        pytest.param("ABCD", MalformedError, id="length-mod-3-is-1"),
        pytest.param("bb8", MalformedError, id="lower-case"),
        pytest.param("BB8=", MalformedError, id="padding"),
        pytest.param("B\u00d58", MalformedError, id="non-ascii"),
        pytest.param("BB\n8", MalformedError, id="newline"),
        pytest.param("BB8" * 100, OversizedError, id="over-limit"),
    ],
)
def test_base45_refuses_invalid_text(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        b45decode(text, limit=200)


@given(st.binary(max_size=300))
def test_base45_round_trips(data: bytes) -> None:
    assert b45decode(b45encode(data), limit=1000) == data


@given(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:abc~\u00e9", max_size=60))
def test_base45_decoding_is_canonical_or_refused(text: str) -> None:
    try:
        data = b45decode(text, limit=100)
    except MalformedError:
        return
    assert b45encode(data) == text


def reference_b45decode(text: str) -> bytes | None:
    """RFC 9285 section 4.2, one group at a time (None where the text is invalid)."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
    if any(ch not in alphabet for ch in text) or len(text) % 3 == 1:
        return None
    out = bytearray()
    for i in range(0, len(text), 3):
        group = [alphabet.index(ch) for ch in text[i : i + 3]]
        n = sum(v * 45**k for k, v in enumerate(group))
        if n > (0xFFFF if len(group) == 3 else 0xFF):
            return None
        out += n.to_bytes(len(group) - 1, "big")
    return bytes(out)


@given(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:", max_size=90))
def test_base45_agrees_with_a_reference_decoder(text: str) -> None:
    expected = reference_b45decode(text)
    try:
        assert b45decode(text, limit=100) == expected
    except MalformedError:
        assert expected is None


@pytest.mark.doc("partners.md §1.2")
@pytest.mark.parametrize("group", ["FGW", "GGW", "ZZZ", "::: ", ":::"], ids=str)
def test_base45_boundary_triplets(group: str) -> None:
    assert_same = reference_b45decode(group)
    try:
        assert b45decode(group, limit=10) == assert_same
    except MalformedError:
        assert assert_same is None


# --- base64url --------------------------------------------------------------------------------


@pytest.mark.doc("partners.md §1.2")
@pytest.mark.parametrize(
    "text",
    [
        pytest.param("QR", id="non-zero-unused-bits"),
        pytest.param("QQ==", id="padding"),
        pytest.param("Q", id="one-char-group"),
        pytest.param("a+b/", id="standard-alphabet"),
        pytest.param("ab c", id="space"),
        pytest.param("\u00e9\u00e9", id="non-ascii"),
    ],
)
def test_base64url_is_strict_and_canonical(text: str) -> None:
    with pytest.raises(MalformedError):
        b64url_strict(text, limit=100)


def test_base64url_accepts_canonical_text_and_bounds_length() -> None:
    assert b64url_strict("QQ", limit=10) == b"A"
    assert (
        decode_text(
            TextEncoding.BASE64URL, encode_text(TextEncoding.BASE64URL, b"\xfb\xff"), limit=10
        )
        == b"\xfb\xff"
    )
    with pytest.raises(OversizedError):
        b64url_strict("QUFB" * 10, limit=16)


# --- compression ------------------------------------------------------------------------------


@pytest.mark.doc("partners.md §1.1")
@pytest.mark.parametrize("raw", [False, True], ids=["zlib", "raw-deflate"])
def test_a_decompression_bomb_stops_at_the_limit(raw: bool) -> None:
    bomb = deflate(bytes(10_000_000), raw=raw)  # 10 MB of zeros in about 10 KB
    assert len(bomb) < 20_000
    with pytest.raises(OversizedError):
        inflate(bomb, raw=raw)


@pytest.mark.parametrize("raw", [False, True], ids=["zlib", "raw-deflate"])
def test_output_of_exactly_the_limit_is_accepted(raw: bool) -> None:
    data = bytes(range(256)) * (MAX_DECOMPRESSED_BYTES // 256)
    assert inflate(deflate(data, raw=raw), raw=raw) == data
    with pytest.raises(OversizedError):
        inflate(deflate(data + b"x", raw=raw), raw=raw)


@pytest.mark.doc("partners.md §1.2")
@pytest.mark.parametrize(
    ("data", "raw"),
    [
        pytest.param(zlib.compress(b"x" * 100)[:-3], False, id="zlib-truncated"),
        pytest.param(zlib.compress(b"x" * 100)[:2], False, id="zlib-header-only"),
        pytest.param(zlib.compress(b"x") + b"\x00", False, id="zlib-trailing-garbage"),
        pytest.param(zlib.compress(b"x") + zlib.compress(b"y"), False, id="zlib-two-streams"),
        pytest.param(b"junk", False, id="zlib-garbage"),
        pytest.param(b"", False, id="zlib-empty"),
        pytest.param(deflate(b"x", raw=False), True, id="zlib-read-as-raw"),
        pytest.param(deflate(b"x" * 50, raw=True)[:-1], True, id="raw-truncated"),
        pytest.param(deflate(b"x", raw=True) + b"\x01", True, id="raw-trailing-garbage"),
        pytest.param(deflate(b"x", raw=True), False, id="raw-read-as-zlib"),
    ],
)
def test_incomplete_or_corrupt_streams_are_malformed(data: bytes, raw: bool) -> None:
    with pytest.raises(MalformedError) as info:
        inflate(data, raw=raw)
    assert type(info.value) is MalformedError


def test_an_uncompressed_payload_is_bounded_too() -> None:
    assert decompress(Compression.NONE, b"abc") == b"abc"
    with pytest.raises(OversizedError):
        decompress(Compression.NONE, bytes(MAX_DECOMPRESSED_BYTES + 1))


# --- JSON -------------------------------------------------------------------------------------


@pytest.mark.doc("partners.md §1.1", "partners.md §1.2")
@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param(b'{"a":1,"a":2}', MalformedError, id="duplicate-member"),
        pytest.param(b'{"a":{"b":1,"b":1}}', MalformedError, id="nested-duplicate-member"),
        pytest.param(b"[NaN]", MalformedError, id="nan"),
        pytest.param(b"[-Infinity]", MalformedError, id="infinity"),
        pytest.param(b"[1e999]", MalformedError, id="overflow-to-infinity"),
        pytest.param(b"[" * 17 + b"]" * 17, OversizedError, id="depth-17"),
        pytest.param(b'{"a":' * 17 + b"1" + b"}" * 17, OversizedError, id="object-depth-17"),
        pytest.param(b"[" * 5000 + b"]" * 5000, OversizedError, id="depth-5000"),
        pytest.param(b'"\xff"', MalformedError, id="not-utf8"),
        pytest.param(b"1" * 5000, MalformedError, id="integer-of-5000-digits"),
        pytest.param(b'{"a":1', MalformedError, id="truncated"),
        pytest.param(b'{"a":1} x', MalformedError, id="trailing-text"),
        pytest.param(b"", MalformedError, id="empty"),
        pytest.param(b" " * (MAX_DECOMPRESSED_BYTES + 1), OversizedError, id="over-limit"),
    ],
)
def test_json_is_bounded_and_strict(text: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_json(text)


def test_json_within_limits_parses() -> None:
    assert parse_json(b"[" * 16 + b"]" * 16) == [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]
    assert parse_json('{"a":[1,2.5],"b":{"c":"绿"}}'.encode()) == {"a": [1, 2.5], "b": {"c": "绿"}}
    # many brackets inside strings do not count as depth
    assert parse_json(b'{"a":"[[[[[[[[[[[[[[[[[[[[[[[["}') == {"a": "[" * 24}


# --- CBOR -------------------------------------------------------------------------------------


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.doc("partners.md §1.1", "partners.md §1.2")
@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param(b"\xa2\x01\x01\x01\x02", MalformedError, id="duplicate-key"),
        pytest.param(dump_cbor(_nested(17)), OversizedError, id="depth-17"),
        pytest.param(b"\x81" * 100_000 + b"\x01", OversizedError, id="depth-100000"),
        pytest.param(b"\x9f" * 100_000, OversizedError, id="indefinite-depth"),
        pytest.param(b"\xa1\x01\x02\x00", MalformedError, id="trailing-byte"),
        pytest.param(
            b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff", MalformedError, id="huge-declared-length"
        ),
        pytest.param(
            b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff", MalformedError, id="huge-declared-array"
        ),
        pytest.param(b"\xa1\x01", MalformedError, id="truncated"),
        pytest.param(b"", MalformedError, id="empty"),
        pytest.param(b"\xff", MalformedError, id="lone-break"),
        pytest.param(b"\x62\xff\xfe", MalformedError, id="text-not-utf8"),
        pytest.param(
            cbor2.dumps(cbor2.CBORTag(1, 1583913600)), MalformedError, id="tag-1-datetime"
        ),
        pytest.param(cbor2.dumps(cbor2.CBORTag(2, b"\x01" * 8)), MalformedError, id="tag-2-bignum"),
        pytest.param(cbor2.dumps(cbor2.CBORTag(35, "(a+)+$")), MalformedError, id="tag-35-regex"),
        pytest.param(
            cbor2.dumps(cbor2.CBORTag(36, "Content-Type: text/plain\n\nx")),
            MalformedError,
            id="tag-36-mime",
        ),
        pytest.param(cbor2.dumps(cbor2.CBORTag(28, [1])), MalformedError, id="tag-28-shareable"),
        pytest.param(cbor2.dumps(cbor2.CBORTag(258, [1, 2])), MalformedError, id="tag-258-set"),
        pytest.param(bytes(MAX_DECOMPRESSED_BYTES + 1), OversizedError, id="over-limit"),
    ],
)
def test_cbor_is_bounded_and_strict(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_cbor(data)


def test_cbor_within_limits_parses_and_keeps_unknown_tags_inert() -> None:
    assert parse_cbor(dump_cbor({1: "a", -260: {1: b"x"}})) == {1: "a", -260: {1: b"x"}}
    assert parse_cbor(dump_cbor(_nested(15))) == _nested(15)
    tagged = parse_cbor(dump_cbor(cbor2.CBORTag(18, [b"", {}, b"", b""])))
    assert isinstance(tagged, cbor2.CBORTag) and tagged.tag == 18


def test_cbor_date_tags_come_back_only_when_asked_for() -> None:
    """Tags 0 and 1 are refused by default; with ``date_tags`` they come back untrusted."""
    data = dump_cbor({"sc": cbor2.CBORTag(0, "2021-06-01T10:00:00Z"), "x": cbor2.CBORTag(1, 5)})
    with pytest.raises(MalformedError):
        parse_cbor(data)
    assert parse_cbor(data, date_tags=True) == {
        "sc": DateTag(0, "2021-06-01T10:00:00Z"),
        "x": DateTag(1, 5),
    }
    with pytest.raises(MalformedError):  # the other built-in tags stay refused
        parse_cbor(dump_cbor(cbor2.CBORTag(1004, "2021-06-01")), date_tags=True)


class _OldCbor2Decoder:
    """What cbor2 before 6.1 does with the decoder options the gateway passes."""

    def __init__(self, *_: object, **__: object) -> None:
        raise TypeError("'max_depth' is an invalid keyword argument for this function")


def test_a_decoder_that_cannot_be_built_is_not_reported_as_malformed_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HOUSE "errors at the edges": the try guards the decode call, not the construction."""
    monkeypatch.setattr(encoding.cbor2, "CBORDecoder", _OldCbor2Decoder)
    with pytest.raises(TypeError, match="max_depth"):
        parse_cbor(dump_cbor({1: 1}))


def test_an_old_cbor2_fails_at_import_naming_the_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoding.cbor2, "CBORDecoder", _OldCbor2Decoder)
    with pytest.raises(ImportError, match=r"cbor2 >= 6\.1"):
        encoding._check_cbor2()


class _LenientCbor2Decoder:
    """What cbor2 before 6.1.5 does with a stray break code: it returns it as a value."""

    def __init__(self, *_: object, **__: object) -> None:
        pass

    def decode(self) -> object:
        return object()


def test_a_cbor2_that_accepts_a_stray_break_fails_at_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(encoding.cbor2, "CBORDecoder", _LenientCbor2Decoder)
    with pytest.raises(ImportError, match="stray break"):
        encoding._check_cbor2()


def test_the_cbor2_floor_in_pyproject_is_the_one_the_decoder_needs() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert f"cbor2>={CBOR2_FLOOR}" in pyproject["project"]["dependencies"]


@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_ever_raise_project_errors(data: bytes) -> None:
    for parse in (
        parse_cbor,
        parse_json,
        lambda d: inflate(d, raw=False),
        lambda d: inflate(d, raw=True),
    ):
        try:
            parse(data)
        except ForeignDataError:
            pass


# --- prefix and kid ---------------------------------------------------------------------------


def test_strip_prefix_and_kid_checks() -> None:
    assert strip_prefix("BJ1:abc", "BJ1:") == "abc"
    with pytest.raises(MalformedError):
        strip_prefix("BJ2:abc", "BJ1:")
    assert check_kid("kat-110000") == "kat-110000"
    for bad in ("", "a b", "k\u00e9y", "x" * 129, "tab\t", "nl\n"):
        with pytest.raises(MalformedError):
            check_kid(bad)
