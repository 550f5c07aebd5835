"""Programming errors stay apart from bad input (HOUSE.md "errors at the edges").

A decoder's ``try`` guards the call that parses foreign bytes, not the construction of a library
object or our own code: a bug is logged (type and line, never the message, which may quote the
input) before the shared entry points report it as ``MALFORMED``, and a trust-file loader lets it
through instead of calling the file unusable.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from adapters import ADAPTERS
from adapters.base import RegionAdapter
from adapters.credentials import hc1, region, step
from adapters.simulator import InMemoryKeys
from keys.errors import MalformedError

# Also runs with every dependency at its floor (.ci/lowest-versions).
pytestmark = pytest.mark.lowest

ID_NUMBER = "110101199003070011"


class _BuggyCodec:
    family = "compact"

    def open(self, text: str) -> Any:
        raise KeyError(ID_NUMBER)  # a bug that happens to quote the input

    def claims(self, payload: bytes) -> Any:
        raise AssertionError("not reached")

    def seal(self, claims: Any, key: Any, kid: str) -> str:
        raise AssertionError("not reached")


def test_a_region_decoder_bug_is_logged_then_reported_as_malformed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = dataclasses.replace(ADAPTERS["110000"].spec, codec=_BuggyCodec())
    with caplog.at_level(logging.ERROR, "trustgw.adapters"):
        with pytest.raises(MalformedError, match=r"could not be decoded \(KeyError\)"):
            RegionAdapter(spec).decode("BJ1:x", InMemoryKeys.of([]), lambda r, h: "h1-x")
    (record,) = [r for r in caplog.records if r.name == "trustgw.adapters"]
    assert "decoder bug in region 110000: KeyError at" in record.getMessage()
    assert "test_decoder_errors.py" in record.getMessage()
    assert ID_NUMBER not in caplog.text


def test_a_credential_step_bug_is_logged_then_reported_as_malformed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, "trustgw.adapters"):
        with pytest.raises(MalformedError, match=r"^DECODE: .*\(KeyError\)"):
            with step("DECODE"):
                raise KeyError(ID_NUMBER)
    assert "decoder bug in step DECODE: KeyError" in caplog.text
    assert ID_NUMBER not in caplog.text


def test_bad_input_is_not_logged_as_a_bug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, "trustgw.adapters"):
        with pytest.raises(MalformedError):
            ADAPTERS["110000"].decode("BJ1:not base45!", InMemoryKeys.of([]), lambda r, h: "h1")
    assert caplog.records == []


def _bug(*_: Any) -> Any:
    raise RuntimeError("a bug, not a bad file")


@pytest.mark.parametrize(
    ("module", "loader", "load"),
    [
        pytest.param(hc1, "_load_signers", lambda: hc1.DccTrust.from_bytes(b"x"), id="hc1"),
        pytest.param(
            region, "_load", lambda: region.PartnerKeys.from_bytes("110000", b"x"), id="region"
        ),
    ],
)
def test_trust_file_loaders_do_not_hide_bugs_as_unusable_files(
    monkeypatch: pytest.MonkeyPatch, module: Any, loader: str, load: Any
) -> None:
    monkeypatch.setattr(module, loader, _bug)
    with pytest.raises(RuntimeError, match="a bug"):
        load()
