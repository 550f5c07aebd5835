"""Times an operator gives carry a UTC offset (docs/trust-registry.md §13 "Times").

One parser (:func:`keys.timeutil.parse_time`) for every time option and operator file: ISO 8601
with ``Z`` or ``±hh:mm``, or unix seconds. A time without an offset is refused with
``TIME_OFFSET_REQUIRED`` (the partners keep China Standard Time, the gateway UTC: guessing
either is wrong half the time), anything else that is not a time with ``TIME_INVALID``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_support import one_line_error, trustgw
from test_cli_inputs import LEAVES, _flag, _options

from gateway.cli import _common
from gateway.cli import verify as cli_verify
from keys.errors import TimeInvalidError, TimeOffsetRequiredError
from keys.timeutil import TIME_FORMS, parse_time

ROOT = Path(__file__).resolve().parents[1]
MIDNIGHT_UTC = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2026-01-01T00:00:00Z", id="z"),
        pytest.param("2026-01-01T00:00:00z", id="lower-z"),
        pytest.param("2026-01-01T08:00:00+08:00", id="china-standard-time"),
        pytest.param("2025-12-31T19:00:00-05:00", id="negative-offset"),
        pytest.param("2026-01-01 08:00:00+08:00", id="space-separator"),
        pytest.param("1767225600", id="unix-seconds"),
        pytest.param(" 1767225600 ", id="surrounding-space"),
    ],
)
def test_a_time_with_an_offset_or_in_unix_seconds_is_accepted(text: str) -> None:
    assert parse_time(text) == MIDNIGHT_UTC


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2026-01-01T00:00:00", id="datetime"),
        pytest.param("2026-01-01", id="date"),
        pytest.param("2026-01-01T00:00", id="no-seconds"),
        pytest.param("2026-01-01 00:00:00", id="space-separator"),
        pytest.param("2026-01-01T00:00:00.500", id="fraction"),
    ],
)
def test_a_time_without_an_offset_is_refused_and_the_message_shows_the_accepted_forms(
    text: str,
) -> None:
    with pytest.raises(TimeOffsetRequiredError) as caught:
        parse_time(text)
    message = caught.value.message
    assert caught.value.reason == "TIME_OFFSET_REQUIRED"
    assert "+08:00" in message and "Z (UTC)" in message and "unix seconds" in message


@pytest.mark.parametrize(
    "text",
    ["", "  ", "tomorrow", "2026-13-01T00:00:00Z", "\uff12\uff10\uff12\uff16-01-01T00:00:00Z",
     "99999999999", "-1", "1767225600.5", "2026-01-01T00:00:00Z\x00", "9" * 65,
     "1999-12-31T23:59:59Z", "2200-01-01T00:00:01Z"],
)  # fmt: skip
def test_anything_else_is_time_invalid(text: str) -> None:
    with pytest.raises(TimeInvalidError) as caught:
        parse_time(text)
    assert caught.value.reason == "TIME_INVALID"
    assert not isinstance(caught.value, TimeOffsetRequiredError)


def test_the_accepted_forms_are_spelled_out_once() -> None:
    assert "+08:00" in TIME_FORMS and "Z" in TIME_FORMS and "unix seconds" in TIME_FORMS


# --- every time option of the command line ----------------------------------------------------

TIME_TYPES = (_common.time_type, cli_verify._time)
TIME_OPTIONS = [
    pytest.param(words, action.dest, id=f"{' '.join(words)} {_flag(action)}")
    for words, parser in LEAVES.items()
    for action in _options(parser)
    if action.type in TIME_TYPES
]


def test_the_time_options_are_all_found() -> None:
    found = {f"{' '.join(p.values[0])} {p.values[1]}" for p in TIME_OPTIONS}
    assert {"keys add not_before", "keys add not_after", "keys revoke at", "verify at",
            "trustlist verify at", "convert-batch at", "purge at"} <= found  # fmt: skip


@pytest.mark.parametrize(("words", "dest"), TIME_OPTIONS)
def test_every_time_option_refuses_a_time_without_an_offset(
    words: tuple[str, ...], dest: str, dev_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    action = next(a for a in _options(LEAVES[words]) if a.dest == dest)
    flag = _flag(action)
    ran = trustgw(capsys, *words, f"{flag}=2026-01-01T00:00:00", "--no-such-option")
    assert one_line_error(ran) == "TIME_OFFSET_REQUIRED" and ran.status == 2
    named = "/".join(action.option_strings)  # argparse names an option by all its spellings
    assert ran.err.startswith(f"trustgw: TIME_OFFSET_REQUIRED: {named}: '2026-01-01T00:00:00' ")
    assert "2026-01-01T00:00:00+08:00 (China Standard Time)" in ran.err


def test_keys_revoke_reads_an_offset_as_written(
    own_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from keys.crypto import Algorithm, PrivateKey

    jwk = tmp_path / "k.jwk"
    jwk.write_text(json.dumps(PrivateKey.generate(Algorithm.EDDSA).public_key().to_jwk()))
    data = str(own_data_dir)
    ran = trustgw(capsys, "keys", "add", "--data-dir", data, "--region", "110000",
                  "--public-key", str(jwk), "--kid", "K1", "--not-before", "1767225600",
                  "--not-after", "2027-01-01T08:00:00+08:00")  # fmt: skip
    assert ran.status == 0, ran.err
    ran = trustgw(capsys, "keys", "revoke", "--data-dir", data, "--region", "110000",
                  "--kid", "K1", "--at", "2026-03-11T16:00:00+08:00")  # fmt: skip
    assert ran.status == 0, ran.err
    rows = trustgw(capsys, "keys", "list", "--data-dir", data, "--json").json()
    (row,) = [r for r in rows if r["owner"] == "110000"]
    assert (row["not_before"], row["not_after"], row["revoked_at"]) == (
        "2026-01-01T00:00:00Z",
        "2027-01-01T00:00:00Z",
        "2026-03-11T08:00:00Z",
    )


def test_verify_keeps_fractional_unix_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/conformance.md: ``--at`` of ``trustgw verify`` also takes fractional unix seconds."""
    assert cli_verify._time("1687500000.5") == datetime.fromtimestamp(1687500000.5, UTC)
    with pytest.raises(TimeOffsetRequiredError):
        cli_verify._time("2023-06-23T06:00:00")


def test_a_stock_row_time_without_an_offset_is_a_bad_row() -> None:
    """docs/stock-conversion.md: issued_at / expires_at follow the same rule (BAD_TIME)."""
    from gateway.stock.rows import _time
    from keys.errors import RowError

    with pytest.raises(RowError) as caught:
        _time({"issued_at": "2026-03-01T09:00:00"}, "issued_at")
    assert caught.value.reason == "BAD_TIME" and "without a UTC offset" in str(caught.value)
    assert "09:00" not in str(caught.value)  # a bad row's message never quotes its values
    assert _time({"issued_at": "2026-03-01T09:00:00+08:00"}, "issued_at") == datetime(
        2026, 3, 1, 1, tzinfo=UTC
    )


# --- the documentation's examples ---------------------------------------------------------------

_TIME_OPTION = re.compile(
    r"--(?:not-before|not-after|at|compromised-at|revoked-at|since-time)[ =]"
    r"(\d{4}-\d{2}-\d{2}(?:[T ][0-9:.]+)?(?:Z|[+-]\d{2}:?\d{2})?)"
)


def _doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "examples").glob("*.md"))]  # fmt: skip


def test_every_time_in_the_docs_command_examples_carries_an_offset() -> None:
    """README.md, docs/*.md: every example a reader copies runs as written."""
    found = []
    for path in _doc_files():
        for match in _TIME_OPTION.finditer(path.read_text(encoding="utf-8")):
            found.append((path.name, match.group(1)))
            parse_time(match.group(1))  # raises TIME_OFFSET_REQUIRED for an offset-less one
    assert len(found) >= 4
