"""The one strict JSON parser and the one canonical JSON (keys/jsonutil.py).

The canonical form is RFC 8785 exactly; its examples (§3.2.2, §3.2.3) and the number table of
its Appendix B are checked here byte for byte.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys.errors import MalformedError, OversizedError
from keys.jsonutil import MAX_SAFE_INTEGER, canonical_json, es_number, loads_strict, rfc8785

# --- RFC 8785 -----------------------------------------------------------------------------------


def test_rfc8785_section_3_2_2_example_is_reproduced_byte_for_byte() -> None:
    text = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    ).encode()
    assert canonical_json(json.loads(text)) == expected


def test_rfc8785_section_3_2_3_members_sort_by_utf16_code_units() -> None:
    obj = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    order = [v for v in json.loads(canonical_json(obj), object_pairs_hook=lambda p: p)]
    assert [value for _, value in order] == [
        "Carriage Return",
        "One",
        "Control",
        "Latin Small Letter O With Diaeresis",
        "Euro Sign",
        "Emoji: Grinning Face",  # U+1F600 is D83D DE00 in UTF-16: before U+FB33
        "Hebrew Letter Dalet With Dagesh",
    ]


APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("ieee", "expected"), APPENDIX_B, ids=[i for i, _ in APPENDIX_B])
def test_rfc8785_appendix_b_numbers_are_written_as_ecmascript_writes_them(
    ieee: str, expected: str
) -> None:
    value = struct.unpack(">d", bytes.fromhex(ieee))[0]
    assert es_number(value) == expected
    assert canonical_json([value]) == f"[{expected}]".encode()


@pytest.mark.parametrize("ieee", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_rfc8785_nan_and_infinity_have_no_canonical_form(ieee: str) -> None:
    with pytest.raises(ValueError):
        canonical_json({"n": struct.unpack(">d", bytes.fromhex(ieee))[0]})


@pytest.mark.parametrize(
    "value",
    [MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1, 10**30],
    ids=["2^53", "-2^53", "10^30"],
)
def test_integers_that_a_double_cannot_hold_exactly_are_refused_not_rounded(value: int) -> None:
    with pytest.raises(ValueError, match="not exact"):
        canonical_json({"n": value})


def test_the_largest_exact_integers_are_written_in_full() -> None:
    obj = {"max": MAX_SAFE_INTEGER, "min": -MAX_SAFE_INTEGER}
    assert canonical_json(obj) == b'{"max":9007199254740991,"min":-9007199254740991}'


@pytest.mark.parametrize(
    "value",
    [{"a": "\ud800"}, {"\udc00": 1}, ["x\udfffy"]],
    ids=["value", "member-name", "in-array"],
)
def test_lone_surrogates_have_no_canonical_form(value: object) -> None:
    with pytest.raises(ValueError):
        canonical_json(value)


@pytest.mark.parametrize(
    "value", [{"a": b"x"}, {"a": {1, 2}}, {1: "a"}], ids=["bytes", "set", "int-key"]
)
def test_values_that_are_not_json_are_a_type_error(value: object) -> None:
    with pytest.raises(TypeError):
        canonical_json(value)


def test_strings_escape_only_what_json_requires() -> None:
    text = '\b\f\n\r\t\x00\x1f\x7f\u2028"\\/绿\U0001f600'
    assert canonical_json([text]) == (
        '["\\b\\f\\n\\r\\t\\u0000\\u001f\x7f\u2028\\"\\\\/绿\U0001f600"]'.encode("utf-8")
    )


def test_what_the_gateway_signs_keeps_its_former_bytes() -> None:
    # ASCII names and exact integers: the form every signed output had before RFC 8785 was
    # implemented exactly, so everything signed earlier still has its canonical bytes.
    claims = {
        "typ": "trustgw/home-code/v1",
        "iss": "370000",
        "exp": 1584000000,
        "ok": True,
        "holder": "王伟",
        "list": [3, 1, None],
        "nested": {"b": 1, "a": "\n"},
    }
    former = json.dumps(claims, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(claims) == former.encode("utf-8")


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(st.characters(exclude_categories=["Cs"]), max_size=4), children, max_size=4
        )
    ),
    max_leaves=12,
)


@given(JSON_VALUES)
def test_the_fast_path_writes_what_the_reference_writes(value: object) -> None:
    assert canonical_json(value) == rfc8785(value)


def _no_big_whole_floats(value: object) -> bool:
    # 2.0**60 is written 1152921504606846976, which parses back as an integer that no double
    # holds exactly: JSON itself does not tell the two apart.
    if isinstance(value, float):
        return not (value.is_integer() and abs(value) > MAX_SAFE_INTEGER)
    if isinstance(value, dict):
        return all(map(_no_big_whole_floats, value.values()))
    if isinstance(value, list):
        return all(map(_no_big_whole_floats, value))
    return True


@given(JSON_VALUES.filter(_no_big_whole_floats))
def test_canonical_bytes_parse_back_to_the_same_value(value: object) -> None:
    data = canonical_json(value)
    back = loads_strict(data, max_bytes=1 << 20, max_depth=64)
    assert canonical_json(back) == data


# --- the strict parser --------------------------------------------------------------------------


def _loads(data: bytes | str, *, integers_only: bool = False, what: str = "JSON text") -> object:
    return loads_strict(data, max_bytes=1024, max_depth=8, integers_only=integers_only, what=what)


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        pytest.param(
            b'{"a":1,"a":2}', MalformedError, "repeats a member name", id="duplicate-member"
        ),
        pytest.param(
            b'[{"x":{"a":1,"a":1}}]', MalformedError, "repeats a member name", id="nested-duplicate"
        ),
        pytest.param(b"[NaN]", MalformedError, "NaN", id="nan"),
        pytest.param(b"[Infinity]", MalformedError, "Infinity", id="infinity"),
        pytest.param(b"[-Infinity]", MalformedError, "Infinity", id="minus-infinity"),
        pytest.param(b"[1e999]", MalformedError, "not finite", id="overflow-to-infinity"),
        pytest.param(b'["\\ud800"]', MalformedError, "lone surrogate", id="lone-high-surrogate"),
        pytest.param(
            b'{"\\udc00":1}', MalformedError, "lone surrogate", id="lone-low-surrogate-name"
        ),
        pytest.param(b'["\\uDE00\\uD83D"]', MalformedError, "lone surrogate", id="reversed-pair"),
        pytest.param(b'"\xed\xa0\x80"', MalformedError, "not UTF-8", id="raw-surrogate-bytes"),
        pytest.param(b'"\xff"', MalformedError, "not UTF-8", id="not-utf8"),
        pytest.param(b'{"a":1', MalformedError, "not valid JSON", id="truncated"),
        pytest.param(b'{"a":1} x', MalformedError, "not valid JSON", id="trailing-text"),
        pytest.param(b"", MalformedError, "not valid JSON", id="empty"),
        pytest.param(b"[" * 9 + b"]" * 9, OversizedError, "deeper than 8", id="depth-9"),
        pytest.param(b'{"a":' * 9 + b"1" + b"}" * 9, OversizedError, "deeper", id="object-depth-9"),
        pytest.param(b"[" * 5000 + b"]" * 5000, OversizedError, "", id="depth-5000"),
        pytest.param(b" " * 1025, OversizedError, "larger than 1024", id="over-limit"),
        pytest.param(" " * 1025, OversizedError, "larger than 1024", id="over-limit-str"),
        pytest.param("\u7eff" * 400, OversizedError, "larger than 1024", id="over-limit-in-utf8"),
    ],
)
def test_the_strict_parser_refuses(data: bytes | str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        _loads(data)


@pytest.mark.parametrize("number", ["1.5", "1e3", "-0.0", "1E-2"])
def test_integers_only_refuses_every_number_with_a_fraction_or_exponent(number: str) -> None:
    with pytest.raises(MalformedError, match="integers"):
        _loads(f'{{"n":{number}}}', integers_only=True)
    assert isinstance(_loads(f'{{"n":{number}}}'), dict)


def test_the_strict_parser_accepts_json_within_its_limits() -> None:
    assert _loads(b"[" * 8 + b"]" * 8) == [[[[[[[[]]]]]]]]
    assert _loads('{"a":[1,2.5],"b":{"c":"绿"}}') == {"a": [1, 2.5], "b": {"c": "绿"}}
    assert _loads(b'["\\ud83d\\ude00", "\\u00e9"]') == ["\U0001f600", "é"]  # a pair is fine
    assert _loads(b'{"a":"[[[[[[[[[[[[[[[["}') == {"a": "[" * 16}  # brackets in strings
    assert _loads(b" " * 1000 + b"{}") == {}


def test_an_integer_of_5000_digits_is_malformed_not_a_crash() -> None:
    with pytest.raises(MalformedError, match="not valid JSON"):
        loads_strict(b"1" * 5000, max_bytes=8192, max_depth=8)


def test_the_messages_name_the_input() -> None:
    with pytest.raises(MalformedError, match="the trust file is not valid JSON"):
        _loads(b"{", what="trust file")


# --- the gateway's own files go through the same parser --------------------------------------


def test_a_key_directory_manifest_with_a_repeated_member_is_a_key_directory_error(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    from keys.errors import KeyDirectoryError
    from keys.keystore import MANIFEST, KeyDirectory

    now = datetime(2026, 3, 11, tzinfo=UTC)
    KeyDirectory.create(tmp_path / "keys", dev=True, passphrase=None, now=now)
    manifest = tmp_path / "keys" / MANIFEST
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace("{", '{"dev": true, ', 1), encoding="utf-8")
    with pytest.raises(KeyDirectoryError, match="repeats a member name"):
        KeyDirectory.open(tmp_path / "keys", passphrase=None, now=now)
