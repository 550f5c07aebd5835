"""The one region-code rule (keys/regioncode.py): six ASCII digits, wherever a region code enters.

``str.isdigit()`` accepts digits of other scripts; each place that took a region code with it
refuses them now, and still takes every real code.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

import pytest

from keys.errors import MalformedError
from keys.jsonutil import canonical_json
from keys.model import Mode, Region
from keys.regioncode import check_region_code, is_region_code
from keys.statements import KeyRevocation

ARABIC_INDIC = "\u0661\u0661\u0660\u0660\u0660\u0660"  # 110000 in Arabic-Indic digits
FULLWIDTH = "\uff11\uff11\uff10\uff10\uff10\uff10"
SUPERSCRIPT = "\u00b9\u00b9\u2070\u2070\u2070\u2070"
NOT_CODES = [
    pytest.param(ARABIC_INDIC, id="arabic-indic-digits"),
    pytest.param(FULLWIDTH, id="fullwidth-digits"),
    pytest.param(SUPERSCRIPT, id="superscript-digits"),
    pytest.param("11000", id="five-digits"),
    pytest.param("1100000", id="seven-digits"),
    pytest.param("11000a", id="a-letter"),
    pytest.param("110000\n", id="trailing-newline"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("value", NOT_CODES)
def test_only_six_ascii_digits_are_a_region_code(value: str) -> None:
    assert not is_region_code(value)
    with pytest.raises(MalformedError, match="6-digit division code"):
        check_region_code(value)


def test_isdigit_would_have_taken_other_scripts_digits() -> None:
    # Why the rule is a regular expression and not str.isdigit().
    assert all(v.isdigit() and len(v) == 6 for v in (ARABIC_INDIC, FULLWIDTH, SUPERSCRIPT))


@pytest.mark.parametrize("value", ["110000", "370000", "650000", "000000"])
def test_real_codes_are_region_codes(value: str) -> None:
    assert is_region_code(value)
    assert check_region_code(value) == value


@pytest.mark.parametrize("value", [110000, None, b"110000"], ids=["int", "none", "bytes"])
def test_a_region_code_is_text(value: object) -> None:
    assert not is_region_code(value)
    with pytest.raises(MalformedError):
        check_region_code(value)


@pytest.mark.parametrize("value", [ARABIC_INDIC, FULLWIDTH], ids=["arabic-indic", "fullwidth"])
def test_a_region_row_refuses_other_scripts_digits(value: str) -> None:
    with pytest.raises(ValueError):
        Region(value, "x", Mode.SHOW, timedelta(days=1))


@pytest.mark.parametrize("value", [ARABIC_INDIC, FULLWIDTH], ids=["arabic-indic", "fullwidth"])
def test_a_statement_naming_a_region_in_other_digits_is_malformed(value: str) -> None:
    data = canonical_json(
        {
            "type": "trustgw/key-revocation/v1",
            "region": value,
            "kid": "K1",
            "compromised_at": 1700000000,
        }
    )
    with pytest.raises(MalformedError, match="member 'region'"):
        KeyRevocation.from_signed(data)


def test_the_cli_region_argument_refuses_other_scripts_digits() -> None:
    from gateway.cli._store import region_arg

    assert region_arg("110000") == "110000"
    with pytest.raises(argparse.ArgumentTypeError):
        region_arg(ARABIC_INDIC)


def test_a_partner_certificate_naming_a_region_in_other_digits_is_no_peer() -> None:
    from gateway.pki import Peer

    assert Peer.from_uri("trustgw://partner/110000") is not None
    assert Peer.from_uri(f"trustgw://partner/{ARABIC_INDIC}") is None


def test_a_stock_row_city_in_other_digits_is_refused() -> None:
    from gateway.stock.converter import _CITY

    assert _CITY.fullmatch("370100")
    assert not _CITY.fullmatch("37\u0661\u0660\u0660\u0660")
