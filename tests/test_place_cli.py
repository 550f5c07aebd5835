"""``trustgw place``: venues added, listed, shown, disabled and re-enabled, their place codes
re-issued after a rotation and printed as QR images that decode back to the code; ``trustgw
verify --format place`` checks one offline; every refusal is one line (docs/operations.md,
"Venues and place codes")."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from cli_support import one_line_error, trustgw
from places_support import decode_png, decode_svg
from support.clock import REAL_NOW

from gateway.pki import DevCA, read_certificate

ADD = ("--name", "银座商城 泉城路店", "--division", "370102", "--category", "mall")


def add(capsys: Any, data_dir: Path, *extra: str) -> dict[str, Any]:
    ran = trustgw(capsys, "place", "add", "--data-dir", str(data_dir), *ADD, *extra, "--json")
    assert ran.status == 0, ran.err
    return ran.json()  # type: ignore[no-any-return]


def test_a_venue_is_added_with_a_signed_place_code_and_listed(
    own_data_dir: Path, capsys: Any
) -> None:
    d = str(own_data_dir)
    venue = add(capsys, own_data_dir, "--address", "泉城路1号")
    assert venue["id"].startswith("PL") and len(venue["id"]) == 18
    assert (venue["name"], venue["division"], venue["category"], venue["address"]) == (
        "银座商城 泉城路店", "370102", "mall", "泉城路1号",
    )  # fmt: skip
    assert venue["enabled"] is True and venue["place_code"].startswith("SDP1:")
    keys = trustgw(capsys, "keys", "list", "--data-dir", d, "--json").json()
    place_keys = [k["kid"] for k in keys if k.get("role") == "place"]
    assert venue["kid"] in place_keys
    other = add(capsys, own_data_dir)
    listed = trustgw(capsys, "place", "list", "--data-dir", d, "--json").json()
    assert sorted(v["id"] for v in listed) == sorted([venue["id"], other["id"]])
    shown = trustgw(capsys, "place", "show", venue["id"], "--data-dir", d, "--json").json()
    assert shown == venue
    text = trustgw(capsys, "place", "list", "--data-dir", d)
    assert venue["id"] in text.out and "银座商城 泉城路店" in text.out


def test_a_disabled_venue_is_listed_only_with_all_and_can_be_enabled_again(
    own_data_dir: Path, capsys: Any
) -> None:
    d = str(own_data_dir)
    venue = add(capsys, own_data_dir)
    off = trustgw(capsys, "place", "disable", venue["id"], "--data-dir", d, "--json").json()
    assert off["enabled"] is False and off["disabled_at"]
    assert trustgw(capsys, "place", "list", "--data-dir", d, "--json").json() == []
    listed = trustgw(capsys, "place", "list", "--all", "--data-dir", d, "--json").json()
    assert [v["id"] for v in listed] == [venue["id"]]
    on = trustgw(capsys, "place", "enable", venue["id"], "--data-dir", d, "--json").json()
    assert on["enabled"] is True and on["disabled_at"] is None
    audit = trustgw(capsys, "audit", "show", "--data-dir", d, "--limit", "1000", "--json")
    assert audit.status == 0, audit.err
    entries = audit.json()["entries"]
    actions = [e["action"] for e in entries if e["action"].startswith("venue.")]
    assert actions == ["venue.add", "venue.disable", "venue.enable"]


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_the_qr_image_decodes_back_to_the_place_code(
    own_data_dir: Path, tmp_path: Path, capsys: Any, fmt: str
) -> None:
    venue = add(capsys, own_data_dir)
    out = tmp_path / f"venue.{fmt}"
    ran = trustgw(capsys, "place", "qr", venue["id"], "--data-dir", str(own_data_dir),
                  "--out", str(out))  # fmt: skip
    assert ran.status == 0, ran.err
    decode = decode_png if fmt == "png" else decode_svg
    assert decode(out.read_bytes()) == [venue["place_code"]]
    assert out.stat().st_mode & 0o777 == 0o644  # a place code is public
    named = tmp_path / "image.bin"
    ran = trustgw(capsys, "place", "qr", venue["id"], "--data-dir", str(own_data_dir),
                  "--out", str(named), "--format", fmt)  # fmt: skip
    assert ran.status == 0, ran.err
    assert decode(named.read_bytes()) == [venue["place_code"]]


def test_a_place_code_verifies_offline_with_the_exported_keys(
    own_data_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    d = str(own_data_dir)
    venue = add(capsys, own_data_dir)
    trust = tmp_path / "trust.json"
    assert trustgw(capsys, "keys", "export", "--data-dir", d, "--out", str(trust)).status == 0
    ran = trustgw(capsys, "verify", "--format", "place", "--trust", str(trust),
                  venue["place_code"], "--json")  # fmt: skip
    assert ran.status == 0, ran.err
    result = ran.json()
    assert (result["verdict"], result["claims"]["venue"]) == ("accept", venue["id"])
    tampered = venue["place_code"].replace("SDP1:ey", "SDP1:ez", 1)
    ran = trustgw(capsys, "verify", "--format", "place", "--trust", str(trust), tampered, "--json")
    assert ran.status == 1 and ran.json()["verdict"] == "reject"


def test_a_code_is_reissued_with_the_place_key_of_a_rotation(
    own_data_dir: Path, capsys: Any
) -> None:
    d = str(own_data_dir)
    venue = add(capsys, own_data_dir)
    rotated = trustgw(capsys, "keys", "rotate", "--data-dir", d, "--role", "place",
                      "--activate-in", "0s", "--json")  # fmt: skip
    assert rotated.status == 0, rotated.err
    again = trustgw(capsys, "place", "reissue", venue["id"], "--data-dir", d, "--json").json()
    assert again["kid"] != venue["kid"] and again["place_code"] != venue["place_code"]
    assert again["id"] == venue["id"]


@pytest.mark.parametrize(
    ("argv", "reason", "status"),
    [
        pytest.param(("add", "--name", "x", "--division", "370100", "--category", "mall"),
                     "USAGE", 2, id="a-city-not-a-district"),
        pytest.param(("add", "--name", "x", "--division", "110101", "--category", "mall"),
                     "USAGE", 2, id="another-province"),
        pytest.param(("add", "--name", "x", "--division", "370102", "--category", "casino"),
                     "USAGE", 2, id="unknown-category"),
        pytest.param(("add", "--name", " ", "--division", "370102", "--category", "mall"),
                     "USAGE", 2, id="empty-name"),
        pytest.param(("add", "--name", "x" * 101, "--division", "370102", "--category", "mall"),
                     "USAGE", 2, id="name-too-long"),
        pytest.param(("add", "--name", "a\x1bb", "--division", "370102", "--category", "mall"),
                     "USAGE", 2, id="control-character"),
        pytest.param(("show", "PL0000000000000000"), "NOT_FOUND", 1, id="unknown-venue"),
        pytest.param(("disable", "PL0000000000000000"), "NOT_FOUND", 1, id="disable-unknown"),
        pytest.param(("show", "venue-1"), "USAGE", 2, id="not-a-venue-id"),
        pytest.param(("qr", "PL0000000000000000", "--out", "x.gif"), "USAGE", 2,
                     id="unknown-image-format"),
    ],
)  # fmt: skip
def test_a_refused_place_command_is_one_line(
    dev_data_dir: Path, capsys: Any, argv: tuple[str, ...], reason: str, status: int
) -> None:
    ran = trustgw(capsys, "place", *argv, "--data-dir", str(dev_data_dir))
    assert (one_line_error(ran), ran.status) == (reason, status)


def test_a_tracer_certificate_is_issued_with_its_role(tmp_path: Path, capsys: Any) -> None:
    ca = DevCA.create(tmp_path / "pki", REAL_NOW)
    ran = trustgw(capsys, "pki", "issue", "--data-dir", str(tmp_path), "--role", "tracer",
                  "--name", "cdc-jinan", "--json")  # fmt: skip
    assert ran.status == 0, ran.err
    info = read_certificate(Path(ran.json()["cert"]))
    assert (info.role, info.uri) == ("tracer", "trustgw://tracer/cdc-jinan")
    assert ca.cert_path.exists()


def test_purge_deletes_visits_past_their_retention(own_data_dir: Path, capsys: Any) -> None:
    ran = trustgw(capsys, "purge", "--data-dir", str(own_data_dir), "--dry-run", "--json")
    assert ran.status == 0, ran.err
    assert ran.json()["visits"] == 0 and "visits" in ran.json()["cutoffs"]
    kept = trustgw(capsys, "purge", "--data-dir", str(own_data_dir), "--visits-days", "keep",
                   "--json")  # fmt: skip
    assert "visits" not in kept.json()["cutoffs"]


def _block(info: str) -> list[str]:
    """The command lines of docs/operations.md's fenced blocks whose info string is ``info``."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    fence = re.compile(rf"^```{re.escape(info)}\n(.*?)^```\n", re.DOTALL | re.MULTILINE)
    return [line.strip() for block in fence.findall(text) for line in block.splitlines()]


def test_the_venues_section_runs_as_written(
    own_data_dir: Path, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/operations.md "Venues and place codes": the ``sh places`` block, in order, with the
    data directory, the venue id ``add`` printed and its place code filled in."""
    monkeypatch.chdir(tmp_path)
    lines = _block("sh places")
    assert [shlex.split(line)[1:3] for line in lines][:2] == [["place", "add"], ["place", "list"]]
    venue: dict[str, Any] = {}
    outputs = []
    for line in lines:
        line = line.replace("/var/lib/trustgw", str(own_data_dir))
        line = line.replace("VENUE_ID", venue.get("id", "VENUE_ID"))
        argv = shlex.split(line.replace("CODE", venue.get("place_code", "CODE")))
        ran = trustgw(capsys, *argv[1:], *(["--json"] if argv[1:3] == ["place", "add"] else []))
        assert ran.status == 0, f"{line}\n{ran.out}{ran.err}"
        if argv[1:3] == ["place", "add"]:
            venue = ran.json()
        outputs.append(ran.out)
    assert decode_png((tmp_path / "venue.png").read_bytes()) == [venue["place_code"]]
    assert decode_svg((tmp_path / "venue.svg").read_bytes()) == [venue["place_code"]]
    assert any(out.startswith("accept: OK") for out in outputs)
    listed = json.loads(outputs[-1])
    assert [(v["id"], v["enabled"]) for v in listed] == [(venue["id"], True)]


def test_a_keyring_from_before_place_codes_gets_its_place_key_by_a_rotation(
    own_data_dir: Path, capsys: Any
) -> None:
    """docs/operations.md "Venues and place codes": a keyring made before place codes existed
    has no place key; ``place add`` says how to add one, and after that rotation it signs."""
    import sqlite3

    d = str(own_data_dir)
    with sqlite3.connect(own_data_dir / "trustgw.db") as conn:  # as the keyring of schema 7 was
        conn.execute("DELETE FROM gateway_keyring WHERE role = 'place'")
    ran = trustgw(capsys, "place", "add", "--data-dir", d, *ADD)
    assert (one_line_error(ran), ran.status) == ("CONFIGURATION", 1)
    assert "trustgw keys rotate --role place --activate-in 0s" in ran.err
    rotated = trustgw(capsys, "keys", "rotate", "--data-dir", d, "--role", "place",
                      "--activate-in", "0s")  # fmt: skip
    assert rotated.status == 0, rotated.err
    assert add(capsys, own_data_dir)["place_code"].startswith("SDP1:")
